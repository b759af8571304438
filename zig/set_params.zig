//! compute_params per channel or group: the parameters of many sets from
//! their ranges, a block of sets at a time. The same arithmetic as
//! params.fromRange, lane by lane (docs/semantics.md, compute_params).
//! Exports its kernel table entry (`entries`).

const std = @import("std");
const types = @import("types.zig");
const simd = @import("simd.zig");
const soft = @import("simd/soft.zig");
const params = @import("params.zig");

const DType = types.DType;
const w = simd.block;

/// What fromRange derives from the quantized type alone, once per call.
fn Consts(comptime C: type) type {
    return struct {
        kind: enum { float8, symmetric, affine },
        /// float8: the type's largest value; else qmax - qmin rounded to C.
        width: C,
        half: C,
        qmin: i64,
        qmax: i64,
        /// The symmetric scheme's zero point.
        zp: i64,
        /// Zero points computed in i32 (≤16-bit types) or f64.
        narrow: bool,

        fn of(q: DType, symmetric: bool) @This() {
            const width: C = if (q.isFloat8()) (if (q == .float8_e4m3fn) 448 else 57344) else @floatFromInt(q.qmax() - q.qmin());
            return .{
                .kind = if (q.isFloat8()) .float8 else if (symmetric) .symmetric else .affine,
                .width = width,
                .half = width / 2,
                .qmin = @intCast(q.qmin()),
                .qmax = @intCast(q.qmax()),
                .zp = if (q.isSigned()) 0 else @intCast(@divFloor(q.qmin() + q.qmax() + 1, 2)),
                .narrow = q.bits() <= 16,
            };
        }
    };
}

fn splat(comptime T: type, v: T) @Vector(w, T) {
    return @splat(v);
}

/// Sets k … k + w - 1: false, writing nothing, if one has no parameters.
inline fn vectorSets(comptime C: type, c: Consts(C), job: *const types.SetParams, k: usize) bool {
    const V = @Vector(w, C);
    const F = @Vector(w, f64);
    const inf = std.math.inf(f64);
    const mn64: F = job.mins[k..][0..w].*;
    const mx64: F = job.maxs[k..][0..w].*;
    const mn: V = @floatCast(mn64);
    const mx: V = @floatCast(mx64);
    const zero = splat(C, 0);
    // No non-NaN value: the range (+inf, -inf), treated as {0}.
    const empty = mn > mx;
    const lo = @select(C, empty, zero, @min(mn, zero));
    const hi = @select(C, empty, zero, @max(mx, zero));
    var scale: V = undefined;
    var zp: @Vector(w, i64) = undefined;
    switch (c.kind) {
        .float8 => {
            const amax = @max(-lo, hi);
            scale = @select(C, amax == zero, splat(C, 1), @max(amax / splat(C, c.width), splat(C, std.math.floatMin(C))));
            zp = @splat(0);
        },
        .symmetric => {
            scale = @max(@max(-lo, hi) / splat(C, c.half), splat(C, std.math.floatEps(C)));
            zp = @splat(c.zp);
        },
        .affine => {
            scale = @max((hi - lo) / splat(C, c.width), splat(C, std.math.floatEps(C)));
            // |lo / scale| ≤ width (plus rounding) where scale is finite;
            // the bound only keeps the conversion defined in the others
            // (an infinite set gives NaN here), so it must fit the integer
            // type converted to: i32 on the narrow path.
            const bound: C = if (c.narrow) -0x1p30 else -0x1p40;
            const r = @max(soft.roundEven(w, C, lo / scale), splat(C, bound));
            if (c.narrow) {
                const d = @as(@Vector(w, i32), @splat(@intCast(c.qmin))) - @as(@Vector(w, i32), @intFromFloat(r));
                zp = @min(@max(d, splat(i32, @intCast(c.qmin))), splat(i32, @intCast(c.qmax)));
            } else {
                const d = splat(f64, @floatFromInt(c.qmin)) - @as(F, @floatCast(r)); // integers below 2^53: exact
                zp = @intFromFloat(@min(@max(d, splat(f64, @floatFromInt(c.qmin))), splat(f64, @floatFromInt(c.qmax))));
            }
        },
    }
    const one = splat(u8, 1);
    const none = splat(u8, 0);
    var bad = @select(u8, mn64 == splat(f64, -inf), one, none);
    bad |= @select(u8, mx64 == splat(f64, inf), one, none);
    bad |= @select(u8, scale <= splat(C, std.math.floatMax(C)), none, one);
    if (@reduce(.Or, bad) != 0) return false;
    if (job.scale_type == .f32) {
        @as([*]align(1) f32, @ptrCast(job.scales))[k..][0..w].* = @as(@Vector(w, f32), @floatCast(scale));
    } else @as([*]align(1) f64, @ptrCast(job.scales))[k..][0..w].* = @as(F, @floatCast(scale));
    job.zero_points[k..][0..w].* = zp;
    return true;
}

/// Stores scale k as the job's scale type (f32 only where C is f32: exact).
fn storeScale(job: *const types.SetParams, k: usize, scale: f64) void {
    if (job.scale_type == .f32) {
        @as([*]align(1) f32, @ptrCast(job.scales))[k] = @floatCast(scale);
    } else @as([*]align(1) f64, @ptrCast(job.scales))[k] = scale;
}

/// Set k by params.fromRange; false if it has no parameters.
fn oneSet(comptime C: type, job: *const types.SetParams, k: usize) bool {
    const p = params.fromRange(C, .{ .min = job.mins[k], .max = job.maxs[k] }, job.quant_type, job.symmetric) catch return false;
    storeScale(job, k, p.scale);
    job.zero_points[k] = job.quant_type.rawZeroPoint(p.zero_point);
    return true;
}

fn sets(comptime C: type, job: *const types.SetParams, n: usize) usize {
    var k: usize = 0;
    // 64-bit zero points need fromRange's wide integers.
    if (job.quant_type.isFloat8() or job.quant_type.bits() <= 32) {
        const c = Consts(C).of(job.quant_type, job.symmetric);
        while (k + w <= n) : (k += w) {
            if (!vectorSets(C, c, job, k)) break; // the scalar loop finds which
        }
    }
    while (k < n) : (k += 1) {
        if (!oneSet(C, job, k)) return k;
    }
    return n;
}

fn paramsSets(job: *const types.SetParams, n: usize) callconv(.c) usize {
    return if (job.float_type == .f64) sets(f64, job, n) else sets(f32, job, n);
}

/// This concern's slot of the kernel table.
pub const entries = .{
    .params_sets = &paramsSets,
};

test "sets' parameters are fromRange's, lane by lane, and the first bad set is named" {
    const n = 3 * w + 5;
    var mins: [n]f64 = undefined;
    var maxs: [n]f64 = undefined;
    for (&mins, &maxs, 0..) |*a, *b, k| {
        const f: f64 = @floatFromInt(k);
        a.* = @as(f32, @floatCast(-f * 0.37 + 3));
        b.* = @as(f32, @floatCast(f * 1.91 - 2));
    }
    mins[7] = std.math.inf(f64); // empty
    maxs[7] = -std.math.inf(f64);
    mins[9] = -0.0;
    maxs[9] = 0;
    inline for (.{ f32, f64 }) |C| {
        for ([_]DType{ .uint8, .int4, .int16, .uint32, .int32, .uint64, .float8_e4m3fn, .float8_e5m2 }) |q| {
            for ([_]bool{ false, true }) |sym| {
                var scales: [n]f64 = undefined;
                var narrow: [n]f32 = undefined;
                var zps: [n]i64 = undefined;
                var job = types.SetParams{ .float_type = if (C == f64) .f64 else .f32, .quant_type = q, .symmetric = sym, .mins = &mins, .maxs = &maxs, .scales = @ptrCast(&scales), .scale_type = .f64, .zero_points = &zps };
                try std.testing.expectEqual(@as(usize, n), paramsSets(&job, n));
                if (C == f32) {
                    job.scales = @ptrCast(&narrow);
                    job.scale_type = .f32;
                    try std.testing.expectEqual(@as(usize, n), paramsSets(&job, n));
                }
                for (0..n) |k| {
                    const want = try params.fromRange(C, .{ .min = mins[k], .max = maxs[k] }, q, sym);
                    try std.testing.expectEqual(@as(f64, want.scale), scales[k]);
                    if (C == f32) try std.testing.expectEqual(want.scale, narrow[k]);
                    try std.testing.expectEqual(q.rawZeroPoint(want.zero_point), zps[k]);
                }
            }
        }
    }
    maxs[w + 3] = std.math.inf(f64);
    maxs[2 * w + 1] = 3e38;
    mins[2 * w + 1] = -3e38;
    var scales: [n]f64 = undefined;
    var zps: [n]i64 = undefined;
    var job = types.SetParams{ .float_type = .f32, .quant_type = .uint8, .symmetric = false, .mins = &mins, .maxs = &maxs, .scales = @ptrCast(&scales), .scale_type = .f64, .zero_points = &zps };
    try std.testing.expectEqual(@as(usize, w + 3), paramsSets(&job, n));
    maxs[w + 3] = 1;
    try std.testing.expectEqual(@as(usize, 2 * w + 1), paramsSets(&job, n));
    job.float_type = .f64; // no overflow in float64
    try std.testing.expectEqual(@as(usize, n), paramsSets(&job, n));
}
