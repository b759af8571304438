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

extern fn @"llvm.x86.sse2.packssdw.128"(@Vector(4, i32), @Vector(4, i32)) @Vector(8, i16);
extern fn @"llvm.x86.avx2.packssdw"(@Vector(8, i32), @Vector(8, i32)) @Vector(16, i16);
extern fn @"llvm.x86.sse2.packuswb.128"(@Vector(8, i16), @Vector(8, i16)) @Vector(16, u8);
extern fn @"llvm.x86.sse2.packsswb.128"(@Vector(8, i16), @Vector(8, i16)) @Vector(16, i8);

/// Saturating packs (i32 → i16 → byte), exact for lanes that fit T: LLVM
/// lowers a truncation to the same packs after masking every lane first.
/// AVX-512 has a one-instruction truncation (vpmovdb), which LLVM uses.
pub fn narrowBytes(comptime n: usize, comptime T: type, v: @Vector(n, i32)) @Vector(n, T) {
    const a: [n]i32 = v;
    const bytes = switch (register_bytes) {
        16 => blk: {
            if (n != 8) return @intCast(v);
            const w = @"llvm.x86.sse2.packssdw.128"(a[0..4].*, a[4..8].*);
            break :blk packBytes(T, w, w);
        },
        32 => blk: {
            if (n != 16) return @intCast(v);
            // Per 128-bit lane: [a0..3 b0..3 | a4..7 b4..7], a and b the halves of v.
            const w = @"llvm.x86.avx2.packssdw"(a[0..8].*, a[8..16].*);
            const lanes: [2][8]i16 = @bitCast(w);
            const b: @Vector(4, u32) = @bitCast(packBytes(T, lanes[0], lanes[1])); // a0..3 b0..3 a4..7 b4..7
            break :blk @as(@Vector(16, T), @bitCast(@shuffle(u32, b, undefined, @Vector(4, i32){ 0, 2, 1, 3 })));
        },
        else => return @intCast(v),
    };
    return @as([16]T, bytes)[0..n].*;
}

fn packBytes(comptime T: type, lo: @Vector(8, i16), hi: @Vector(8, i16)) @Vector(16, T) {
    return @bitCast(if (T == u8) @"llvm.x86.sse2.packuswb.128"(lo, hi) else @"llvm.x86.sse2.packsswb.128"(lo, hi));
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
