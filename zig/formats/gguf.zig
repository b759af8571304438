//! llama.cpp / GGUF block formats Q8_0, Q4_0 and Q4_1, byte for byte as
//! docs/semantics.md (GGUF block formats) specifies them. The arithmetic is
//! IEEE float32, one operation at a time, and rounds with additions instead
//! of per-ISA instructions, so every variant writes the same bytes. Exports
//! its kernel table entries (`entries`).

const std = @import("std");
const types = @import("../types.zig");
const simd = @import("../simd.zig");
const floats = @import("../floats.zig");
const stream = @import("../stream.zig");
const entry = @import("../entry.zig");

const DType = types.DType;
const Args = types.Args;
const GgufType = types.GgufType;
const Case = entry.Case;
const block = simd.block;

const n = types.gguf_block;
const F = @Vector(n, f32);
const parts = n / block;

fn splat(v: f32) F {
    return @splat(v);
}

/// One block of 32 elements widened (float64: rounded) to float32.
fn load(comptime S: DType, src: [*]const u8, i: usize) F {
    var a: [n]f32 = undefined;
    inline for (0..parts) |k| {
        const v = floats.loadFloats(S, src, i + k * block);
        const w: @Vector(block, f32) = if (comptime S == .f64) @floatCast(v) else v;
        a[k * block ..][0..block].* = w;
    }
    return a;
}

fn store(comptime D: DType, dst: [*]u8, i: usize, x: F) void {
    const a: [n]f32 = x;
    inline for (0..parts) |k| {
        const v: @Vector(block, f32) = a[k * block ..][0..block].*;
        const w: @Vector(block, D.Compute()) = if (comptime D == .f64) @floatCast(v) else v;
        floats.storeFloats(D, dst, i + k * block, w);
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

/// The largest (`max`) or smallest lane of a vector without NaN: halves
/// compared with selects, which compile to one max/min instruction each
/// (@reduce(.Max) adds NaN handling we do not need here).
fn extreme(comptime m: usize, v: @Vector(m, f32), comptime max: bool) f32 {
    if (m == 1) return v[0];
    const h = m / 2;
    const lo = @shuffle(f32, v, undefined, std.simd.iota(i32, h));
    const hi = @shuffle(f32, v, undefined, std.simd.iota(i32, h) + @as(@Vector(h, i32), @splat(h)));
    return extreme(h, @select(f32, if (max) lo > hi else lo < hi, lo, hi), max);
}

/// What a block's scale is computed from: Q8_0 max |x|; Q4_0 the element
/// of largest magnitude (the first on ties); Q4_1 max and min. A block with
/// a NaN gives its first NaN for each.
const Stats = struct { a: f32, b: f32 };

fn blockStats(comptime t: GgufType, x: F) Stats {
    const nan = x != x;
    if (@reduce(.Or, nan)) {
        const first = x[firstLane(nan)];
        return .{ .a = if (t == .q8_0) @abs(first) else first, .b = first };
    }
    return switch (t) {
        .q8_0 => .{ .a = extreme(n, @abs(x), true), .b = 0 },
        .q4_0 => blk: {
            const a = @abs(x);
            break :blk .{ .a = x[firstLane(a == splat(extreme(n, a, true)))], .b = 0 };
        },
        .q4_1 => .{ .a = signedZero(extreme(n, x, true), x, false), .b = signedZero(extreme(n, x, false), x, true) },
        _ => unreachable,
    };
}

/// The codes of one block, given 1/d (and Q4_1's min), at dst.
fn storeCodes(comptime t: GgufType, x: F, id: f32, min: f32, dst: [*]u8) void {
    switch (t) {
        .q8_0 => {
            const v = x * splat(id);
            const av = @abs(v);
            const fl = floorNonNegative(av);
            var r = fl + @select(f32, av - fl >= splat(0.5), splat(1), splat(0)); // half away from zero
            r = @select(f32, v < splat(0), -r, r);
            r = @select(f32, isFinite(v), r, splat(0));
            const q: @Vector(n, i32) = @intFromFloat(r); // |r| ≤ 127: d ≥ 2^-128 whenever 1/d is finite
            dst[0..n].* = @bitCast(@as(@Vector(n, i8), @truncate(q)));
        },
        .q4_0 => storeNibbles(dst, nibbleCodes(x * splat(id) + splat(8.5))),
        .q4_1 => storeNibbles(dst, nibbleCodes((x - splat(min)) * splat(id) + splat(0.5))),
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

/// Blocks quantized together: their statistics first, then their scales
/// as one vector (a division and a float16 conversion for all of them),
/// then their codes. A multiple of every ISA's kernel block.
const batch = 32;

fn quantizeRange(comptime c: Case, a: *const Args, begin: usize, end: usize) void {
    const S = c.float_type;
    const t = c.gguf;
    const B = @Vector(batch, f32);
    var i = begin;
    while (i < end) {
        const blocks: usize = @min(batch, (end - i) / n); // usize: @min would narrow it to u6
        var xs: [batch]F = undefined;
        var sa: [batch]f32 = @splat(1);
        var sb: [batch]f32 = @splat(0);
        for (0..blocks) |b| {
            stream.prefetchAhead(a.src, S.byteCount(i + b * n));
            xs[b] = load(S, a.src, i + b * n);
            const st = blockStats(t, xs[b]);
            sa[b] = st.a;
            sb[b] = st.b;
        }
        const va: B = sa;
        const vb: B = sb;
        const d: B = switch (t) {
            .q8_0 => va / @as(B, @splat(127)),
            .q4_0 => va / @as(B, @splat(-8)),
            else => (va - vb) / @as(B, @splat(15)),
        };
        const id: [batch]f32 = @select(f32, d == @as(B, @splat(0)), @as(B, @splat(0)), @as(B, @splat(1)) / d);
        var halves: [2][batch]u16 = undefined; // f16 bits of d, and of Q4_1's min
        storeHalves(&halves[0], d);
        if (t == .q4_1) storeHalves(&halves[1], vb);
        for (0..blocks) |b| {
            const out = a.dst + (i / n + b) * t.blockBytes();
            std.mem.writeInt(u16, out[0..2], halves[0][b], .little);
            if (t == .q4_1) std.mem.writeInt(u16, out[2..4], halves[1][b], .little);
            storeCodes(t, xs[b], id[b], sb[b], out + if (t == .q4_1) 4 else 2);
        }
        i += blocks * n;
    }
}

/// float16 bits of a batch of values, converted by the ISA's vector code.
fn storeHalves(dst: *[batch]u16, v: @Vector(batch, f32)) void {
    const a: [batch]f32 = v;
    inline for (0..batch / block) |k| {
        const part: @Vector(block, f32) = a[k * block ..][0..block].*;
        floats.storeFloats(.f16, @ptrCast(dst), k * block, part);
    }
}

fn dequantizeRange(comptime c: Case, a: *const Args, begin: usize, end: usize) void {
    const D = c.float_type;
    const t = c.gguf;
    // Written a kernel block at a time (part of a GGUF block), the unit of
    // the streaming stores that large outputs use.
    const Emit = struct {
        src: [*]const u8,
        pub fn emit(e: @This(), dst: [*]u8, k: usize) void {
            const x: [n]f32 = dequantizeBlock(t, e.src + k / n * t.blockBytes());
            const part: @Vector(block, f32) = x[k % n ..][0..block].*;
            const w: @Vector(block, D.Compute()) = if (comptime D == .f64) @floatCast(part) else part;
            floats.storeFloats(D, dst, k, w);
        }
        pub fn prefetch(e: @This(), k: usize) void {
            stream.prefetchAhead(e.src, k / n * t.blockBytes());
        }
    };
    const e = Emit{ .src = a.src };
    var i = begin;
    if (a.stream != 0) i = stream.streamGroups(D.bits(), a.dst, begin, end, e);
    while (i < end) : (i += block) {
        e.prefetch(i);
        e.emit(a.dst, i);
    }
}

/// This family's slots of the kernel table. Element ranges are whole
/// blocks: float_type → blocks of `gguf`, and back (float32 values,
/// rounded or widened).
pub const entries = .{
    .gguf_quantize = entry.kernel(.{ .float_type = DType.floats, .gguf = GgufType.all }, quantizeRange),
    .gguf_dequantize = entry.kernel(.{ .float_type = DType.floats, .gguf = GgufType.all }, dequantizeRange),
};
