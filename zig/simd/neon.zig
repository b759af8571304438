//! AArch64 Neon instruction helpers (simd.zig): frintn and frintm rounding,
//! fcvtl/fcvtn float16 conversions. AArch64 has no non-temporal store of a
//! register that helps here: regular stores.

const llvm = @import("llvm.zig");
const soft = @import("soft.zig");

pub const register_bytes = 16;

pub fn roundEven(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    return llvm.roundEven(register_bytes, n, C, y);
}

pub fn floor(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    return @floor(y);
}

pub fn f16ToF32(comptime n: usize, h: @Vector(n, u16)) @Vector(n, f32) {
    return @floatCast(@as(@Vector(n, f16), @bitCast(h)));
}

pub fn f32ToF16(comptime n: usize, x: @Vector(n, f32)) @Vector(n, u16) {
    return @bitCast(@as(@Vector(n, f16), @floatCast(x)));
}

pub const storeNonTemporal = soft.storeNonTemporal;
pub const fenceNonTemporal = soft.fenceNonTemporal;
