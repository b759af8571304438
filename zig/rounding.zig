//! Rounding a block of compute-type values to integer-valued floats: half
//! to even, or stochastically with the counter-based generator of
//! docs/semantics.md (SplitMix64 keys, lowbias32 of the element's index).

const std = @import("std");
const simd = @import("simd.zig");
const RoundMode = @import("types.zig").RoundMode;

const block = simd.block;
const Vec = simd.Vec;

/// SplitMix64's output function: spreads a seed over all 64 bits.
pub fn splitmix64(seed: u64) u64 {
    var z = seed +% 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)) *% 0xBF58_476D_1CE4_E5B9;
    z = (z ^ (z >> 27)) *% 0x94D0_49BB_1331_11EB;
    return z ^ (z >> 31);
}

/// lowbias32 (Chris Wellons' hash-prospector): a bijective 32-bit mix.
pub fn lowbias32(comptime n: comptime_int, v: @Vector(n, u32)) @Vector(n, u32) {
    var x = v;
    x ^= x >> @splat(16);
    x *%= @splat(0x7feb352d);
    x ^= x >> @splat(15);
    x *%= @splat(0x846ca68b);
    x ^= x >> @splat(16);
    return x;
}

/// Golden-ratio multiplier: spreads consecutive indices before the hash,
/// which a single lowbias32 round on a counter needs (alone it fails
/// chi-square tests of pairs of neighbours).
const weyl: u32 = 0x9E37_79B1;

/// The uniform u in [0, 1) of stochastic rounding for elements i .. i+block
/// (docs/semantics.md): lowbias32 of the index's low half times `weyl`, keyed
/// by a word from SplitMix64(seed) and the index's high half. `i` is a
/// multiple of the block, so the high half and the key are the same in every
/// lane, and (i + lane)·weyl = i·weyl + lane·weyl needs one scalar multiply.
fn uniforms(comptime C: type, key: u64, i: usize) Vec(C) {
    const lanes_weyl = comptime std.simd.iota(u32, block) *% @as(Vec(u32), @splat(weyl));
    const spread = @as(Vec(u32), @splat(@as(u32, @truncate(i)) *% weyl)) +% lanes_weyl;
    const hi: u32 = @truncate(@as(u64, i) >> 32);
    const k = @as(u32, @truncate(key)) ^ lowbias32(1, .{hi ^ @as(u32, @truncate(key >> 32))})[0];
    const h = lowbias32(block, spread ^ @as(Vec(u32), @splat(k)));
    if (C == f32) return @as(Vec(f32), @floatFromInt(@as(Vec(i32), @bitCast(h >> @splat(8))))) * @as(Vec(f32), @splat(0x1p-24));
    return @as(Vec(f64), @floatFromInt(h)) * @as(Vec(f64), @splat(0x1p-32));
}

/// y rounded to an integer-valued float: half to even, or stochastically
/// (up with probability frac(y), the comparison u < y - floor(y)); `key` is
/// splitmix64(seed), `i` the index of the block's first element in the call.
pub fn round(comptime C: type, comptime mode: RoundMode, y: Vec(C), key: u64, i: usize) Vec(C) {
    switch (mode) {
        .nearest => return simd.roundEven(C, y),
        .stochastic => {
            const fl = simd.floor(C, y);
            return fl + @select(C, uniforms(C, key, i) < y - fl, @as(Vec(C), @splat(1)), @as(Vec(C), @splat(0)));
        },
        else => @compileError("unknown round mode"),
    }
}

const testing = std.testing;

test "lowbias32 known value" {
    // From the hash-prospector reference implementation.
    try testing.expectEqual(@as(u32, 0), lowbias32(1, .{0})[0]);
    try testing.expect(lowbias32(1, .{1})[0] != 1);
}

test "stochastic uniforms: vector lanes follow the scalar formula, high index bits count" {
    const key = splitmix64(12345);
    const i: usize = (5 << 32) + 64;
    const u = uniforms(f32, key, i);
    for (0..block) |lane| {
        const idx: u64 = i + lane;
        const k = @as(u32, @truncate(key)) ^ lowbias32(1, .{@as(u32, @truncate(idx >> 32)) ^ @as(u32, @truncate(key >> 32))})[0];
        const h = lowbias32(1, .{(@as(u32, @truncate(idx)) *% weyl) ^ k})[0];
        try testing.expectEqual(@as(f32, @floatFromInt(h >> 8)) * 0x1p-24, u[lane]);
    }
    try testing.expect(uniforms(f32, key, 64)[0] != u[0]);
}

test "stochastic rounding stays between floor and ceiling" {
    const y: Vec(f32) = @splat(2.25);
    const r = round(f32, .stochastic, y, splitmix64(7), 0);
    for (0..block) |k| try testing.expect(r[k] == 2 or r[k] == 3);
    try testing.expectEqual(@as(f32, 2), round(f32, .nearest, @splat(2.5), 0, 0)[0]);
}
