//! The float side of every kernel: a block of float32, bfloat16, float16 or
//! float64 elements loaded and widened (exactly) to its compute type, and
//! compute-type values narrowed and stored (docs/semantics.md, Types).

const std = @import("std");
const simd = @import("simd.zig");
const DType = @import("types.zig").DType;

const block = simd.block;
const Vec = simd.Vec;

/// The block of `n` elements at element i (n: a block, or 1 for scalar code).
pub fn load(comptime S: DType, comptime n: usize, src: [*]const u8, i: usize) @Vector(n, S.Compute()) {
    switch (S) {
        .f32, .f64 => {
            const p: [*]align(1) const S.Compute() = @ptrCast(src);
            return p[i..][0..n].*;
        },
        .bf16 => {
            const p: [*]align(1) const u16 = @ptrCast(src);
            const h: @Vector(n, u16) = p[i..][0..n].*;
            return @bitCast(@as(@Vector(n, u32), h) << @splat(16));
        },
        .f16 => {
            const p: [*]align(1) const u16 = @ptrCast(src);
            const h: @Vector(n, u16) = p[i..][0..n].*;
            if (n == 1) return @floatCast(@as(@Vector(1, f16), @bitCast(h))); // scalar code: no vector helper
            return simd.f16ToF32(h);
        },
        else => @compileError("not a float type"),
    }
}

pub fn loadFloats(comptime S: DType, src: [*]const u8, i: usize) Vec(S.Compute()) {
    return load(S, block, src, i);
}

pub fn storeFloats(comptime D: DType, dst: [*]u8, i: usize, x: Vec(D.Compute())) void {
    store(D, .possible, dst, i, x);
}

/// storeFloats for x that holds no NaN, such as an integer times a finite
/// scale: bfloat16 then skips its NaN test (4 of 24 vector operations per
/// 32 elements on AVX-512).
pub fn storeNumbers(comptime D: DType, dst: [*]u8, i: usize, x: Vec(D.Compute())) void {
    store(D, .impossible, dst, i, x);
}

const Nan = enum { possible, impossible };

fn store(comptime D: DType, comptime nan: Nan, dst: [*]u8, i: usize, x: Vec(D.Compute())) void {
    switch (D) {
        .f32, .f64 => {
            const p: [*]align(1) D.Compute() = @ptrCast(dst);
            p[i..][0..block].* = x;
        },
        .bf16 => {
            const p: [*]align(1) u16 = @ptrCast(dst);
            p[i..][0..block].* = toBf16(block, nan, x);
        },
        .f16 => {
            const p: [*]align(1) u16 = @ptrCast(dst);
            p[i..][0..block].* = simd.f32ToF16(x);
        },
        else => @compileError("not a float type"),
    }
}

/// Round to nearest bfloat16, ties to even; NaN keeps its sign and top
/// payload bits and is made quiet.
fn toBf16(comptime n: usize, comptime nan: Nan, x: @Vector(n, f32)) @Vector(n, u16) {
    const U = @Vector(n, u32);
    const b: U = @bitCast(x);
    // Wrapping: only NaN bit patterns (replaced below) can carry past 2^32.
    const rounded = b +% @as(U, @splat(0x7FFF)) +% ((b >> @splat(16)) & @as(U, @splat(1)));
    if (nan == .impossible) return simd.highHalves(n, rounded);
    const quiet = b | @as(U, @splat(0x40_0000));
    return simd.highHalves(n, @select(u32, x != x, quiet, rounded));
}

test "bf16 rounding ties to even" {
    try std.testing.expectEqual(@as(u16, 0x3F80), toBf16(4, .possible, @splat(@as(f32, @bitCast(@as(u32, 0x3F80_8000)))))[0]);
    try std.testing.expectEqual(@as(u16, 0x3F82), toBf16(4, .possible, @splat(@as(f32, @bitCast(@as(u32, 0x3F81_8000)))))[0]);
}

test "scalar and block loads agree" {
    var bits: [block]u16 = undefined;
    for (&bits, 0..) |*b, k| b.* = @intCast(0x3C00 + 97 * k);
    const v = loadFloats(.f16, @ptrCast(&bits), 0);
    for (0..block) |k| try std.testing.expectEqual(v[k], load(.f16, 1, @ptrCast(&bits), k)[0]);
}

test "storeNumbers stores finite values as storeFloats does" {
    const special = [_]u32{ 0x3F80_8000, 0x3F81_8000, 0x7F7F_FFFF, 0x7F80_0000, 0xFF80_0000, 0x8000_0000, 0x0000_0001, 0x807F_FFFF, 0x4B7F_7FFF };
    var x: Vec(f32) = std.simd.iota(f32, block) * @as(Vec(f32), @splat(-1.0039062));
    for (special[0..@min(special.len, block)], 0..) |bits, k| x[k] = @bitCast(bits); // the narrowest blocks hold 8
    var a: [block]u16 = undefined;
    var b: [block]u16 = undefined;
    storeFloats(.bf16, @ptrCast(&a), 0, x);
    storeNumbers(.bf16, @ptrCast(&b), 0, x);
    try std.testing.expectEqualSlices(u16, &a, &b);
}
