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
/// loop's setup and padded tail would cost more than they save.
const vector_run_min = 64;

/// Sets [first, last) of `job`: each set's runs, one per outer index.
fn setRanges(comptime S: DType, job: *const types.SetRanges, first: usize, last: usize) void {
    for (first..last) |s| {
        job.mins[s] = std.math.inf(f64);
        job.maxs[s] = -std.math.inf(f64);
    }
    for (0..job.outer) |o| {
        for (first..last) |s| {
            const begin = (o * job.count + s) * job.inner;
            var lo = job.mins[s];
            var hi = job.maxs[s];
            if (job.inner >= vector_run_min) {
                const r = rangeOf(S, job.src, begin, begin + job.inner);
                lo = @min(lo, r.min);
                hi = @max(hi, r.max);
            } else {
                for (begin..begin + job.inner) |i| {
                    const x: f64 = floats.load(S, 1, job.src, i)[0];
                    if (x < lo) lo = x; // false for NaN: ignored
                    if (x > hi) hi = x;
                }
            }
            job.mins[s] = lo;
            job.maxs[s] = hi;
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
        const job = types.SetRanges{ .src = @ptrCast(&x), .src_type = .f32, .outer = x.len / (count * inner), .count = count, .inner = inner, .mins = &mins, .maxs = &maxs };
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
