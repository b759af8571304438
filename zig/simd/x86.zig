//! x86-64 instruction helpers (simd.zig): SSE4.1 and AVX-512 rounding,
//! F16C conversions, movntdq/vmovntdq stores. A level without an
//! instruction (baseline x86-64 has neither rounding nor F16C) gets the
//! portable helper.

const builtin = @import("builtin");
const llvm = @import("llvm.zig");
const soft = @import("soft.zig");

const has_sse4_1 = builtin.cpu.has(.x86, .sse4_1);
const has_f16c = builtin.cpu.has(.x86, .f16c);
const has_avx = builtin.cpu.has(.x86, .avx);

pub const register_bytes = if (builtin.cpu.has(.x86, .avx512f)) 64 else if (builtin.cpu.has(.x86, .avx2)) 32 else 16;

pub fn roundEven(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    if (!has_sse4_1) return soft.roundEven(n, C, y);
    return llvm.roundEven(register_bytes, n, C, y);
}

/// One instruction with SSE4.1; without it LLVM would call floorf per lane.
pub fn floor(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    if (!has_sse4_1) return soft.floor(n, C, y);
    return @floor(y);
}

pub fn f16ToF32(comptime n: usize, h: @Vector(n, u16)) @Vector(n, f32) {
    if (!has_f16c) return soft.f16ToF32(n, h);
    return @floatCast(@as(@Vector(n, f16), @bitCast(h)));
}

pub fn f32ToF16(comptime n: usize, x: @Vector(n, f32)) @Vector(n, u16) {
    if (!has_f16c) return soft.f32ToF16(n, x);
    return @bitCast(@as(@Vector(n, f16), @floatCast(x)));
}

/// movntdq, in its VEX form under AVX (mixing legacy SSE and AVX
/// encodings costs a state transition).
pub fn storeNonTemporal(dst: usize, v: @Vector(16, u8)) void {
    if (has_avx) asm volatile ("vmovntdq %[v], (%[p])"
        :
        : [v] "x" (v),
          [p] "r" (dst),
        : .{ .memory = true }) else asm volatile ("movntdq %[v], (%[p])"
        :
        : [v] "x" (v),
          [p] "r" (dst),
        : .{ .memory = true });
}

pub fn fenceNonTemporal() void {
    asm volatile ("sfence" ::: .{ .memory = true });
}
