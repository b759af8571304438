//! The quantization kernels. This one source is compiled once per ISA
//! variant (build.zig sets the CPU model and the `isa` option); each object
//! exports its table as `piquant_kernels_<isa>`, which dispatch.zig selects at
//! run time. Scalar tails run through the same vector code on a padded block,
//! so every element of a call sees identical arithmetic.

const std = @import("std");
const builtin = @import("builtin");
const types = @import("types.zig");
const options = @import("build_options");

const DType = types.DType;
const Isa = types.Isa;

const isa: Isa = std.meta.stringToEnum(Isa, options.isa) orelse @compileError("unknown isa " ++ options.isa);

comptime {
    const x86 = std.Target.x86;
    const f = builtin.cpu.features;
    switch (isa) {
        .sse42 => if (!x86.featureSetHas(f, .sse4_2)) @compileError("sse42 variant built without SSE4.2"),
        .avx2 => if (!x86.featureSetHasAll(f, .{ .avx2, .fma, .f16c })) @compileError("avx2 variant built without AVX2/FMA/F16C"),
        .avx512f => if (!x86.featureSetHas(f, .avx512f)) @compileError("avx512f variant built without AVX-512F"),
        .neon => if (!std.Target.aarch64.featureSetHas(f, .neon)) @compileError("neon variant built without Neon"),
        .generic => {},
    }
}

/// f32 lanes of one native register; a block is two registers.
const lanes = switch (isa) {
    .generic, .sse42, .neon => 4,
    .avx2 => 8,
    .avx512f => 16,
};
const block = 2 * lanes;

const F = @Vector(block, f32);
const I = @Vector(block, i32);
const U32 = @Vector(block, u32);

fn loadFloats(comptime T: DType, src: [*]const u8, i: usize) F {
    switch (T) {
        .f32 => {
            const p: [*]align(1) const f32 = @ptrCast(src);
            return p[i..][0..block].*;
        },
        .bf16 => {
            const p: [*]align(1) const u16 = @ptrCast(src);
            const h: @Vector(block, u16) = p[i..][0..block].*;
            return @bitCast(@as(U32, h) << @splat(16));
        },
        else => @compileError("not a float type"),
    }
}

/// Round to nearest bfloat16, ties to even; NaN keeps its sign and top
/// payload bits and is made quiet.
fn toBf16(x: F) @Vector(block, u16) {
    const b: U32 = @bitCast(x);
    const rounded = (b + @as(U32, @splat(0x7FFF)) + ((b >> @splat(16)) & @as(U32, @splat(1)))) >> @splat(16);
    const quiet = (b >> @splat(16)) | @as(U32, @splat(0x40));
    return @truncate(@select(u32, x != x, quiet, rounded));
}

fn storeFloats(comptime T: DType, dst: [*]u8, i: usize, x: F) void {
    switch (T) {
        .f32 => {
            const p: [*]align(1) f32 = @ptrCast(dst);
            p[i..][0..block].* = x;
        },
        .bf16 => {
            const p: [*]align(1) u16 = @ptrCast(dst);
            p[i..][0..block].* = toBf16(x);
        },
        else => @compileError("not a float type"),
    }
}

/// q - zero_point for one block, clamped to the type's range, NaN → 0.
fn quantizeBlock(comptime Q: DType, x: F, inv_scale: f32, zero_point: i64) I {
    const lo: F = @splat(@floatFromInt(Q.qmin() - zero_point));
    const hi: F = @splat(@floatFromInt(Q.qmax() - zero_point));
    var r = types.roundHalfEven(block, x * @as(F, @splat(inv_scale)));
    r = @select(f32, r > hi, hi, r);
    r = @select(f32, r < lo, lo, r);
    r = @select(f32, r != r, @as(F, @splat(0)), r);
    return @as(I, @intFromFloat(r)) + @as(I, @splat(@intCast(zero_point)));
}

fn storeQuantized(comptime Q: DType, dst: [*]u8, i: usize, q: I) void {
    switch (Q) {
        .uint8 => dst[i..][0..block].* = @as(@Vector(block, u8), @intCast(q)),
        .int8 => {
            const p: [*]i8 = @ptrCast(dst);
            p[i..][0..block].* = @as(@Vector(block, i8), @intCast(q));
        },
        .uint4, .int4 => {
            // First element in the low nibble (torch.quint4x2's layout).
            const nib: @Vector(block, u8) = @as(@Vector(block, u8), @truncate(@as(U32, @bitCast(q)))) & @as(@Vector(block, u8), @splat(0x0F));
            const even = comptime evenOdd(0);
            const odd = comptime evenOdd(1);
            const lo = @shuffle(u8, nib, undefined, even);
            const hi = @shuffle(u8, nib, undefined, odd);
            dst[i / 2 ..][0 .. block / 2].* = lo | (hi << @splat(4));
        },
        else => @compileError("not a quantized type"),
    }
}

fn evenOdd(comptime first: i32) @Vector(block / 2, i32) {
    var m: [block / 2]i32 = undefined;
    for (&m, 0..) |*e, k| e.* = 2 * @as(i32, @intCast(k)) + first;
    return m;
}

fn interleave() @Vector(block, i32) {
    var m: [block]i32 = undefined;
    for (&m, 0..) |*e, k| {
        const j: i32 = @intCast(k / 2);
        e.* = if (k % 2 == 0) j else ~j;
    }
    return m;
}

fn loadQuantized(comptime Q: DType, src: [*]const u8, i: usize) I {
    switch (Q) {
        .uint8 => return @as(@Vector(block, u8), src[i..][0..block].*),
        .int8 => {
            const p: [*]const i8 = @ptrCast(src);
            return @as(@Vector(block, i8), p[i..][0..block].*);
        },
        .uint4, .int4 => {
            const bytes: @Vector(block / 2, u8) = src[i / 2 ..][0 .. block / 2].*;
            const lo_u = bytes & @as(@Vector(block / 2, u8), @splat(0x0F));
            const hi_u = bytes >> @splat(4);
            const mask = comptime interleave();
            if (Q == .uint4) return @as(@Vector(block, u8), @shuffle(u8, lo_u, hi_u, mask));
            // Sign-extend each nibble: move it to the top of a byte, shift back arithmetically.
            const lo_s = @as(@Vector(block / 2, i8), @bitCast(lo_u << @splat(4))) >> @splat(4);
            const hi_s = @as(@Vector(block / 2, i8), @bitCast(bytes)) >> @splat(4);
            return @as(@Vector(block, i8), @shuffle(i8, lo_s, hi_s, mask));
        },
        else => @compileError("not a quantized type"),
    }
}

fn quantizeRange(comptime S: DType, comptime Q: DType, args: *const types.QuantizeArgs, begin: usize, end: usize) void {
    // A local copy: stores through dst could alias *args as far as the
    // compiler knows, which would reload every parameter per block.
    const a = args.*;
    var i = begin;
    while (i + block <= end) : (i += block) {
        storeQuantized(Q, a.dst, i, quantizeBlock(Q, loadFloats(S, a.src, i), a.inv_scale, a.zero_point));
    }
    if (i == end) return;
    // Tail: run the same block code on a zero-padded copy, keep what is needed.
    const n = end - i;
    const s_bytes = S.bits() / 8;
    var src_buf: [block * 4]u8 align(64) = @splat(0);
    @memcpy(src_buf[0 .. n * s_bytes], a.src[i * s_bytes ..][0 .. n * s_bytes]);
    var dst_buf: [block]u8 align(64) = undefined;
    const q = quantizeBlock(Q, loadFloats(S, &src_buf, 0), a.inv_scale, a.zero_point);
    storeQuantized(Q, &dst_buf, 0, q);
    const out_bytes = Q.byteCount(n);
    if (Q.bits() == 4 and n % 2 == 1) dst_buf[out_bytes - 1] &= 0x0F; // unused high nibble is zero
    @memcpy(a.dst[Q.byteCount(i)..][0..out_bytes], dst_buf[0..out_bytes]);
}

fn dequantizeBlock(comptime Q: DType, comptime D: DType, comptime op: types.ReduceOp, a: *const types.DequantizeArgs, src: [*]const u8, dst: [*]u8, i: usize) void {
    const q = loadQuantized(Q, src, i) - @as(I, @splat(@intCast(a.zero_point)));
    var x = @as(F, @floatFromInt(q)) * @as(F, @splat(a.scale));
    if (op == .add) x = loadFloats(D, dst, i) + x;
    storeFloats(D, dst, i, x);
}

fn dequantizeRange(comptime Q: DType, comptime D: DType, comptime op: types.ReduceOp, args: *const types.DequantizeArgs, begin: usize, end: usize) void {
    const a = args.*; // see quantizeRange
    var i = begin;
    while (i + block <= end) : (i += block) dequantizeBlock(Q, D, op, &a, a.src, a.dst, i);
    if (i == end) return;
    const n = end - i;
    const d_bytes = D.bits() / 8;
    var src_buf: [block]u8 align(64) = @splat(0);
    @memcpy(src_buf[0..Q.byteCount(n)], a.src[Q.byteCount(i)..][0..Q.byteCount(n)]);
    var dst_buf: [block * 4]u8 align(64) = @splat(0);
    if (op == .add) @memcpy(dst_buf[0 .. n * d_bytes], a.dst[i * d_bytes ..][0 .. n * d_bytes]);
    dequantizeBlock(Q, D, op, &a, &src_buf, &dst_buf, 0);
    @memcpy(a.dst[i * d_bytes ..][0 .. n * d_bytes], dst_buf[0 .. n * d_bytes]);
}

const float_types = [_]DType{ .f32, .bf16 };
const quant_types = [_]DType{ .uint8, .int8, .uint4, .int4 };

fn quantize(a: *const types.QuantizeArgs, begin: usize, end: usize) callconv(.c) void {
    inline for (float_types) |S| {
        inline for (quant_types) |Q| {
            if (a.src_type == S and a.dst_type == Q) return quantizeRange(S, Q, a, begin, end);
        }
    }
}

fn dequantize(a: *const types.DequantizeArgs, begin: usize, end: usize) callconv(.c) void {
    inline for (quant_types) |Q| {
        inline for (float_types) |D| {
            if (a.src_type == Q and a.dst_type == D) {
                return switch (a.reduce_op) {
                    .add => dequantizeRange(Q, D, .add, a, begin, end),
                    else => dequantizeRange(Q, D, .set, a, begin, end),
                };
            }
        }
    }
}

fn minmaxRange(comptime S: DType, src: [*]const u8, begin: usize, end: usize) types.MinMax {
    const inf: F = @splat(std.math.inf(f32));
    var lo = inf;
    var hi = -inf;
    var i = begin;
    while (i + block <= end) : (i += block) {
        const x = loadFloats(S, src, i);
        const nan = x != x;
        lo = @min(lo, @select(f32, nan, inf, x));
        hi = @max(hi, @select(f32, nan, -inf, x));
    }
    var m = types.MinMax{ .min = @reduce(.Min, lo), .max = @reduce(.Max, hi) };
    while (i < end) : (i += 1) {
        const v = scalarFloat(S, src, i);
        if (v != v) continue;
        m.min = @min(m.min, v);
        m.max = @max(m.max, v);
    }
    return m;
}

fn scalarFloat(comptime S: DType, src: [*]const u8, i: usize) f32 {
    return switch (S) {
        .f32 => @as([*]align(1) const f32, @ptrCast(src))[i],
        .bf16 => @bitCast(@as(u32, @as([*]align(1) const u16, @ptrCast(src))[i]) << 16),
        else => @compileError("not a float type"),
    };
}

fn minmax(src: [*]const u8, src_type: DType, begin: usize, end: usize) callconv(.c) types.MinMax {
    inline for (float_types) |S| {
        if (src_type == S) return minmaxRange(S, src, begin, end);
    }
    return .{ .min = std.math.inf(f32), .max = -std.math.inf(f32) };
}

const table = types.KernelTable{
    .quantize = &quantize,
    .dequantize = &dequantize,
    .minmax = &minmax,
};

comptime {
    @export(&table, .{ .name = "piquant_kernels_" ++ options.isa });
}

test "round half to even" {
    const x: F = @splat(2.5);
    try std.testing.expectEqual(@as(f32, 2.0), types.roundHalfEven(block, x)[0]);
    const y: F = @splat(-3.5);
    try std.testing.expectEqual(@as(f32, -4.0), types.roundHalfEven(block, y)[0]);
    const big: F = @splat(16777217.0 * 2.0);
    try std.testing.expectEqual(big[0], types.roundHalfEven(block, big)[0]);
}

test "bf16 rounding ties to even" {
    const x: F = @splat(@bitCast(@as(u32, 0x3F80_8000))); // exactly halfway, even below
    try std.testing.expectEqual(@as(u16, 0x3F80), toBf16(x)[0]);
    const y: F = @splat(@bitCast(@as(u32, 0x3F81_8000))); // halfway, odd below
    try std.testing.expectEqual(@as(u16, 0x3F82), toBf16(y)[0]);
}

test "int4 pack and unpack round trip" {
    var buf: [block]u8 = undefined;
    var q: I = undefined;
    for (0..block) |k| q[k] = @as(i32, @intCast(k % 16)) - 8;
    storeQuantized(.int4, &buf, 0, q);
    try std.testing.expectEqual(q, loadQuantized(.int4, &buf, 0));
    try std.testing.expectEqual(@as(u8, 0x98), buf[0]); // -8 low, -7 high
}
