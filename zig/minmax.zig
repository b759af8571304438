//! The smallest and largest non-NaN value of a range of floats, and of
//! each parameter set of a per-channel/per-group layout: what parameters
//! are computed from (params.zig; docs/semantics.md, compute_params).
//! Exports its kernel table entries (`entries`).

const std = @import("std");
const simd = @import("simd.zig");
const types = @import("types.zig");
const floats = @import("floats.zig");
const stream = @import("stream.zig");
const entry = @import("entry.zig");

const DType = types.DType;
const MinMax = types.MinMax;
const block = simd.block;
const Vec = simd.Vec;

fn rangeOf(comptime S: DType, src: [*]const u8, begin: usize, end: usize) MinMax {
    const C = S.Compute();
    const inf: Vec(C) = @splat(std.math.inf(C));
    var lo = inf;
    var hi = -inf;
    var i = begin;
    while (i < end) : (i += block) {
        var x: Vec(C) = undefined;
        if (i + block <= end) {
            stream.prefetchAhead(src, S.byteCount(i));
            x = floats.loadFloats(S, src, i);
        } else {
            // Tail: padding lanes become NaN, which is ignored.
            const n = end - i;
            var buf: [block * 8]u8 align(64) = @splat(0);
            @memcpy(buf[0..S.byteCount(n)], src[S.byteCount(i)..][0..S.byteCount(n)]);
            const used = std.simd.iota(u32, block) < @as(Vec(u32), @splat(@intCast(n)));
            x = @select(C, used, floats.loadFloats(S, &buf, 0), @as(Vec(C), @splat(std.math.nan(C))));
        }
        // x < lo is false for NaN, so NaN never replaces a bound (and this
        // is x86's minps/maxps exactly, with no NaN fix-up of @min/@max).
        lo = @select(C, x < lo, x, lo);
        hi = @select(C, x > hi, x, hi);
    }
    return .{ .min = @reduce(.Min, lo), .max = @reduce(.Max, hi) };
}

/// Runs of fewer elements than this go through the scalar loop: the vector
/// loop's setup and padded tail would cost more than they save. Runs of a
/// whole number of blocks have no tail and take the vector loop at any length.
const vector_run_min = 64;

/// The lanes of a and b (concatenated) in even (`odd` false) or odd positions.
fn halves(comptime T: type, a: Vec(T), b: Vec(T), comptime odd: bool) Vec(T) {
    comptime var mask: [block]i32 = undefined;
    inline for (&mask, 0..) |*m, k| {
        const j = 2 * k + @intFromBool(odd);
        m.* = if (j < block) j else ~@as(i32, j - block);
    }
    return @shuffle(T, a, b, mask);
}

/// Lane k of the result is the min (max) of elements k·n … k·n + n - 1 of
/// the n vectors `v` read as one sequence: log2(n) rounds of combining
/// neighbours, each of which halves a run and keeps the runs in order.
fn runReduce(comptime T: type, comptime n: usize, comptime op: std.builtin.ReduceOp, v: [n]Vec(T)) Vec(T) {
    if (n == 1) return v[0];
    var next: [n / 2]Vec(T) = undefined;
    inline for (&next, 0..) |*r, k| {
        const a = halves(T, v[2 * k], v[2 * k + 1], false);
        const b = halves(T, v[2 * k], v[2 * k + 1], true);
        r.* = if (op == .Min) @min(a, b) else @max(a, b);
    }
    return runReduce(T, n / 2, op, next);
}

/// Sets first … last - 1 of row `row` (an outer index times count) whose
/// runs have g < block elements, g a power of two: `block` sets from g
/// blocks at a time, merged into lo/hi (lo[0] is set `first`). Returns the
/// first set not done.
fn shortRuns(comptime S: DType, comptime g: usize, src: [*]const u8, row: usize, first: usize, last: usize, lo: []S.Compute(), hi: []S.Compute()) usize {
    const C = S.Compute();
    const inf: Vec(C) = @splat(std.math.inf(C));
    var s = first;
    while (s + block <= last) : (s += block) {
        const begin = (row + s) * g;
        var l: [g]Vec(C) = undefined;
        var h: [g]Vec(C) = undefined;
        inline for (0..g) |k| {
            stream.prefetchAhead(src, S.byteCount(begin + k * block));
            const x = floats.loadFloats(S, src, begin + k * block);
            // NaN is ignored: it becomes the bound's identity.
            l[k] = @select(C, x != x, inf, x);
            h[k] = @select(C, x != x, -inf, x);
        }
        const i = s - first;
        lo[i..][0..block].* = @min(@as(Vec(C), lo[i..][0..block].*), runReduce(C, g, .Min, l));
        hi[i..][0..block].* = @max(@as(Vec(C), hi[i..][0..block].*), runReduce(C, g, .Max, h));
    }
    return s;
}

/// Sets per batch: their ranges accumulate in the compute type on the
/// stack while the rows pass, and are widened once at the end.
const batch = 1024;

/// Sets [first, last) of `job` over its rows, a batch of sets at a time.
fn setRanges(comptime S: DType, job: *const types.SetRanges, first: usize, last: usize) void {
    const C = S.Compute();
    var lo_buf: [batch]C align(64) = undefined;
    var hi_buf: [batch]C align(64) = undefined;
    var b = first;
    while (b < last) : (b += batch) {
        const e = @min(last, b + batch);
        const lo = lo_buf[0 .. e - b];
        const hi = hi_buf[0 .. e - b];
        @memset(lo, std.math.inf(C));
        @memset(hi, -std.math.inf(C));
        for (job.row_begin..job.row_end) |o| {
            const row = o * job.count;
            var done = b;
            if (job.inner < block) {
                inline for (0..comptime std.math.log2_int(usize, block)) |k| {
                    if (job.inner == 1 << k) done = shortRuns(S, 1 << k, job.src, row, b, e, lo, hi);
                }
            }
            for (done..e) |s| {
                const begin = (row + s) * job.inner;
                if (job.inner >= vector_run_min or job.inner % block == 0) {
                    const r = rangeOf(S, job.src, begin, begin + job.inner);
                    lo[s - b] = @min(lo[s - b], @as(C, @floatCast(r.min)));
                    hi[s - b] = @max(hi[s - b], @as(C, @floatCast(r.max)));
                } else {
                    for (begin..begin + job.inner) |i| {
                        const x = floats.load(S, 1, job.src, i)[0];
                        if (x < lo[s - b]) lo[s - b] = x; // false for NaN: ignored
                        if (x > hi[s - b]) hi[s - b] = x;
                    }
                }
            }
        }
        // The outputs as locals: stores through job.mins could change
        // *job as far as the compiler knows, which kept this loop scalar
        // with both pointers reloaded per set (a fifth of the time at
        // group_size=8).
        const mins = job.mins[b - first ..][0..lo.len];
        const maxs = job.maxs[b - first ..][0..hi.len];
        for (mins, maxs, lo, hi) |*mn, *mx, l, h| {
            mn.* = l;
            mx.* = h;
        }
    }
}

fn minmax(src: [*]const u8, src_type: DType, begin: usize, end: usize) callconv(.c) MinMax {
    const Range = struct {
        fn run(comptime c: entry.Case, s: [*]const u8, b: usize, e: usize) MinMax {
            return rangeOf(c.float_type, s, b, e);
        }
    };
    return entry.call(MinMax, .{ .float_type = DType.floats }, .{ .float_type = src_type }, Range.run, .{ src, begin, end }) orelse
        .{ .min = std.math.inf(f64), .max = -std.math.inf(f64) };
}

fn minmaxSets(job: *const types.SetRanges, first: usize, last: usize) callconv(.c) void {
    const Sets = struct {
        fn run(comptime c: entry.Case, j: *const types.SetRanges, f: usize, l: usize) void {
            setRanges(c.float_type, j, f, l);
        }
    };
    _ = entry.call(void, .{ .float_type = DType.floats }, .{ .float_type = job.src_type }, Sets.run, .{ job, first, last });
}

/// This concern's slots of the kernel table.
pub const entries = .{
    .minmax = &minmax,
    .minmax_sets = &minmaxSets,
};

test "short runs: every power-of-two run length, sets past the last whole block, NaN" {
    const count = 2 * block + 3;
    const outer = 3;
    var x: [outer * count * block]f32 = undefined;
    for (&x, 0..) |*v, k| v.* = @as(f32, @floatFromInt((k * 7919) % 1009)) - 500;
    x[3] = std.math.nan(f32);
    x[x.len - 1] = std.math.nan(f32);
    var mins: [count]f64 = undefined;
    var maxs: [count]f64 = undefined;
    inline for (0..comptime std.math.log2_int(usize, block) + 1) |e| {
        const inner = 1 << e;
        const job = types.SetRanges{ .src = @ptrCast(&x), .src_type = .f32, .row_begin = 0, .row_end = outer, .count = count, .inner = inner, .mins = mins[1..].ptr, .maxs = maxs[1..].ptr };
        minmaxSets(&job, 1, count);
        for (1..count) |s| {
            var want = MinMax{ .min = std.math.inf(f64), .max = -std.math.inf(f64) };
            for (0..outer) |o| for (x[(o * count + s) * inner ..][0..inner]) |v| {
                if (v < want.min) want.min = v;
                if (v > want.max) want.max = v;
            };
            try std.testing.expectEqual(want, MinMax{ .min = mins[s], .max = maxs[s] });
        }
    }
}

test "ranges ignore NaN and agree between the vector and scalar paths" {
    var x: [3 * vector_run_min]f32 = undefined;
    for (&x, 0..) |*v, k| v.* = @as(f32, @floatFromInt(k % 37)) - 11;
    x[5] = std.math.nan(f32);
    x[100] = -50;
    const whole = minmax(@ptrCast(&x), .f32, 0, x.len);
    try std.testing.expectEqual(MinMax{ .min = -50, .max = 25 }, whole);
    var mins: [3]f64 = undefined;
    var maxs: [3]f64 = undefined;
    inline for (.{ 1, vector_run_min }) |inner| {
        const count = 3;
        const job = types.SetRanges{ .src = @ptrCast(&x), .src_type = .f32, .row_begin = 0, .row_end = x.len / (count * inner), .count = count, .inner = inner, .mins = &mins, .maxs = &maxs };
        minmaxSets(&job, 0, count);
        var want = [_]MinMax{.{ .min = std.math.inf(f64), .max = -std.math.inf(f64) }} ** count;
        for (x, 0..) |v, i| {
            const s = (i / inner) % count;
            if (v < want[s].min) want[s].min = v;
            if (v > want[s].max) want[s].max = v;
        }
        for (0..count) |s| try std.testing.expectEqual(want[s], MinMax{ .min = mins[s], .max = maxs[s] });
    }
}
