//! FP8 as quantized types: OCP float8_e4m3fn and float8_e5m2 with a scale
//! per tensor, channel or group and no zero point (docs/semantics.md, FP8
//! types). The binade of |y| is read from its bits and the value rounded as
//! an integer on that binade's grid, with the integer types' rounding, so
//! every variant runs the same arithmetic. Exports its kernel table entries
//! (`entries`).

const std = @import("std");
const types = @import("../types.zig");
const simd = @import("../simd.zig");
const floats = @import("../floats.zig");
const rounding = @import("../rounding.zig");
const sets = @import("../sets.zig");
const stream = @import("../stream.zig");
const entry = @import("../entry.zig");

const DType = types.DType;
const Case = entry.Case;
const Vec = simd.Vec;
const block = simd.block;

/// The shape of an FP8 type.
const Format = struct {
    /// Stored mantissa bits.
    m: u5,
    /// Exponent of the smallest normal.
    emin: i32,
    /// The largest finite value.
    max: f32,
    /// Codes (without the sign): NaN, and +inf if the type has one.
    nan: u8,
    inf: ?u8,
};

fn format(comptime Q: DType) Format {
    return switch (Q) {
        .float8_e4m3fn => .{ .m = 3, .emin = -6, .max = 448, .nan = 0x7F, .inf = null },
        .float8_e5m2 => .{ .m = 2, .emin = -14, .max = 57344, .nan = 0x7F, .inf = 0x7C },
        else => @compileError("not an FP8 type"),
    };
}

fn splat(comptime T: type, v: anytype) Vec(T) {
    return @splat(v);
}

fn Bits(comptime C: type) type {
    return std.meta.Int(.unsigned, @bitSizeOf(C));
}

/// 2^k as C, for k within C's normal exponents.
fn pow2(comptime C: type, k: Vec(i32)) Vec(C) {
    const U = Bits(C);
    const biased: Vec(U) = @intCast(k + splat(i32, std.math.floatExponentMax(C)));
    return @bitCast(biased << @splat(std.math.floatMantissaBits(C)));
}

/// y = c(x · inv) on Q's grid: |y| clamped to max and rounded as an integer
/// r on the grid of its binade e (≥ emin), so that |value| = r · 2^(e - m).
fn Rounded(comptime C: type) type {
    return struct { r: Vec(C), e: Vec(i32), negative: Vec(bool), nan: Vec(bool) };
}

inline fn toGrid(comptime Q: DType, comptime C: type, comptime mode: types.RoundMode, y: Vec(C), key: *rounding.Key, index: usize) Rounded(C) {
    const f = comptime format(Q);
    const U = Bits(C);
    const nan = y != y;
    const bits: Vec(U) = @bitCast(y);
    const negative = bits >> @splat(@bitSizeOf(C) - 1) != splat(U, 0);
    var a = @abs(y);
    a = @select(C, nan, splat(C, 0), a);
    a = @select(C, a > splat(C, f.max), splat(C, f.max), a);
    const field: Vec(i32) = @intCast(@as(Vec(U), @bitCast(a)) >> @splat(std.math.floatMantissaBits(C)));
    const e = @max(field - splat(i32, std.math.floatExponentMax(C)), splat(i32, f.emin)); // zero, subnormal: emin
    const t = a * pow2(C, splat(i32, f.m) - e); // exact: a power of two, in range
    return .{ .r = rounding.round(C, mode, t, key, index), .e = e, .negative = negative, .nan = nan };
}

fn encode(comptime Q: DType, comptime C: type, g: Rounded(C)) Vec(u8) {
    const f = comptime format(Q);
    // r reaching 2^(m+1) carries into the next binade's field, as it should.
    const r: Vec(i32) = @intFromFloat(g.r);
    const mag: Vec(i32) = ((g.e - splat(i32, f.emin)) << @splat(f.m)) + r;
    const code: Vec(u8) = @intCast(@select(i32, g.nan, splat(i32, f.nan), mag));
    return code | @select(u8, g.negative, splat(u8, 0x80), splat(u8, 0));
}

/// ±r · 2^(e - m) (exact); NaN lanes are 0 here (see `store`).
fn value(comptime Q: DType, comptime C: type, g: Rounded(C)) Vec(C) {
    const f = comptime format(Q);
    const v = g.r * pow2(C, g.e - splat(i32, f.m));
    return @select(C, g.negative, -v, v);
}

/// The quiet NaN with a sign.
fn quietNan(comptime C: type, negative: Vec(bool)) Vec(C) {
    return @select(C, negative, splat(C, -std.math.nan(C)), splat(C, std.math.nan(C)));
}

/// Stores x, or out + x, where x is `nan_value` in the `nan` lanes. The
/// NaN lanes are kept out of the arithmetic and set by their bits as x86
/// propagates NaN (out's, made quiet, if out is NaN; else x's): LLVM may
/// fold arithmetic on a NaN it can see into any NaN.
inline fn store(comptime c: Case, dst: [*]u8, i: usize, x: Vec(c.float_type.Compute()), nan: Vec(bool), nan_value: Vec(c.float_type.Compute())) void {
    const C = c.float_type.Compute();
    var r = @select(C, nan, splat(C, 0), x);
    var n = nan_value;
    if (c.reduce_op == .add) {
        const o = floats.loadFloats(c.float_type, dst, i);
        const sum = o + r;
        // inf + -inf gives each ISA's default NaN (x86's has the sign set, Arm's not): the spec's is x86's.
        r = @select(C, (sum != sum) & (o == o), splat(C, defaultNan(C)), sum);
        const quiet: Vec(Bits(C)) = @as(Vec(Bits(C)), @bitCast(o)) | splat(Bits(C), @as(Bits(C), 1) << (std.math.floatMantissaBits(C) - 1));
        n = @select(C, o != o, @as(Vec(C), @bitCast(quiet)), n);
    }
    floats.storeFloats(c.float_type, dst, i, @select(C, nan, n, r));
}

fn defaultNan(comptime C: type) C {
    return @bitCast(@as(Bits(C), @bitCast(std.math.nan(C))) | @as(Bits(C), 1) << (@bitSizeOf(C) - 1));
}

/// The float32 of FP8 codes: the magnitude's bits placed at float32's
/// mantissa top and rescaled by a power of two (exact, subnormals too).
fn decode(comptime Q: DType, codes: Vec(u8)) Vec(f32) {
    const f = comptime format(Q);
    const c: Vec(u32) = codes;
    const mag = c & splat(u32, 0x7F);
    const sign = (c >> @splat(7)) << @splat(31);
    const placed: Vec(f32) = @bitCast(mag << @splat(23 - @as(u5, f.m)));
    const bias8: i32 = 1 - f.emin;
    var bits: Vec(u32) = @bitCast(placed * pow2(f32, splat(i32, 127 - bias8)));
    if (f.inf) |inf| {
        bits = @select(u32, mag == splat(u32, inf), splat(u32, 0x7F80_0000), bits);
        bits = @select(u32, mag > splat(u32, inf), splat(u32, 0x7FC0_0000), bits);
    } else {
        bits = @select(u32, mag == splat(u32, f.nan), splat(u32, 0x7FC0_0000), bits);
    }
    return @bitCast(bits | sign);
}

fn Params(comptime c: Case) type {
    return sets.Params(c.float_type.Compute(), c.quant_type);
}

inline fn quantizeBlock(comptime c: Case, p: *Params(c), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const y = floats.loadFloats(c.float_type, src, i) * p.at(index).inv_scale;
    dst[i..][0..block].* = encode(c.quant_type, C, toGrid(c.quant_type, C, c.round_mode, y, &p.key, index));
}

inline fn dequantizeBlock(comptime c: Case, p: *Params(c), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const q = decode(c.quant_type, src[i..][0..block].*);
    const d: Vec(C) = if (C == f32) q else @floatCast(q);
    const nan = d != d;
    store(c, dst, i, @select(C, nan, splat(C, 0), d) * p.at(index).scale, nan, d);
}

inline fn fakeBlock(comptime c: Case, p: *Params(c), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const l = p.at(index);
    const y = floats.loadFloats(c.float_type, src, i) * l.inv_scale;
    const g = toGrid(c.quant_type, C, c.round_mode, y, &p.key, index);
    store(c, dst, i, value(c.quant_type, C, g) * l.scale, g.nan, quietNan(C, g.negative));
}

const Op = enum { quantize, dequantize, fake_quantize };

fn Range(comptime op: Op) type {
    return struct {
        fn run(comptime c: Case, args: *const types.Args, begin: usize, end: usize) void {
            const a = args.*; // a local copy: see affine.zig
            var p = Params(c).init(&a);
            const Block = struct {
                fn run(q: *Params(c), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
                    switch (op) {
                        .quantize => quantizeBlock(c, q, src, dst, i, index),
                        .dequantize => dequantizeBlock(c, q, src, dst, i, index),
                        .fake_quantize => fakeBlock(c, q, src, dst, i, index),
                    }
                }
            };
            const in = if (op == .dequantize) c.quant_type else c.float_type;
            const out = if (op == .quantize) c.quant_type else c.float_type;
            stream.runRange(in, out, c.reduce_op == .add, a.stream != 0, &p, a.src, a.dst, begin, end, Block.run);
        }
    };
}

const round_modes = .{ .nearest, .stochastic };
const reduce_ops = .{ .set, .add };

/// This family's slots of the kernel table.
pub const entries = .{
    .float8_quantize = entry.kernel(.{ .float_type = DType.floats, .quant_type = DType.float8, .round_mode = round_modes }, Range(.quantize).run),
    .float8_dequantize = entry.kernel(.{ .quant_type = DType.float8, .float_type = DType.floats, .reduce_op = reduce_ops }, Range(.dequantize).run),
    .float8_fake_quantize = entry.kernel(.{ .float_type = DType.floats, .quant_type = DType.float8, .round_mode = round_modes, .reduce_op = reduce_ops }, Range(.fake_quantize).run),
};

const testing = std.testing;

test "every code decodes to a value that encodes back to it" {
    inline for (DType.float8) |Q| {
        var codes: [256]u8 = undefined;
        for (&codes, 0..) |*b, k| b.* = @intCast(k);
        var k: usize = 0;
        while (k < 256) : (k += block) {
            const q: Vec(u8) = codes[k..][0..block].*;
            const v = decode(Q, q);
            var key = rounding.Key.init(0);
            const back = encode(Q, f32, toGrid(Q, f32, .nearest, v, &key, 0));
            for (0..block) |j| {
                const inf = if (format(Q).inf) |i| q[j] & 0x7F == i else false;
                // inf saturates to max; NaN codes all come back as the canonical one.
                if (inf) continue;
                if (std.math.isNan(v[j])) {
                    try testing.expectEqual((q[j] & 0x80) | format(Q).nan, back[j]);
                } else try testing.expectEqual(q[j], back[j]);
            }
        }
    }
}

test "ties go to even, overflow saturates" {
    var y: Vec(f32) = @splat(0);
    y[0] = 17; // E4M3: 16 and 18 are neighbours, 17 a tie → 16
    y[1] = 1e9;
    y[2] = -std.math.inf(f32);
    y[3] = 0x1p-10; // half the smallest subnormal 2^-9: a tie → 0
    var key = rounding.Key.init(0);
    const q = encode(.float8_e4m3fn, f32, toGrid(.float8_e4m3fn, f32, .nearest, y, &key, 0));
    try testing.expectEqual(@as(u8, 0x58), q[0]);
    try testing.expectEqual(@as(u8, 0x7E), q[1]);
    try testing.expectEqual(@as(u8, 0xFE), q[2]);
    try testing.expectEqual(@as(u8, 0x00), q[3]);
}
