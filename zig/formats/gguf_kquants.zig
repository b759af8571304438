//! llama.cpp's K-quants Q4_K, Q5_K and Q6_K: super-blocks of 256 elements
//! in the bytes of `quantize_row_q4_K_ref` & co. without an importance
//! matrix, as docs/semantics.md (K-quants) specifies them.
//!
//! A super-block is transposed so that lane j of a vector holds sub-block j
//! (8 of 32 elements, or Q6_K's 16 of 16): every sum and scan of llama.cpp's
//! loops then runs over one sub-block's elements in their order, one IEEE
//! float32 operation at a time, with the sub-blocks side by side. No
//! reduction crosses lanes, so every ISA variant computes the same bytes
//! from the same code; only the registers a vector takes differ.

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

const qk = types.gguf_super_block;
/// GROUP_MAX_EPS: below it a Q6_K sub-block (or super-block) is all zeros.
const eps: f32 = 1e-15;

fn Floats(comptime m: usize) type {
    return @Vector(m, f32);
}

fn Ints(comptime m: usize) type {
    return @Vector(m, i32);
}

/// llama.cpp's nearest_int: the low 23 bits of v + 1.5·2^23, which round
/// half to even for |v| < 2^22 (and give what the bits give beyond).
fn nearestInt(comptime m: usize, v: Floats(m)) Ints(m) {
    const bits: Ints(m) = @bitCast(v + @as(Floats(m), @splat(12582912)));
    return (bits & @as(Ints(m), @splat(0x7FFFFF))) - @as(Ints(m), @splat(0x400000));
}

/// clip(nearest_int(v), lo, hi) as floats (small integers, exact).
fn code(comptime m: usize, v: Floats(m), comptime lo: i32, comptime hi: i32) Floats(m) {
    const q = @max(@min(nearestInt(m, v), @as(Ints(m), @splat(hi))), @as(Ints(m), @splat(lo)));
    return @floatFromInt(q);
}

fn both(comptime m: usize, a: @Vector(m, bool), b: @Vector(m, bool)) @Vector(m, bool) {
    return @select(bool, a, b, @as(@Vector(m, bool), @splat(false)));
}

/// The scan `if (v[j] > r) r = v[j]` over the lanes from 0, and the lane
/// of `carry` at the last replacement (0 if none).
fn scanMax(comptime m: usize, v: Floats(m), carry: Floats(m)) [2]f32 {
    var r: f32 = 0;
    var c: f32 = 0;
    inline for (0..m) |j| {
        if (v[j] > r) {
            r = v[j];
            c = carry[j];
        }
    }
    return .{ r, c };
}

fn toHalf(v: f32) u16 {
    return @bitCast(@as(f16, @floatCast(v)));
}

fn halfValue(h: u16) f32 {
    return @as(f16, @bitCast(h));
}

fn fromHalf(src: [*]const u8) f32 {
    return halfValue(std.mem.readInt(u16, src[0..2], .little));
}

/// A super-block of m sub-blocks as rows of m lanes: x[i][j] = element
/// (256 / m)·j + i, widened (float64: rounded) to float32.
fn loadTransposed(comptime S: DType, comptime m: usize, src: [*]const u8, at: usize) [qk / m]Floats(m) {
    var flat: [qk]f32 = undefined;
    inline for (0..qk / block) |k| {
        const v = floats.loadFloats(S, src, at + k * block);
        flat[k * block ..][0..block].* = if (comptime S == .f64) @as(@Vector(block, f32), @floatCast(v)) else v;
    }
    var rows: [qk / m][m]f32 = undefined;
    for (0..qk / m) |i| {
        inline for (0..m) |j| rows[i][j] = flat[(qk / m) * j + i];
    }
    var x: [qk / m]Floats(m) = undefined;
    for (&x, rows) |*v, r| v.* = r;
    return x;
}

/// The codes back in element order: code k = L[k % len][k / len].
fn untranspose(comptime m: usize, L: *const [qk / m]Floats(m)) [qk]u8 {
    var q: [qk]u8 = undefined;
    for (L, 0..) |v, i| {
        const c: [m]u8 = @as(@Vector(m, u8), @intFromFloat(v));
        inline for (0..m) |j| q[(qk / m) * j + i] = c[j];
    }
    return q;
}

/// make_qkx2_quants for the 8 sub-blocks of 32 side by side (lanes):
/// codes into L, and (scale, -min) per lane.
fn makeQkx2(x: *const [32]Floats(8), w: *const [32]Floats(8), comptime nmax: i32, comptime rmin: f32, comptime nstep: u32, L: *[32]Floats(8)) [2]Floats(8) {
    const V = Floats(8);
    const zero: V = @splat(0);
    var mn = x[0];
    var mx = x[0];
    for (x[1..]) |v| {
        mn = @select(f32, v < mn, v, mn);
        mx = @select(f32, v > mx, v, mx);
    }
    mn = @select(f32, mn > zero, zero, mn);
    const flat = mx == mn;
    var sw = w[0];
    var sx = w[0] * x[0];
    for (1..32) |i| {
        sw += w[i];
        sx += w[i] * x[i];
    }
    var iscale = @as(V, @splat(@floatFromInt(nmax))) / (mx - mn);
    var scale = @as(V, @splat(1)) / iscale;
    var best = zero;
    for (0..32) |i| {
        L[i] = code(8, iscale * (x[i] - mn), 0, nmax);
        const diff = scale * L[i] + mn - x[i];
        best += w[i] * (diff * diff);
    }
    var step: u32 = 0;
    while (step <= nstep) : (step += 1) {
        // An accepted step's min moves the grid of every later step.
        const s = rmin + @as(f32, 0.1) * @as(f32, @floatFromInt(step)) + @as(f32, @floatFromInt(nmax));
        iscale = @as(V, @splat(s)) / (mx - mn);
        var trial: [32]V = undefined;
        var sl = zero;
        var sl2 = zero;
        var sxl = zero;
        for (0..32) |i| {
            trial[i] = code(8, iscale * (x[i] - mn), 0, nmax);
            const wl = w[i] * trial[i];
            sl += wl;
            sl2 += wl * trial[i];
            sxl += wl * x[i];
        }
        const det = sw * sl2 - sl * sl;
        const positive_min = (sl2 * sx - sl * sxl) / det > zero;
        const this_scale = @select(f32, positive_min, sxl / sl2, (sw * sxl - sx * sl) / det);
        const this_min = @select(f32, positive_min, zero, (sl2 * sx - sl * sxl) / det);
        var cur = zero;
        for (0..32) |i| {
            const diff = this_scale * trial[i] + this_min - x[i];
            cur += w[i] * (diff * diff);
        }
        const take = both(8, det > zero, cur < best);
        for (L, trial) |*l, t| l.* = @select(f32, take, t, l.*);
        best = @select(f32, take, cur, best);
        scale = @select(f32, take, this_scale, scale);
        mn = @select(f32, take, this_min, mn);
    }
    for (L) |*l| l.* = @select(f32, flat, zero, l.*);
    return .{ @select(f32, flat, zero, scale), -mn };
}

/// min(63, nearest_int(v) mod 256).
fn sixBits(v: Floats(8)) @Vector(8, u8) {
    const q = nearestInt(8, v) & @as(Ints(8), @splat(0xFF));
    return @intCast(@min(q, @as(Ints(8), @splat(63))));
}

/// One Q4_K or Q5_K super-block.
fn quantizeQk(comptime t: GgufType, x: *const [32]Floats(8), out: [*]u8) void {
    const V = Floats(8);
    const nmax: i32, const rmin: f32, const nstep: u32 = if (t == .q4_k) .{ 15, -1, 20 } else .{ 31, -0.5, 15 };
    var sum_x2: V = @splat(0);
    for (x) |v| sum_x2 += v * v;
    const av_x = @sqrt(sum_x2 / @as(V, @splat(32)));
    var w: [32]V = undefined;
    for (&w, x) |*wi, v| wi.* = av_x + @abs(v);
    var L: [32]V = undefined;
    const r = makeQkx2(x, &w, nmax, rmin, nstep, &L);
    const max_scale = scanMax(8, r[0], r[0])[0];
    const max_min = scanMax(8, r[1], r[1])[0];
    const inv_scale: f32 = if (max_scale > 0) 63 / max_scale else 0;
    const inv_min: f32 = if (max_min > 0) 63 / max_min else 0;
    const ls = sixBits(@as(V, @splat(inv_scale)) * r[0]);
    const lm = sixBits(@as(V, @splat(inv_min)) * r[1]);
    const d = toHalf(max_scale / 63);
    const dmin = toHalf(max_min / 63);
    const dj = @as(V, @splat(halfValue(d))) * @as(V, @floatFromInt(ls));
    const dm = @as(V, @splat(halfValue(dmin))) * @as(V, @floatFromInt(lm));
    const coded = dj != @as(V, @splat(0));
    for (&L, x) |*l, v| l.* = @select(f32, coded, code(8, (v + dm) / dj, 0, nmax), l.*);

    std.mem.writeInt(u16, out[0..2], d, .little);
    std.mem.writeInt(u16, out[2..4], dmin, .little);
    const s: [8]u8 = ls;
    const mins: [8]u8 = lm;
    for (0..4) |k| {
        out[4 + k] = s[k] | (s[k + 4] >> 4) << 6;
        out[8 + k] = mins[k] | (mins[k + 4] >> 4) << 6;
        out[12 + k] = (s[k + 4] & 15) | (mins[k + 4] & 15) << 4;
    }
    const q = untranspose(8, &L);
    const B = @Vector(32, u8);
    var codes = out + 16;
    if (t == .q5_k) {
        var qh: B = @splat(0);
        inline for (0..8) |g| qh |= (@as(B, q[32 * g ..][0..32].*) >> @splat(4)) << @splat(@as(u3, g));
        out[16..48].* = qh;
        codes = out + 48;
    }
    const low: B = @splat(15);
    for (0..4) |c| {
        const lo: B = q[64 * c ..][0..32].*;
        const hi: B = q[64 * c + 32 ..][0..32].*;
        codes[32 * c ..][0..32].* = (lo & low) | (hi & low) << @splat(4);
    }
}

/// One Q6_K super-block: make_qx_quants (rmse_type 1, no weights) for its
/// 16 sub-blocks of 16 side by side, then the int8 scales.
fn quantizeQ6(x: *const [16]Floats(16), out: [*]u8) void {
    const V = Floats(16);
    const zero: V = @splat(0);
    var amax = zero;
    var mx = zero;
    var w: [16]V = undefined;
    var wx: [16]V = undefined;
    for (x, 0..) |v, i| {
        const a = @abs(v);
        const take = a > amax;
        amax = @select(f32, take, a, amax);
        mx = @select(f32, take, v, mx);
        w[i] = v * v;
        wx[i] = w[i] * v;
    }
    var L: [16]V = undefined;
    var scale = zero;
    var best = zero;
    inline for (0..19) |k| {
        // llama.cpp's is = -9 … 9 after the plain -nmax / max.
        const s: f32 = if (k == 0) -32 else -(@as(f32, 32) + @as(f32, 0.1) * @as(f32, @floatFromInt(if (k < 10) @as(i32, k) - 10 else @as(i32, k) - 9)));
        const iscale = @as(V, @splat(s)) / mx;
        var trial: [16]V = undefined;
        var sumlx = zero;
        var suml2 = zero;
        for (0..16) |i| {
            trial[i] = code(16, iscale * x[i], -32, 31);
            sumlx += wx[i] * trial[i];
            suml2 += w[i] * trial[i] * trial[i];
        }
        if (k == 0) {
            scale = @select(f32, suml2 != zero, sumlx / suml2, zero);
            best = scale * sumlx;
            L = trial;
        } else {
            const take = both(16, suml2 > zero, sumlx * sumlx > best * suml2);
            for (&L, trial) |*l, tr| l.* = @select(f32, take, tr, l.*);
            scale = @select(f32, take, sumlx / suml2, scale);
            best = @select(f32, take, scale * sumlx, best);
        }
    }
    const flat = amax < @as(V, @splat(eps));
    scale = @select(f32, flat, zero, scale);
    for (&L) |*l| l.* = @select(f32, flat, @as(V, @splat(-32)), l.*);

    const top = scanMax(16, @abs(scale), scale);
    if (top[0] < eps) {
        @memset(out[0..210], 0);
        return;
    }
    const iscale = -128 / top[1];
    const d = toHalf(1 / iscale);
    const sc: @Vector(16, i8) = @truncate(@min(nearestInt(16, @as(V, @splat(iscale)) * scale), @as(Ints(16), @splat(127))));
    const dj = @as(V, @splat(halfValue(d))) * @as(V, @floatFromInt(sc));
    const coded = dj != zero;
    for (&L, x) |*l, v| l.* = @select(f32, coded, code(16, v / dj, -32, 31), l.*);
    for (&L) |*l| l.* += @as(V, @splat(32));

    const q = untranspose(16, &L);
    const B = @Vector(32, u8);
    const low: B = @splat(15);
    for (0..2) |c| {
        const q0: B = q[128 * c ..][0..32].*;
        const q1: B = q[128 * c + 32 ..][0..32].*;
        const q2: B = q[128 * c + 64 ..][0..32].*;
        const q3: B = q[128 * c + 96 ..][0..32].*;
        out[64 * c ..][0..32].* = (q0 & low) | (q2 & low) << @splat(4);
        out[64 * c + 32 ..][0..32].* = (q1 & low) | (q3 & low) << @splat(4);
        out[128 + 32 * c ..][0..32].* = q0 >> @splat(4) | (q1 >> @splat(4)) << @splat(2) | (q2 >> @splat(4)) << @splat(4) | (q3 >> @splat(4)) << @splat(6);
    }
    out[192..208].* = @bitCast(sc);
    std.mem.writeInt(u16, out[208..210], d, .little);
}

/// The super-blocks that start in [begin, end): the pool splits calls at
/// multiples of 64 elements, and every super-block starts in one range.
pub fn quantizeRange(comptime c: Case, a: *const Args, begin: usize, end: usize) void {
    const S = c.float_type;
    const t = c.gguf;
    var k = std.math.divCeil(usize, begin, qk) catch unreachable;
    const last = std.math.divCeil(usize, end, qk) catch unreachable;
    while (k < last) : (k += 1) {
        stream.prefetchAhead(a.src, S.byteCount(k * qk));
        const out = a.dst + k * t.blockBytes();
        switch (t) {
            .q4_k, .q5_k => quantizeQk(t, &loadTransposed(S, 8, a.src, k * qk), out),
            .q6_k => quantizeQ6(&loadTransposed(S, 16, a.src, k * qk), out),
            else => unreachable,
        }
    }
}

/// The `block` values from element i (a multiple of `block`, which divides
/// 32) of a call. Within 32 elements a K-quant's code bytes are contiguous.
fn dequantizePart(comptime t: GgufType, src: [*]const u8, i: usize) @Vector(block, f32) {
    const V = @Vector(block, f32);
    const U = @Vector(block, u8);
    const sb = src + i / qk * t.blockBytes();
    const e = i % qk;
    const j = e / 32; // the group of 32
    const off = e % 32;
    switch (t) {
        .q4_k, .q5_k => {
            const s = sb + 4;
            const ls, const lm = if (j < 4) .{ s[j] & 63, s[j + 4] & 63 } else .{ (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, (s[j + 4] >> 4) | (s[j] >> 6) << 4 };
            const bytes: U = (sb + (if (t == .q5_k) 48 else 16) + 32 * (j / 2) + off)[0..block].*;
            var q = if (j % 2 == 0) bytes & @as(U, @splat(15)) else bytes >> @splat(4);
            if (t == .q5_k) {
                const h: U = (sb + 16 + off)[0..block].*;
                q |= ((h >> @splat(@as(u3, @intCast(j)))) & @as(U, @splat(1))) << @splat(4);
            }
            const dj = fromHalf(sb) * @as(f32, @floatFromInt(ls));
            const mj = fromHalf(sb + 2) * @as(f32, @floatFromInt(lm));
            return @as(V, @splat(dj)) * @as(V, @floatFromInt(q)) - @as(V, @splat(mj));
        },
        .q6_k => {
            const half = j / 4;
            const quarter = j % 4;
            const lb: U = (sb + 64 * half + 32 * (quarter & 1) + off)[0..block].*;
            const lo = if (quarter >= 2) lb >> @splat(4) else lb & @as(U, @splat(15));
            const hb: U = (sb + 128 + 32 * half + off)[0..block].*;
            const hi = (hb >> @splat(@as(u3, @intCast(2 * quarter)))) & @as(U, @splat(3));
            const q = @as(V, @floatFromInt(lo | hi << @splat(4))) - @as(V, @splat(32));
            const sc: [*]const i8 = @ptrCast(sb + 192);
            const d = fromHalf(sb + 208);
            // Sub-blocks of 16: the lanes from 16 - off % 16 on are the next one's.
            const first = d * @as(f32, @floatFromInt(sc[e / 16]));
            const next = d * @as(f32, @floatFromInt(sc[@min(e / 16 + 1, 15)]));
            const lanes = std.simd.iota(u32, block) + @as(@Vector(block, u32), @splat(@intCast(off % 16)));
            return @select(f32, lanes < @as(@Vector(block, u32), @splat(16)), @as(V, @splat(first)), @as(V, @splat(next))) * q;
        },
        else => unreachable,
    }
}

pub fn dequantizeRange(comptime c: Case, a: *const Args, begin: usize, end: usize) void {
    const D = c.float_type;
    const t = c.gguf;
    const Emit = struct {
        src: [*]const u8,
        pub fn emit(em: @This(), dst: [*]u8, i: usize) void {
            const v = dequantizePart(t, em.src, i);
            floats.storeFloats(D, dst, i, if (comptime D == .f64) @as(@Vector(block, f64), v) else v);
        }
        pub fn prefetch(em: @This(), i: usize) void {
            stream.prefetchAhead(em.src, i / qk * t.blockBytes());
        }
    };
    const em = Emit{ .src = a.src };
    var i = begin;
    if (a.stream != 0) i = stream.streamGroups(D.bits(), a.dst, begin, end, em);
    while (i < end) : (i += block) {
        em.prefetch(i);
        em.emit(a.dst, i);
    }
}
