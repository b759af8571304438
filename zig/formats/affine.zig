//! The integer affine formats: float32/bfloat16/float16/float64 ↔
//! uint2 … int64 with a scale and a zero point per tensor, channel or
//! group (docs/semantics.md: quantize, dequantize, fake_quantize). Exports
//! its kernel table entries (`entries`).

const std = @import("std");
const types = @import("../types.zig");
const simd = @import("../simd.zig");
const floats = @import("../floats.zig");
const rounding = @import("../rounding.zig");
const sets = @import("../sets.zig");
const packing = @import("../packing.zig");
const stream = @import("../stream.zig");
const entry = @import("../entry.zig");

const DType = types.DType;
const Case = entry.Case;
const Vec = simd.Vec;
const Lane = packing.Lane;
const ZpLane = sets.ZpLane;

fn splat(comptime T: type, v: anytype) Vec(T) {
    return @splat(v);
}

/// The bits of integer-valued r modulo 2^N, for |r| < 2^N, without an
/// out-of-range float-to-int conversion.
fn wrapBits(comptime N: u16, comptime C: type, r: Vec(C)) Vec(std.meta.Int(.unsigned, N)) {
    const UN = std.meta.Int(.unsigned, N);
    const IN = std.meta.Int(.signed, N);
    const half: C = @floatFromInt(@as(u64, 1) << (N - 1));
    const a = @abs(r);
    const big = a >= splat(C, half);
    const low = @select(C, big, a - splat(C, half), a); // Sterbenz: exact
    var m: Vec(UN) = @bitCast(@as(Vec(IN), @intFromFloat(low)));
    m +%= @select(UN, big, splat(UN, @as(UN, 1) << (N - 1)), splat(UN, 0));
    return @select(UN, r < splat(C, 0), splat(UN, 0) -% m, m);
}

/// r limited to [lo, hi]; NaN passes.
fn clamp(comptime C: type, r: Vec(C), p: anytype) Vec(C) {
    const c = @select(C, r > p.hi, p.hi, r);
    return @select(C, c < p.lo, p.lo, c);
}

/// clamp(r + zp, qmin, qmax) for integer-valued r, NaN → zp, exactly.
fn toQuant(comptime Q: DType, comptime C: type, r: Vec(C), p: sets.Lanes(C, Q)) Vec(Lane(Q)) {
    var c = clamp(C, r, p);
    c = @select(C, c != c, splat(C, 0), c);
    if (comptime sets.exactBounds(Q, C)) {
        const W = if (comptime Q.bits() <= 16) i32 else i64;
        const d: Vec(W) = @intFromFloat(c);
        return @intCast(d + @as(Vec(W), p.zp));
    }
    // hi/lo may lie inside the range here; saturated lanes are set apart.
    const UN = std.meta.Int(.unsigned, Q.bits());
    const zp_bits: Vec(UN) = @truncate(@as(Vec(u64), @bitCast(p.zp)));
    var q = wrapBits(Q.bits(), C, c) +% zp_bits;
    q = @select(UN, r > p.hi, splat(UN, @as(UN, @truncate(@as(u128, @bitCast(Q.qmax()))))), q);
    q = @select(UN, r < p.lo, splat(UN, @as(UN, @truncate(@as(u128, @bitCast(Q.qmin()))))), q);
    return @bitCast(q);
}

/// f(q - zp) exactly rounded to C.
fn fromQuant(comptime Q: DType, comptime C: type, q: Vec(Lane(Q)), z: Vec(ZpLane(Q))) Vec(C) {
    switch (comptime Q.bits()) {
        0...16 => return @floatFromInt(q - z),
        32 => return @floatFromInt(@as(Vec(i64), q) - z),
        64 => {
            const ge = q >= z;
            const mag = @select(u64, ge, @as(Vec(u64), @bitCast(q -% z)), @as(Vec(u64), @bitCast(z -% q)));
            const f: Vec(C) = @floatFromInt(mag);
            return @select(C, ge, f, -f);
        },
        else => @compileError("no such width"),
    }
}

fn Params(comptime c: Case) type {
    return sets.Params(c.float_type.Compute(), c.quant_type);
}

inline fn quantizeBlock(comptime c: Case, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const l = p.at(index);
    const y = floats.loadFloats(c.float_type, src, i) * l.inv_scale;
    if (comptime C == f32 and c.quant_type.bits() == 8) {
        // lo and hi are integers and both roundings are monotonic in y (with
        // u fixed, stochastic rounding too), so clamping before rounding
        // gives the same integers, and one conversion rounds. Stochastic
        // rounding converts the integer-valued floor and adds its one to
        // the zero point, in integer lanes (`up` is false for NaN).
        const T = c.quant_type.Storage();
        const out: [*]align(1) T = @ptrCast(dst);
        const in_range = clamp(C, y, l);
        out[i..][0..simd.block].* = switch (c.round_mode) {
            .nearest => simd.roundBytes(T, in_range, l.zp),
            .stochastic => blk: {
                if (comptime simd.floor_converts) {
                    const s = rounding.splitInt(in_range, &p.key, index);
                    break :blk simd.intBytes(T, s.floor, simd.incrementWhere(l.zp, s.up));
                }
                const s = rounding.split(C, in_range, &p.key, index);
                break :blk simd.roundBytes(T, s.floor, simd.incrementWhere(l.zp, s.up));
            },
            else => @compileError("unknown round mode"),
        };
        return;
    }
    packing.store(c.quant_type, dst, i, toQuant(c.quant_type, C, rounding.round(C, c.round_mode, y, &p.key, index), l));
}

fn dequantizeBlock(comptime c: Case, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const l = p.at(index);
    const x = fromQuant(c.quant_type, C, packing.load(c.quant_type, src, i), l.zp) * l.scale;
    if (c.reduce_op == .add) return floats.storeFloats(c.float_type, dst, i, floats.loadFloats(c.float_type, dst, i) + x);
    floats.storeNumbers(c.float_type, dst, i, x); // an integer times a finite scale
}

/// dequantize(quantize(x)) without the integers: an in-range r dequantizes
/// to r itself, a saturated one to the nearest float of qmin/qmax - zp.
inline fn fakeBlock(comptime c: Case, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = c.float_type.Compute();
    const l = p.at(index);
    const r = rounding.round(C, c.round_mode, floats.loadFloats(c.float_type, src, i) * l.inv_scale, &p.key, index);
    // + 0 turns -0 into +0, as the integer round trip does.
    var v = @select(C, r != r, splat(C, 0), r + splat(C, 0));
    v = @select(C, r > l.hi, l.hi_near, v);
    v = @select(C, r < l.lo, l.lo_near, v);
    const x = v * l.scale;
    if (c.reduce_op == .add) return floats.storeFloats(c.float_type, dst, i, floats.loadFloats(c.float_type, dst, i) + x);
    floats.storeNumbers(c.float_type, dst, i, x); // v is NaN-free
}

const Op = enum { quantize, dequantize, fake_quantize };

/// Elements [begin, end) of an operation's call, its block code run
/// through the shared range loop.
fn Range(comptime op: Op) type {
    return struct {
        fn run(comptime c: Case, args: *const types.Args, begin: usize, end: usize) void {
            // A local copy: stores through dst could alias *args as far as
            // the compiler knows, which would reload every parameter per block.
            const a = args.*;
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
            // Per-set parameters change at set boundaries that blocks
            // meet aligned. Stochastic counters come in pairs (float32),
            // and a block's must share their high half (rounding.hashes),
            // which a range within 2^32 elements guarantees.
            const per_tensor = @TypeOf(p) == *sets.Uniform(c.float_type.Compute(), c.quant_type);
            const start_step: usize = if (!per_tensor) 0 else if (c.round_mode != .stochastic) 1 else if (begin >> 32 == (end -| 1) >> 32) 2 else 0;
            stream.runRange(in, out, c.reduce_op == .add, start_step, a.stream != 0, p, a.src, a.dst, begin, end, Block.run);
        }
    };
}

const round_modes = .{ .nearest, .stochastic };
const reduce_ops = .{ .set, .add };

/// This family's slots of the kernel table.
pub const entries = .{
    .quantize = entry.kernel(.{ .float_type = DType.floats, .quant_type = DType.quantized, .round_mode = round_modes }, Range(.quantize).run),
    .dequantize = entry.kernel(.{ .quant_type = DType.quantized, .float_type = DType.floats, .reduce_op = reduce_ops }, Range(.dequantize).run),
    .fake_quantize = entry.kernel(.{ .float_type = DType.floats, .quant_type = DType.quantized, .round_mode = round_modes, .reduce_op = reduce_ops }, Range(.fake_quantize).run),
    .valid_sets = &sets.validSets,
};

test "wide saturation is exact" {
    const a = types.Args{ .src = undefined, .dst = undefined, .float_type = .f32, .quant_type = .uint64, .scale = 1, .zero_point = 5, .round_mode = .nearest, .reduce_op = .set, .seed = 0, .stream = 0 };
    var p = sets.Params(f32, .uint64).init(&a);
    var r: Vec(f32) = @splat(0);
    r[0] = 0x1p64;
    r[1] = -6;
    r[2] = -5;
    r[3] = 0x1p63;
    const q = toQuant(.uint64, f32, r, p.at(0));
    try std.testing.expectEqual(@as(u64, std.math.maxInt(u64)), q[0]);
    try std.testing.expectEqual(@as(u64, 0), q[1]);
    try std.testing.expectEqual(@as(u64, 0), q[2]);
    try std.testing.expectEqual(@as(u64, (1 << 63) + 5), q[3]);
    const back = fromQuant(.uint64, f32, q, p.at(0).zp);
    try std.testing.expectEqual(@as(f32, 0x1p64), back[0]);
    try std.testing.expectEqual(@as(f32, -5), back[1]);
}
