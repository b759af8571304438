//! Small float codes (FP8, FP6, FP4) of compute-type values, as
//! docs/semantics.md's *FP8 types* encodes them and the MX formats reuse:
//! |y| clamped to max, rounded on its binade's grid (nearest even or
//! stochastic), the sign in the code's top bit, NaN to one code.
//! float8.zig (per tensor, channel, group) and mx.zig (blocks) share it.

const std = @import("std");
const simd = @import("simd.zig");
const rounding = @import("rounding.zig");
const RoundMode = @import("types.zig").RoundMode;

const Vec = simd.Vec;

/// A sign-magnitude float format of `bits` bits.
pub const Format = struct {
    /// Stored mantissa bits.
    m: u5,
    /// Exponent of the smallest normal.
    emin: i32,
    /// The largest finite value.
    max: f32,
    bits: u5,
    /// The code NaN encodes to, without the sign: FP6 and FP4 have none (0).
    nan: u32 = 0,
    /// Magnitudes that decode to infinity, and from which up to NaN
    /// (0x100: no such code).
    inf: u32 = 0x100,
    dnan: u32 = 0x100,
};

pub const e4m3: Format = .{ .m = 3, .emin = -6, .max = 448, .bits = 8, .nan = 0x7F, .dnan = 0x7F };
pub const e5m2: Format = .{ .m = 2, .emin = -14, .max = 57344, .bits = 8, .nan = 0x7F, .inf = 0x7C, .dnan = 0x7D };
pub const e2m3: Format = .{ .m = 3, .emin = 0, .max = 7.5, .bits = 6 };
pub const e3m2: Format = .{ .m = 2, .emin = -2, .max = 28, .bits = 6 };
pub const e2m1: Format = .{ .m = 1, .emin = 0, .max = 6, .bits = 4 };

pub fn Bits(comptime C: type) type {
    return std.meta.Int(.unsigned, @bitSizeOf(C));
}

fn splat(comptime T: type, v: anytype) Vec(T) {
    return @splat(v);
}

/// 2^k as C, for k within C's normal exponents.
fn pow2(comptime C: type, k: Vec(i32)) Vec(C) {
    const biased: Vec(Bits(C)) = @intCast(k + splat(i32, std.math.floatExponentMax(C)));
    return @bitCast(biased << @splat(std.math.floatMantissaBits(C)));
}

/// The nearest rounding's addend of a's binade (encode): with d =
/// 2^max(floor(log2 a), emin), 2^(e + s - m) · (1 + ((e - emin) << m) · 2^-s).
inline fn magicOf(comptime f: Format, comptime C: type, a: Vec(Bits(C))) Vec(Bits(C)) {
    const U = Bits(C);
    const s = std.math.floatMantissaBits(C);
    const emin_bits = @as(U, @intCast(f.emin + std.math.floatExponentMax(C))) << s;
    const binade: Vec(C) = @bitCast(a & splat(U, ((@as(U, 1) << std.math.floatExponentBits(C)) - 1) << s)); // 2^floor(log2 a), 0 below normals
    const smallest = splat(C, @as(C, @bitCast(emin_bits)));
    const d: Vec(U) = @bitCast(@select(C, binade > smallest, binade, smallest));
    const k: std.math.Log2Int(U) = @intCast(@as(u32, s) - f.m);
    // (d - emin_bits) >> k is (e - emin) << m: d's mantissa is 0.
    return d +% (d >> @as(@Vector(simd.block, std.math.Log2Int(U)), @splat(k))) +% splat(U, ((@as(U, s) - f.m) << s) -% (emin_bits >> k));
}

/// magicOf for every float32 exponent field from `first` to that of f.max,
/// at entries[field mod entries.len]: null where the ISA has no permute
/// that large.
fn magicTable(comptime f: Format, comptime C: type) ?struct { first: u32, entries: []const u32 } {
    @setEvalBranchQuota(100_000);
    if (C != f32) return null;
    const top: u32 = @as(u32, @bitCast(f.max)) >> 23;
    const emin: u32 = @intCast(f.emin + 127);
    const n: usize = for ([_]usize{ 8, 16, 32 }) |c| {
        if (c >= top - emin + 1 and (c == simd.lookup_entries or (c == 16 and simd.lookup_entries == 32))) break c;
    } else return null;
    const first = top + 1 - n;
    var entries: [n]u32 = undefined;
    for (first..top + 1) |field| {
        const a: Vec(u32) = @splat(@as(u32, @intCast(field)) << 23);
        entries[field % n] = magicOf(f, f32, a)[0];
    }
    const final = entries;
    return .{ .first = first, .entries = &final };
}

/// y on f's grid: `code` (sign in bit bits - 1, NaN lanes sign | f.nan)
/// and the grid value ±r · 2^(e - m) (finite in NaN lanes; the caller
/// replaces them).
pub fn Encoded(comptime C: type) type {
    return struct { code: Vec(Bits(C)), value: Vec(C), negative: Vec(bool), nan: Vec(bool) };
}

/// `key`, `index`: stochastic rounding's (rounding.round). `nan_free`: the
/// caller knows y holds no NaN, and the NaN select goes.
pub inline fn encode(comptime f: Format, comptime C: type, comptime mode: RoundMode, comptime nan_free: bool, y: Vec(C), key: *rounding.Key, index: usize) Encoded(C) {
    const U = Bits(C);
    const Shift = @Vector(simd.block, std.math.Log2Int(U));
    const s = std.math.floatMantissaBits(C);
    const bias = std.math.floatExponentMax(C);
    const sign_bit: U = @as(U, 1) << (@bitSizeOf(C) - 1);
    const b: Vec(U) = @bitCast(y);
    const negative = b >= splat(U, sign_bit);
    // Float compares and selects, not integer min and max, which baseline
    // x86-64 lacks for 32 bits: one minps/maxps each. NaN (its lanes are
    // replaced below) and +inf give max.
    const abs: Vec(C) = @bitCast(b & splat(U, ~sign_bit));
    const top = splat(C, f.max);
    const a: Vec(U) = @bitCast(@select(C, abs < top, abs, top));
    var mag: Vec(U) = undefined;
    var value: Vec(C) = undefined;
    switch (mode) {
        .nearest => {
            // The FPU rounds: with e = max(floor(log2 a), emin), a plus
            // 2^(e + s - m) · (1 + ((e - emin) << m) · 2^-s), whose ulp is
            // the grid step of a's binade, leaves the code ((e - emin) << m) +
            // round(a · 2^(m - e)) in the sum's mantissa: nearest even, since
            // the addend's mantissa is even (m ≥ 1), a carry to 2^(m+1)
            // included (the sum stays in the addend's binade). The multiply
            // that made y rounds in the same mode.
            const magic = if (comptime magicTable(f, C)) |t| blk: {
                // The addend of each binade from a table, by a's exponent
                // field clamped below to the table's first (at most emin's):
                // a max, a shift and a permute instead of five operations.
                const first = splat(U, @as(U, t.first) << s);
                const n = comptime t.entries.len;
                break :blk simd.lookup(n, t.entries[0..n].*, @max(a, first) >> @as(Shift, @splat(s)));
            } else magicOf(f, C, a);
            const sum: Vec(U) = @bitCast(@as(Vec(C), @bitCast(a)) + @as(Vec(C), @bitCast(magic)));
            // The code is in sum's mantissa: the field select below keeps
            // its bits (fewer than the mantissa's) and drops the exponent's.
            mag = sum;
            value = @as(Vec(C), @bitCast(sum)) - @as(Vec(C), @bitCast(magic)); // exact
        },
        .stochastic => {
            // The spec's arithmetic: t = a · 2^(m - e) (exact), rounded as
            // integer types round.
            const field: Vec(i32) = @intCast(a >> @splat(s));
            const e = @max(field - splat(i32, bias), splat(i32, f.emin)); // zero, subnormal: emin
            const r = rounding.round(C, .stochastic, @as(Vec(C), @bitCast(a)) * pow2(C, splat(i32, f.m) - e), key, index);
            const ri: Vec(i32) = @intFromFloat(r);
            // r reaching 2^(m+1) carries into the next binade's field, as it should.
            mag = @intCast(((e - splat(i32, f.emin)) << @as(@Vector(simd.block, u5), @splat(f.m))) + ri);
            value = r * pow2(C, e - splat(i32, f.m));
        },
        else => @compileError("unknown round mode"),
    }
    // The code's field bits from mag (nearest: the sum, whose bits above
    // them are dropped here; stochastic: none above them), its sign
    // bit from y's top bits: one bit select (vpternlogd under AVX-512).
    const field = splat(U, (@as(U, 1) << @intCast(f.bits - 1)) - 1);
    const signed = (mag & field) | ((b >> @as(Shift, @splat(@intCast(@bitSizeOf(C) - @as(u32, f.bits))))) & ~field);
    const nan = y != y;
    // NaN lanes' field bits all set (FP8) or all clear (FP6, FP4): one
    // merge-masked or / and.
    const nan_code = if (f.nan == (1 << (f.bits - 1)) - 1) signed | field else if (f.nan == 0) signed & ~field else (signed & ~field) | splat(U, f.nan);
    const code = if (nan_free) signed else @select(U, nan, nan_code, signed);
    return .{ .code = code, .value = @select(C, negative, -value, value), .negative = negative, .nan = nan };
}

/// float32 values of codes (exact, subnormals too): the magnitude's bits
/// placed at float32's mantissa top and rescaled by a power of two; NaN
/// codes give the quiet NaN with the code's sign.
pub inline fn decode(f: Format, c: Vec(u32)) Vec(f32) {
    const Shift = @Vector(simd.block, u5);
    const mag = c & splat(u32, (@as(u32, 1) << (f.bits - 1)) - 1);
    const placed: Vec(f32) = @bitCast(mag << @as(Shift, @splat(23 - f.m)));
    const rescale: f32 = @bitCast(@as(u32, @intCast(126 + f.emin + 127)) << 23); // 2^(126 + emin)
    var b: Vec(u32) = @bitCast(placed * splat(f32, rescale));
    b = @select(u32, mag == splat(u32, f.inf), splat(u32, 0x7F80_0000), b);
    b = @select(u32, mag >= splat(u32, f.dnan), splat(u32, 0x7FC0_0000), b);
    const sign = (c >> @as(Shift, @splat(f.bits - 1))) & splat(u32, 1);
    return @bitCast(b | (sign << @splat(31)));
}

const testing = std.testing;

/// The spec's code and value of y, in float64 (exact for these formats).
fn spec(comptime f: Format, y: f64) struct { code: u32, value: f64 } {
    const sign: u32 = if (std.math.signbit(y)) @as(u32, 1) << (f.bits - 1) else 0;
    if (std.math.isNan(y)) return .{ .code = sign | f.nan, .value = 0 };
    const a = @min(@abs(y), f.max);
    const e: i32 = if (a == 0) f.emin else @max(std.math.ilogb(a), f.emin);
    const t = std.math.ldexp(a, @as(i32, f.m) - e);
    const fl = @floor(t);
    const r = if (t - fl > 0.5 or (t - fl == 0.5 and @mod(fl, 2) == 1)) fl + 1 else fl;
    const value = std.math.copysign(std.math.ldexp(r, e - f.m), y);
    return .{ .code = sign | @as(u32, @intCast(((e - f.emin) << f.m) + @as(i32, @intFromFloat(r)))), .value = value };
}

test "nearest: the spec's codes on ties, binade and range edges, in float32 and float64" {
    @setEvalBranchQuota(10_000);
    const lanes = simd.block;
    inline for (.{ e4m3, e5m2, e2m3, e3m2, e2m1 }) |f| {
        inline for (.{ f32, f64 }) |C| {
            var ys: std.ArrayList(C) = .empty;
            defer ys.deinit(testing.allocator);
            // Every grid point and the midpoints between them, and their float neighbours,
            // up to past max (the subnormal/normal boundary, carries into the next binade).
            const top = std.math.ldexp(@as(f64, f.max), 1);
            var step_e: i32 = f.emin - f.m;
            var v: f64 = 0;
            while (v <= top) {
                const step = std.math.ldexp(@as(f64, 1), step_e);
                for ([_]f64{ v, v + step / 2 }) |p| {
                    const c: C = @floatCast(p);
                    for ([_]C{ c, std.math.nextAfter(C, c, 0), std.math.nextAfter(C, c, std.math.inf(C)) }) |q| {
                        try ys.append(testing.allocator, q);
                        try ys.append(testing.allocator, -q);
                    }
                }
                v += step;
                if (v >= std.math.ldexp(@as(f64, 1), step_e + f.m + 1)) step_e += 1;
            }
            for ([_]C{ std.math.inf(C), -std.math.inf(C), std.math.nan(C), -std.math.nan(C), std.math.floatTrueMin(C), std.math.floatMax(C) }) |q| try ys.append(testing.allocator, q);
            var key = rounding.Key.init(0);
            var k: usize = 0;
            while (k < ys.items.len) : (k += lanes) {
                var y: Vec(C) = @splat(0);
                for (0..@min(lanes, ys.items.len - k)) |j| y[j] = ys.items[k + j];
                const g = encode(f, C, .nearest, false, y, &key, 0);
                for (0..lanes) |j| {
                    const want = spec(f, y[j]);
                    try testing.expectEqual(want.code, @as(u32, @intCast(g.code[j])));
                    if (y[j] == y[j]) try testing.expectEqual(want.value, @as(f64, g.value[j]));
                }
            }
        }
    }
}
