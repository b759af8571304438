//! llama.cpp / GGUF block formats Q8_0, Q4_0 and Q4_1, byte for byte as
//! `reference/gguf.py` specifies them (docs/semantics.md). Compiled into
//! each ISA's kernel object with kernels.zig. The arithmetic is IEEE float32,
//! one operation at a time, and rounds with additions instead of per-ISA
//! instructions, so every variant writes the same bytes.

const std = @import("std");
const types = @import("types.zig");
const kernels = @import("kernels.zig");

const DType = types.DType;
const Args = types.Args;
const GgufType = types.GgufType;

const n = types.gguf_block;
const F = @Vector(n, f32);
const parts = n / kernels.block;

fn splat(v: f32) F {
    return @splat(v);
}

/// One block of 32 elements widened (float64: rounded) to float32.
fn load(comptime S: DType, src: [*]const u8, i: usize) F {
    var a: [n]f32 = undefined;
    inline for (0..parts) |k| {
        const v = kernels.loadFloats(S, src, i + k * kernels.block);
        const w: @Vector(kernels.block, f32) = if (comptime S == .f64) @floatCast(v) else v;
        a[k * kernels.block ..][0..kernels.block].* = w;
    }
    return a;
}

fn store(comptime D: DType, dst: [*]u8, i: usize, x: F) void {
    const a: [n]f32 = x;
    inline for (0..parts) |k| {
        const v: @Vector(kernels.block, f32) = a[k * kernels.block ..][0..kernels.block].*;
        const w: @Vector(kernels.block, D.Compute()) = if (comptime D == .f64) @floatCast(v) else v;
        kernels.storeFloats(D, dst, i + k * kernels.block, w);
    }
}

/// floor(a) for a ≥ 0, exactly: adding and subtracting 2^23 rounds to the
/// nearest integer, a step down fixes the ones that went up; from 2^23 on
/// every float is an integer.
fn floorNonNegative(a: F) F {
    const magic = splat(0x1p23);
    const t = (a + magic) - magic;
    const fl = t - @select(f32, t > a, splat(1), splat(0));
    return @select(f32, a < magic, fl, a);
}

fn isFinite(v: F) @Vector(n, bool) {
    return @abs(v) <= splat(std.math.floatMax(f32));
}

/// The lowest lane where `mask` is set (n if none).
fn firstLane(mask: @Vector(n, bool)) u32 {
    const lanes = comptime std.simd.iota(u32, n);
    return @reduce(.Min, @select(u32, mask, lanes, @as(@Vector(n, u32), @splat(n))));
}

/// A zero max (negative = false) or min (true) gets the sign IEEE 754-2019
/// maximum/minimum give it: -0 < +0. Vector reductions may return either.
fn signedZero(v: f32, x: F, negative: bool) f32 {
    if (v != 0) return v;
    const sign = @as(@Vector(n, u32), @bitCast(x)) >> @splat(31);
    const wanted: @Vector(n, u32) = @splat(@intFromBool(negative));
    const holds = @reduce(.Or, (x == splat(0)) & (sign == wanted));
    return if (holds == negative) -0.0 else 0.0;
}

fn inverse(d: f32) f32 {
    return if (d == 0) 0 else 1 / d;
}

fn storeHalf(dst: [*]u8, v: f32) void {
    std.mem.writeInt(u16, dst[0..2], @bitCast(@as(f16, @floatCast(v))), .little);
}

fn loadHalf(src: [*]const u8) f32 {
    return @as(f16, @bitCast(std.mem.readInt(u16, src[0..2], .little)));
}

/// Codes of a Q4 block: clip(trunc(w), 0, 15) for finite w (always ≥ 0
/// here), 0 for non-finite w (what the gguf package's cast gives).
fn nibbleCodes(w: F) @Vector(n, u8) {
    const c = @min(floorNonNegative(@max(w, splat(0))), splat(15));
    return @intFromFloat(@select(f32, isFinite(w), c, splat(0)));
}

/// byte j = code[j] | code[j + 16] << 4.
fn storeNibbles(dst: [*]u8, q: @Vector(n, u8)) void {
    const lo = @shuffle(u8, q, undefined, std.simd.iota(i32, n / 2));
    const hi = @shuffle(u8, q, undefined, std.simd.iota(i32, n / 2) + @as(@Vector(n / 2, i32), @splat(n / 2)));
    dst[0 .. n / 2].* = lo | (hi << @splat(4));
}

fn loadNibbles(src: [*]const u8) F {
    const b: @Vector(n / 2, u8) = src[0 .. n / 2].*;
    const both = std.simd.join(b & @as(@Vector(n / 2, u8), @splat(0x0F)), b >> @splat(4));
    return @floatFromInt(both);
}

fn quantizeBlock(comptime t: GgufType, x: F, dst: [*]u8) void {
    const nan = x != x;
    const has_nan = @reduce(.Or, nan);
    switch (t) {
        .q8_0 => {
            const a = @abs(x);
            const amax = if (has_nan) a[firstLane(nan)] else @reduce(.Max, a);
            const d = amax / 127;
            const v = x * splat(inverse(d));
            const av = @abs(v);
            const fl = floorNonNegative(av);
            var r = fl + @select(f32, av - fl >= splat(0.5), splat(1), splat(0)); // half away from zero
            r = @select(f32, v < splat(0), -r, r);
            r = @select(f32, isFinite(v), r, splat(0));
            const q: @Vector(n, i32) = @intFromFloat(r); // |r| ≤ 127: d ≥ 2^-128 whenever 1/d is finite
            storeHalf(dst, d);
            dst[2..][0..n].* = @bitCast(@as(@Vector(n, i8), @truncate(q)));
        },
        .q4_0 => {
            // The element of largest magnitude, the first on ties (or the first NaN).
            const a = @abs(x);
            const at = if (has_nan) firstLane(nan) else firstLane(a == @as(F, @splat(@reduce(.Max, a))));
            const d = x[at] / -8;
            storeHalf(dst, d);
            storeNibbles(dst + 2, nibbleCodes(x * splat(inverse(d)) + splat(8.5)));
        },
        .q4_1 => {
            const max = if (has_nan) x[firstLane(nan)] else signedZero(@reduce(.Max, x), x, false);
            const min = if (has_nan) x[firstLane(nan)] else signedZero(@reduce(.Min, x), x, true);
            const d = (max - min) / 15;
            storeHalf(dst, d);
            storeHalf(dst + 2, min);
            storeNibbles(dst + 4, nibbleCodes((x - splat(min)) * splat(inverse(d)) + splat(0.5)));
        },
        _ => unreachable,
    }
}

fn dequantizeBlock(comptime t: GgufType, src: [*]const u8) F {
    const d = splat(loadHalf(src));
    switch (t) {
        .q8_0 => {
            const q: @Vector(n, i8) = @bitCast(src[2..][0..n].*);
            return @as(F, @floatFromInt(q)) * d;
        },
        .q4_0 => return d * (loadNibbles(src + 2) - splat(8)),
        .q4_1 => {
            // When d·q and m are both NaN, the result is d·q's: written out,
            // because LLVM may swap the operands of the addition.
            const p = d * loadNibbles(src + 4);
            return @select(f32, p != p, p, p + splat(loadHalf(src + 2)));
        },
        _ => unreachable,
    }
}

fn quantizeRange(comptime S: DType, comptime t: GgufType, a: *const Args, begin: usize, end: usize) void {
    var i = begin;
    while (i < end) : (i += n) {
        kernels.prefetchAhead(a.src, S.byteCount(i));
        quantizeBlock(t, load(S, a.src, i), a.dst + i / n * t.blockBytes());
    }
}

fn dequantizeRange(comptime D: DType, comptime t: GgufType, a: *const Args, begin: usize, end: usize) void {
    var i = begin;
    while (i < end) : (i += n) {
        kernels.prefetchAhead(a.src, i / n * t.blockBytes());
        store(D, a.dst, i, dequantizeBlock(t, a.src + i / n * t.blockBytes()));
    }
}

/// Elements [begin, end) of a call, whole blocks: float_type → blocks of `gguf`.
pub fn quantize(a: *const Args, begin: usize, end: usize) callconv(.c) void {
    inline for (DType.floats) |S| {
        inline for (GgufType.all) |t| {
            if (a.float_type == S and a.gguf == t) return quantizeRange(S, t, a, begin, end);
        }
    }
}

/// Blocks of `gguf` → float_type (float32 values, rounded or widened), for elements [begin, end).
pub fn dequantize(a: *const Args, begin: usize, end: usize) callconv(.c) void {
    inline for (DType.floats) |D| {
        inline for (GgufType.all) |t| {
            if (a.float_type == D and a.gguf == t) return dequantizeRange(D, t, a, begin, end);
        }
    }
}
