//! llama.cpp / GGUF block formats of 32 elements (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1, MXFP4), byte for byte as docs/semantics.md (GGUF block formats)
//! specifies them. The arithmetic is IEEE float32, one operation at a time,
//! and rounds with additions instead of per-ISA instructions, so every
//! variant writes the same bytes. Exports the GGUF kernel table entries
//! (`entries`), which hand the K-quants to gguf_kquants.zig.

const std = @import("std");
const types = @import("../types.zig");
const simd = @import("../simd.zig");
const floats = @import("../floats.zig");
const stream = @import("../stream.zig");
const entry = @import("../entry.zig");
const kquants = @import("gguf_kquants.zig");

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

/// Codes of a Q4 (top 15) or Q5 (top 31) block: clip(trunc(w), 0, top)
/// for finite w (always ≥ 0 here), 0 for non-finite w (what the gguf
/// package's cast gives).
fn truncCodes(w: F, comptime top: f32) @Vector(n, u8) {
    const c = @min(floorNonNegative(@max(w, splat(0))), splat(top));
    return @intFromFloat(@select(f32, isFinite(w), c, splat(0)));
}

/// Q5 codes: `qh` (bit i = bit 4 of code i, little-endian), then the nibbles.
fn storeFiveBits(dst: [*]u8, q: @Vector(n, u8)) void {
    const high: u32 = @bitCast(q >= @as(@Vector(n, u8), @splat(16)));
    std.mem.writeInt(u32, dst[0..4], high, .little);
    storeNibbles(dst + 4, q & @as(@Vector(n, u8), @splat(15)));
}

fn loadFiveBits(src: [*]const u8) F {
    const high: @Vector(n, bool) = @bitCast(std.mem.readInt(u32, src[0..4], .little));
    return loadNibbles(src + 4) + @select(f32, high, splat(16), splat(0));
}

/// E2M1 values, doubled (the E8M0 scale is halved to match).
const fp4 = [16]f32{ 0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12 };

/// MXFP4's exponent byte of a block whose largest magnitude is `amax`:
/// uint8(floor(log2f(amax)) - 2 + 127) for amax > 0, else 0 — log2
/// rounded to float32 (so just below 2^k it is k), and the low byte of the
/// int32 truncation, 0 beyond int32 (+inf), as x86-64 builds of llama.cpp do.
fn mxfp4Exponent(amax: f32) u8 {
    if (!(amax > 0)) return 0;
    const l: f32 = @floatCast(@log2(@as(f64, amax)));
    const t = (@floor(l) - 2) + 127;
    if (!(@abs(t) < 0x1p31)) return 0;
    return @truncate(@as(u32, @bitCast(@as(i32, @intFromFloat(t)))));
}

/// 2^(e - 128) exactly: float32 bits 0x00200000 << e for e < 2.
fn e8m0Half(e: u8) f32 {
    const bits: u32 = if (e < 2) @as(u32, 0x00200000) << @intCast(e) else (@as(u32, e) - 1) << 23;
    return @bitCast(bits);
}

/// MXFP4 codes: the first i minimizing |fp4[i] · d - x| (0 for NaN x).
fn fp4Codes(x: F, d: f32) @Vector(n, u8) {
    var best = @abs(splat(fp4[0] * d) - x);
    var code: @Vector(n, u8) = @splat(0);
    inline for (1..16) |i| {
        const dist = @abs(splat(fp4[i] * d) - x);
        const take = dist < best;
        best = @select(f32, take, dist, best);
        code = @select(u8, take, @as(@Vector(n, u8), @splat(i)), code);
    }
    return code;
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
        return .{ .a = if (t == .q8_0 or t == .mxfp4) @abs(first) else first, .b = first };
    }
    return switch (t) {
        .q8_0, .mxfp4 => .{ .a = extreme(n, @abs(x), true), .b = 0 },
        .q4_0, .q5_0 => blk: {
            const a = @abs(x);
            break :blk .{ .a = x[firstLane(a == splat(extreme(n, a, true)))], .b = 0 };
        },
        .q4_1, .q5_1 => .{ .a = signedZero(extreme(n, x, true), x, false), .b = signedZero(extreme(n, x, false), x, true) },
        else => unreachable,
    };
}

/// The codes of one block, given 1/d (MXFP4: d) and Q4_1/Q5_1's min, at dst.
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
        .q4_0 => storeNibbles(dst, truncCodes(x * splat(id) + splat(8.5), 15)),
        .q4_1 => storeNibbles(dst, truncCodes((x - splat(min)) * splat(id) + splat(0.5), 15)),
        .q5_0 => storeFiveBits(dst, truncCodes(x * splat(id) + splat(16.5), 31)),
        .q5_1 => storeFiveBits(dst, truncCodes((x - splat(min)) * splat(id) + splat(0.5), 31)),
        .mxfp4 => storeNibbles(dst, fp4Codes(x, id)),
        else => unreachable,
    }
}

/// Where a block's codes start: after f16 d (and f16 m), or the E8M0 byte.
fn codesOffset(t: GgufType) usize {
    return switch (t) {
        .q4_1, .q5_1 => 4,
        .mxfp4 => 1,
        else => 2,
    };
}

fn dequantizeBlock(comptime t: GgufType, src: [*]const u8) F {
    if (t == .mxfp4) {
        const b: @Vector(n / 2, u8) = src[1..][0 .. n / 2].*;
        const q: [n]u8 = std.simd.join(b & @as(@Vector(n / 2, u8), @splat(0x0F)), b >> @splat(4));
        var v: [n]f32 = undefined;
        for (&v, q) |*e, c| e.* = fp4[c];
        return splat(e8m0Half(src[0])) * @as(F, v);
    }
    const d = splat(loadHalf(src));
    switch (t) {
        .q8_0 => {
            const q: @Vector(n, i8) = @bitCast(src[2..][0..n].*);
            return @as(F, @floatFromInt(q)) * d;
        },
        .q4_0 => return d * (loadNibbles(src + 2) - splat(8)),
        .q5_0 => return d * (loadFiveBits(src + 2) - splat(16)),
        .q4_1, .q5_1 => {
            // When d·q and m are both NaN, the result is d·q's: written out,
            // because LLVM may swap the operands of the addition.
            const p = d * if (t == .q4_1) loadNibbles(src + 4) else loadFiveBits(src + 4);
            return @select(f32, p != p, p, p + splat(loadHalf(src + 2)));
        },
        else => unreachable,
    }
}

/// Blocks quantized together: their statistics first, then their scales
/// as one vector (a division and a float16 conversion for all of them),
/// then their codes. A multiple of every ISA's kernel block.
const batch = 32;

fn quantizeRange(comptime c: Case, a: *const Args, begin: usize, end: usize) void {
    if (comptime c.gguf.isKQuant()) return kquants.quantizeRange(c, a, begin, end);
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
            .q5_0 => va / @as(B, @splat(-16)),
            .q4_1 => (va - vb) / @as(B, @splat(15)),
            .q5_1 => (va - vb) / @as(B, @splat(31)),
            else => @as(B, @splat(1)), // MXFP4's scale is a power of two, per block below
        };
        const id: [batch]f32 = @select(f32, d == @as(B, @splat(0)), @as(B, @splat(0)), @as(B, @splat(1)) / d);
        var halves: [2][batch]u16 = undefined; // f16 bits of d, and of Q4_1's min
        const with_min = t == .q4_1 or t == .q5_1;
        storeHalves(&halves[0], d);
        if (with_min) storeHalves(&halves[1], vb);
        for (0..blocks) |b| {
            const out = a.dst + (i / n + b) * t.blockBytes();
            if (t == .mxfp4) {
                const e = mxfp4Exponent(sa[b]);
                out[0] = e;
                storeCodes(t, xs[b], e8m0Half(e), 0, out + 1);
                continue;
            }
            std.mem.writeInt(u16, out[0..2], halves[0][b], .little);
            if (with_min) std.mem.writeInt(u16, out[2..4], halves[1][b], .little);
            storeCodes(t, xs[b], id[b], sb[b], out + codesOffset(t));
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
    if (comptime c.gguf.isKQuant()) return kquants.dequantizeRange(c, a, begin, end);
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

/// The GGUF slots of the kernel table: float_type → blocks of `gguf`, and
/// back (float32 values, rounded or widened). Element ranges are whole
/// blocks of 32; the K-quants' ranges are described in gguf_kquants.zig.
pub const entries = .{
    .gguf_quantize = entry.kernel(.{ .float_type = DType.floats, .gguf = GgufType.all }, quantizeRange),
    .gguf_dequantize = entry.kernel(.{ .float_type = DType.floats, .gguf = GgufType.all }, dequantizeRange),
};
