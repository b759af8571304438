//! FP8 as quantized types: OCP float8_e4m3fn and float8_e5m2 with a scale
//! per tensor, channel or group and no zero point (docs/semantics.md, FP8
//! types). Codes come from minifloat.zig, as the MX formats' elements do.
//! Exports its kernel table entries (`entries`).

const std = @import("std");
const types = @import("../types.zig");
const simd = @import("../simd.zig");
const floats = @import("../floats.zig");
const rounding = @import("../rounding.zig");
const sets = @import("../sets.zig");
const stream = @import("../stream.zig");
const entry = @import("../entry.zig");
const minifloat = @import("../minifloat.zig");

const DType = types.DType;
const Case = entry.Case;
const Vec = simd.Vec;
const block = simd.block;

/// An FP8 type's element format.
fn format(comptime Q: DType) minifloat.Format {
    return switch (Q) {
        .float8_e4m3fn => minifloat.e4m3,
        .float8_e5m2 => minifloat.e5m2,
        else => @compileError("not an FP8 type"),
    };
}

fn splat(comptime T: type, v: anytype) Vec(T) {
    return @splat(v);
}

const Bits = minifloat.Bits;

inline fn encode(comptime Q: DType, comptime C: type, comptime mode: types.RoundMode, y: Vec(C), key: *rounding.Key, index: usize) minifloat.Encoded(C) {
    return minifloat.encode(comptime format(Q), C, mode, false, y, key, index);
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

fn Params(comptime c: Case) type {
    return sets.Params(c.float_type.Compute(), c.quant_type);
}

inline fn quantizeBlock(comptime c: Case, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const y = floats.loadFloats(c.float_type, src, i) * p.at(index).inv_scale;
    const code = encode(c.quant_type, C, c.round_mode, y, &p.key, index).code;
    const bytes: Vec(u8) = if (C == f32) simd.narrowBytes(u8, @bitCast(code)) else @intCast(code);
    dst[i..][0..block].* = bytes;
}

inline fn dequantizeBlock(comptime c: Case, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const q = minifloat.decode(comptime format(c.quant_type), @as(Vec(u8), src[i..][0..block].*));
    const d: Vec(C) = if (C == f32) q else @floatCast(q);
    const nan = d != d;
    store(c, dst, i, @select(C, nan, splat(C, 0), d) * p.at(index).scale, nan, d);
}

inline fn fakeBlock(comptime c: Case, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const l = p.at(index);
    const y = floats.loadFloats(c.float_type, src, i) * l.inv_scale;
    const g = encode(c.quant_type, C, c.round_mode, y, &p.key, index);
    store(c, dst, i, g.value * l.scale, g.nan, quietNan(C, g.negative));
}

const Op = enum { quantize, dequantize, fake_quantize };

fn Range(comptime op: Op) type {
    return struct {
        fn run(comptime c: Case, args: *const types.Args, begin: usize, end: usize) void {
            const a = args.*; // a local copy: see affine.zig
            if (a.scales == null) {
                var u = sets.Uniform(c.float_type.Compute(), c.quant_type).init(&a);
                loop(c, &a, &u, begin, end);
            } else {
                var p = Params(c).init(&a);
                loop(c, &a, &p, begin, end);
            }
        }

        fn loop(comptime c: Case, a: *const types.Args, p: anytype, begin: usize, end: usize) void {
            const Block = struct {
                fn run(q: @TypeOf(p), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
                    switch (op) {
                        .quantize => quantizeBlock(c, q, src, dst, i, index),
                        .dequantize => dequantizeBlock(c, q, src, dst, i, index),
                        .fake_quantize => fakeBlock(c, q, src, dst, i, index),
                    }
                }
            };
            const in = if (op == .dequantize) c.quant_type else c.float_type;
            const out = if (op == .quantize) c.quant_type else c.float_type;
            // Per tensor and nearest, a block's codes do not depend on
            // where it starts: the loop may align the wider array.
            const per_tensor = @TypeOf(p) == *sets.Uniform(c.float_type.Compute(), c.quant_type);
            const start_step: usize = if (per_tensor and c.round_mode != .stochastic) 1 else 0;
            stream.runRange(in, out, c.reduce_op == .add, start_step, a.stream != 0, p, a.src, a.dst, begin, end, Block.run);
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
            const v = minifloat.decode(format(Q), q);
            var key = rounding.Key.init(0);
            const back: Vec(u8) = @intCast(encode(Q, f32, .nearest, v, &key, 0).code);
            for (0..block) |j| {
                const inf = q[j] & 0x7F == format(Q).inf;
                // inf saturates to max; NaN codes all come back as the canonical one.
                if (inf) continue;
                if (std.math.isNan(v[j])) {
                    try testing.expectEqual((q[j] & 0x80) | @as(u8, @intCast(format(Q).nan)), back[j]);
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
    const q: Vec(u8) = @intCast(encode(.float8_e4m3fn, f32, .nearest, y, &key, 0).code);
    try testing.expectEqual(@as(u8, 0x58), q[0]);
    try testing.expectEqual(@as(u8, 0x7E), q[1]);
    try testing.expectEqual(@as(u8, 0xFE), q[2]);
    try testing.expectEqual(@as(u8, 0x00), q[3]);
}
