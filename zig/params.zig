//! Parameter computation (docs/semantics.md, compute_params): the scale and
//! zero point torch's MinMaxObserver gives a range, in the input's compute
//! type. The ranges come from the min/max kernels (minmax.zig).

const std = @import("std");
const types = @import("types.zig");
const soft = @import("simd/soft.zig");

const DType = types.DType;

pub fn Params(comptime C: type) type {
    return struct { scale: C, zero_point: i128 };
}

pub const Error = error{
    /// The range holds an infinite value.
    Infinite,
    /// Its width (max - min) overflows the compute type.
    Overflow,
};

/// Parameters of the range `mm` in C (float32, or float64 for float64 input).
pub fn fromRange(comptime C: type, mm: types.MinMax, q: DType, symmetric: bool) Error!Params(C) {
    const inf = std.math.inf(f64);
    if (mm.min == -inf or mm.max == inf) return error.Infinite;
    // An input with no non-NaN value has the range (+inf, -inf): treat it as {0}.
    const lo: C = if (mm.min > mm.max) 0 else @floatCast(@min(mm.min, 0));
    const hi: C = if (mm.min > mm.max) 0 else @floatCast(@max(mm.max, 0));
    if (q.isFloat8()) return .{ .scale = float8Scale(C, @max(-lo, hi), q), .zero_point = 0 };
    const width: C = @floatFromInt(q.qmax() - q.qmin());
    const eps = std.math.floatEps(C);
    if (symmetric) {
        const scale = @max(@max(-lo, hi) / (width / 2), eps);
        if (!std.math.isFinite(scale)) return error.Overflow;
        const zp: i128 = if (q.isSigned()) 0 else @divFloor(q.qmin() + q.qmax() + 1, 2);
        return .{ .scale = scale, .zero_point = zp };
    }
    const scale = @max((hi - lo) / width, eps);
    if (!std.math.isFinite(scale)) return error.Overflow;
    const r = soft.roundEven(1, C, @splat(lo / scale))[0]; // half to even, in any rounding environment
    const zp = std.math.clamp(q.qmin() - @as(i128, @intFromFloat(r)), q.qmin(), q.qmax());
    return .{ .scale = scale, .zero_point = zp };
}

/// FP8 types take a scale alone (either scheme): amax / max, at least C's
/// smallest normal (whose reciprocal is finite); 1 for amax = 0.
fn float8Scale(comptime C: type, amax: C, q: DType) C {
    if (amax == 0) return 1;
    const max: C = if (q == .float8_e4m3fn) 448 else 57344;
    return @max(amax / max, std.math.floatMin(C));
}

/// `fromRange` in the compute type of input type `t`, widened to f64.
pub fn forInput(t: DType, mm: types.MinMax, q: DType, symmetric: bool) Error!Params(f64) {
    if (t == .f64) return fromRange(f64, mm, q, symmetric);
    const p = try fromRange(f32, mm, q, symmetric);
    return .{ .scale = p.scale, .zero_point = p.zero_point };
}

test "params of a known range" {
    const p = try fromRange(f32, .{ .min = -1, .max = 3 }, .uint8, false);
    try std.testing.expectEqual(@as(f32, 4.0 / 255.0), p.scale);
    try std.testing.expectEqual(@as(i128, 64), p.zero_point);
    const s = try fromRange(f32, .{ .min = -1, .max = 3 }, .int8, true);
    try std.testing.expectEqual(@as(i128, 0), s.zero_point);
    const u = try forInput(.f64, .{ .min = -1, .max = 3 }, .uint64, true);
    try std.testing.expectEqual(@as(i128, 1 << 63), u.zero_point);
    try std.testing.expectEqual(@as(f32, 1), (try fromRange(f32, .{ .min = 0, .max = 0 }, .float8_e5m2, false)).scale);
    try std.testing.expectEqual(@as(f32, 2), (try fromRange(f32, .{ .min = -896, .max = 3 }, .float8_e4m3fn, true)).scale);
    try std.testing.expectError(error.Infinite, fromRange(f32, .{ .min = -std.math.inf(f64), .max = 0 }, .uint8, false));
    try std.testing.expectError(error.Overflow, forInput(.f32, .{ .min = -3e38, .max = 3e38 }, .uint8, false));
}
