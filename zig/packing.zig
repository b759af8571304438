//! The quantized side of the integer formats: a block of elements loaded
//! into integer lanes and stored back, the 2- and 4-bit types packed
//! several to a byte, first element in the lowest bits (torch.quint4x2 /
//! quint2x4's layout; docs/semantics.md, Types).

const std = @import("std");
const simd = @import("simd.zig");
const DType = @import("types.zig").DType;

const block = simd.block;
const Vec = simd.Vec;

/// Lanes of quantized values between load/store and arithmetic.
pub fn Lane(comptime Q: DType) type {
    return if (Q.bits() <= 16) i32 else Q.Storage();
}

pub fn store(comptime Q: DType, dst: [*]u8, i: usize, q: Vec(Lane(Q))) void {
    if (comptime Q.bits() < 8) {
        // Gathering and combining at 32-bit width keeps the shuffles to ones
        // every target has (vpermt2d with AVX-512F; no byte permutes needed).
        const per = comptime Q.perByte();
        const b = comptime Q.bits();
        const n = block / per;
        const fields = @as(Vec(u32), @bitCast(q)) & @as(Vec(u32), @splat((1 << b) - 1));
        const parts = std.simd.deinterlace(per, fields); // parts[k][j]: element j·per + k
        var packed_words: @Vector(n, u32) = @splat(0);
        inline for (0..per) |k| packed_words |= parts[k] << @splat(b * k);
        dst[i / per ..][0..n].* = @as(@Vector(n, u8), @truncate(packed_words));
        return;
    }
    const T = Q.Storage();
    const p: [*]align(1) T = @ptrCast(dst);
    p[i..][0..block].* = if (T == u8 or T == i8) simd.narrowBytes(T, q) else @as(Vec(T), @intCast(q));
}

pub fn load(comptime Q: DType, src: [*]const u8, i: usize) Vec(Lane(Q)) {
    if (comptime Q.bits() < 8) {
        const per = comptime Q.perByte();
        const b = comptime Q.bits();
        const n = block / per;
        const bytes: @Vector(n, u8) = src[i / per ..][0..n].*;
        const words: @Vector(n, i32) = @as(@Vector(n, u8), bytes); // widen first: see store
        var fields: [per]@Vector(n, i32) = undefined;
        inline for (0..per) |k| {
            if (comptime Q.isSigned()) {
                // Move the field to the top of the word, shift back arithmetically.
                fields[k] = (words << @splat(32 - b * (k + 1))) >> @splat(32 - b);
            } else {
                fields[k] = (words >> @splat(b * k)) & @as(@Vector(n, i32), @splat((1 << b) - 1));
            }
        }
        return std.simd.interlace(fields);
    }
    const T = Q.Storage();
    const p: [*]align(1) const T = @ptrCast(src);
    const v: Vec(T) = p[i..][0..block].*;
    return v;
}

const testing = std.testing;

test "packing round trips" {
    inline for (.{ DType.int4, DType.uint4, DType.int2, DType.uint2 }) |Q| {
        var buf: [block]u8 = undefined;
        var q: Vec(i32) = undefined;
        const range: i32 = @intCast(Q.qmax() - Q.qmin() + 1);
        for (0..block) |k| q[k] = @as(i32, @intCast(Q.qmin())) + @mod(@as(i32, @intCast(k)), range);
        store(Q, &buf, 0, q);
        try testing.expectEqual(q, load(Q, &buf, 0));
    }
    var buf: [block]u8 = undefined;
    var q: Vec(i32) = @splat(0);
    q[0] = -2;
    q[1] = 1;
    q[3] = -1;
    store(.int2, &buf, 0, q);
    try testing.expectEqual(@as(u8, 0b11_00_01_10), buf[0]);
}
