//! Rounding a block of compute-type values to integer-valued floats: half
//! to even, or stochastically with the counter-based generator of
//! docs/semantics.md (SplitMix64 keys, lowbias32 of a counter: one hash per
//! two float32 elements, one per float64 element).

const std = @import("std");
const builtin = @import("builtin");
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
    return afterShift(n, v ^ (v >> @splat(16)));
}

/// lowbias32 from its first multiply on: a keyed hash folds the key into
/// the first xor-shift, (s ^ K) ^ ((s ^ K) >> 16) = s ^ (s >> 16) ^ fold(K),
/// one three-way xor instead of two.
fn afterShift(comptime n: comptime_int, v: @Vector(n, u32)) @Vector(n, u32) {
    var x = v;
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

/// The key of a call: SplitMix64(seed), and the word K(j) it gives with the
/// counters' high half, kept for the last high half seen (it changes every
/// 2^32 counters, so the hash of it leaves the per-block work).
pub const Key = struct {
    k: u64,
    hi: u32 = 0,
    /// fold(K(j)), in every lane: a block loop then keeps it in a register
    /// instead of broadcasting it each block.
    word: @Vector(block, u32),

    pub fn init(seed: u64) Key {
        const k = splitmix64(seed);
        return .{ .k = k, .word = @splat(fold(keyWord(k, 0))) };
    }

    fn at(self: *Key, comptime n: comptime_int, hi: u32) @Vector(n, u32) {
        if (hi != self.hi) {
            self.hi = hi;
            self.word = @splat(fold(keyWord(self.k, hi)));
        }
        return @as([block]u32, self.word)[0..n].*;
    }
};

/// K(j) = lo32(k) ^ lowbias32(hi32(j) ^ hi32(k)).
fn keyWord(k: u64, hi: u32) u32 {
    return @as(u32, @truncate(k)) ^ lowbias32(1, .{hi ^ @as(u32, @truncate(k >> 32))})[0];
}

/// The key's part of the first xor-shift of lowbias32 (`afterShift`).
fn fold(k: u32) u32 {
    return k ^ (k >> 16);
}

/// h(j) for counters j .. j+n (docs/semantics.md): lowbias32 of the
/// counter's low half times `weyl`, keyed by K(j). The counters share
/// their high half (a block's do: rounding ranges within 2^32 elements, or
/// blocks at multiples of n), so K is the same in every lane, and
/// (j + lane)·weyl = j·weyl + lane·weyl needs one scalar multiply.
fn hashes(comptime n: comptime_int, comptime order: @Vector(n, u32), key: *Key, j: u64) @Vector(n, u32) {
    const lanes_weyl = comptime order *% @as(@Vector(n, u32), @splat(weyl));
    const spread = @as(@Vector(n, u32), @splat(@as(u32, @truncate(j)) *% weyl)) +% lanes_weyl;
    return afterShift(n, spread ^ (spread >> @splat(16)) ^ key.at(n, @truncate(j >> 32)));
}

/// Whether u < f for the uniforms of elements i .. i+block (i is even) and
/// fractions f in [0, 1). float32: one hash serves two elements, h(i/2)'s
/// low 16 bits element i and its high 16 bits element i+1, u = (h16 + 1/2)·2^-16,
/// compared exactly (simd.halvesBelow). float64: one hash per element, u = h(i)·2^-32.
fn below(comptime C: type, key: *Key, i: usize, f: Vec(C)) @Vector(block, bool) {
    if (C == f64) return @as(Vec(f64), @floatFromInt(hashes(block, comptime std.simd.iota(u32, block), key, i))) * @as(Vec(f64), @splat(0x1p-32)) < f;
    var h = hashes(block / 2, simd.halves_order, key, i >> 1);
    // Lane 2m of the u16 view must be hash m's low half.
    if (comptime builtin.cpu.arch.endian() == .big) h = std.math.rotl(@Vector(block / 2, u32), h, 16);
    return simd.halvesBelow(@bitCast(h), f);
}

/// Stochastic rounding in two parts, floor(y) and whether to add one to it
/// (u < y - floor(y)): a caller that converts to integers adds the one
/// there, in integer lanes. For NaN, floor is NaN and `up` false.
pub fn Split(comptime C: type) type {
    return struct { floor: Vec(C), up: @Vector(block, bool) };
}

pub fn split(comptime C: type, y: Vec(C), key: *Key, i: usize) Split(C) {
    const fl = simd.floor(C, y);
    return .{ .floor = fl, .up = below(C, key, i, y - fl) };
}

/// `split` for float32 with the floor as i32 lanes (minInt(i32) for NaN),
/// for y NaN or within i32's range; where simd.floor_converts.
pub fn splitInt(y: Vec(f32), key: *Key, i: usize) struct { floor: Vec(i32), up: @Vector(block, bool) } {
    const d = simd.floorToI32(y);
    return .{ .floor = d, .up = below(f32, key, i, y - @as(Vec(f32), @floatFromInt(d))) };
}

/// y rounded to an integer-valued float: half to even, or stochastically
/// (up with probability frac(y), the comparison u < y - floor(y)); `key` is
/// the call's (Key.init(seed)), `i` the index of the block's first element in
/// the call.
pub fn round(comptime C: type, comptime mode: RoundMode, y: Vec(C), key: *Key, i: usize) Vec(C) {
    switch (mode) {
        .nearest => return simd.roundEven(C, y),
        .stochastic => {
            const s = split(C, y, key, i);
            return s.floor + @select(C, s.up, @as(Vec(C), @splat(1)), @as(Vec(C), @splat(0)));
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
    var key = Key.init(12345);
    const i: usize = (5 << 33) + 2 * block;
    const f = std.simd.iota(f32, block) * @as(Vec(f32), @splat(1.0 / @as(f32, block)));
    const f64s = std.simd.iota(f64, block) * @as(Vec(f64), @splat(1.0 / @as(f64, block)));
    const b = below(f32, &key, i, f);
    const b64 = below(f64, &key, i, f64s);
    for (0..block) |lane| {
        const idx: u64 = i + lane;
        const h16: u16 = @truncate(scalarHash(key.k, idx >> 1) >> @intCast(16 * (idx & 1)));
        try testing.expectEqual((@as(f32, @floatFromInt(h16)) + 0.5) * 0x1p-16 < f[lane], b[lane]);
        try testing.expectEqual(@as(f64, @floatFromInt(scalarHash(key.k, idx))) * 0x1p-32 < f64s[lane], b64[lane]);
    }
    const in_order = comptime std.simd.iota(u32, block);
    try testing.expect(hashes(block, in_order, &key, 0)[0] != hashes(block, in_order, &key, 1 << 32)[0]);
    try testing.expectEqual(scalarHash(key.k, 3 << 32), hashes(block, in_order, &key, 3 << 32)[0]);
    // A block that does not start at a multiple of its lanes (an aligning
    // head), in the order halvesBelow takes.
    const h = hashes(block / 2, simd.halves_order, &key, (3 << 32) + 6);
    for (0..block / 2) |lane| try testing.expectEqual(scalarHash(key.k, (3 << 32) + 6 + @as(u64, simd.halves_order[lane])), h[lane]);
}

fn scalarHash(k: u64, j: u64) u32 {
    return lowbias32(1, .{(@as(u32, @truncate(j)) *% weyl) ^ keyWord(k, @truncate(j >> 32))})[0];
}

test "stochastic rounding stays between floor and ceiling" {
    const y: Vec(f32) = @splat(2.25);
    var key = Key.init(7);
    const r = round(f32, .stochastic, y, &key, 0);
    for (0..block) |k| try testing.expect(r[k] == 2 or r[k] == 3);
    try testing.expectEqual(@as(f32, 2), round(f32, .nearest, @splat(2.5), &key, 0)[0]);
}
