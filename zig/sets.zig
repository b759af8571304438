//! Parameter sets of the integer affine formats: a scale and a zero point
//! per tensor, per channel or per group (element i of a call uses set
//! (i / inner) % count), the constants kernels derive from each, and the
//! C ABI's check that a call's sets are valid (docs/semantics.md,
//! Parameters).

const std = @import("std");
const simd = @import("simd.zig");
const types = @import("types.zig");
const rounding = @import("rounding.zig");

const DType = types.DType;
const block = simd.block;

/// Whether [qmin - zp, qmax - zp] is exactly representable in C for every
/// zero point, so that clamping can be done in float.
pub fn exactBounds(comptime Q: DType, comptime C: type) bool {
    return Q.bits() <= 16 or (C == f64 and Q.bits() <= 32);
}

/// The integer type a zero point is added or subtracted at in lane arithmetic.
pub fn ZpLane(comptime Q: DType) type {
    return switch (Q.bits()) {
        0...16 => i32,
        32 => i64,
        else => Q.Storage(),
    };
}

/// The largest C not above v (`up` false) or the smallest not below it.
pub fn floatBound(comptime C: type, v: i128, up: bool) C {
    const f: C = @floatFromInt(v);
    const back: i128 = @intFromFloat(f); // |f| ≤ 2^64: fits
    if (up and back < v) return std.math.nextAfter(C, f, std.math.inf(C));
    if (!up and back > v) return std.math.nextAfter(C, f, -std.math.inf(C));
    return f;
}

/// v rounded to C; through i64 where it fits (i128 conversions are calls).
fn nearestFloat(comptime C: type, comptime Q: DType, v: i128) C {
    if (comptime Q.bits() <= 32) return @floatFromInt(@as(i64, @intCast(v)));
    return @floatFromInt(v);
}

/// The constants of parameter sets of a (compute type C, quantized type Q)
/// pair, each field a `Shape(T)` of its scalar type T: one set (T), the
/// lanes of a block (a vector), or sets prepared ahead (an array).
fn Record(comptime C: type, comptime Q: DType, comptime Shape: fn (type) type) type {
    return struct {
        scale: Shape(C),
        inv_scale: Shape(C),
        /// The smallest C ≥ qmin - zp and the largest C ≤ qmax - zp: an
        /// integer-valued r is in range exactly when lo ≤ r ≤ hi.
        lo: Shape(C),
        hi: Shape(C),
        /// qmin - zp and qmax - zp rounded to nearest: what a saturated
        /// element dequantizes to before scaling.
        lo_near: Shape(C),
        hi_near: Shape(C),
        zp: Shape(ZpLane(Q)),
    };
}

fn Scalar(comptime T: type) type {
    return T;
}

fn VectorOf(comptime w: usize) fn (type) type {
    return struct {
        fn f(comptime T: type) type {
            return @Vector(w, T);
        }
    }.f;
}

fn ArrayOf(comptime w: usize) fn (type) type {
    return struct {
        fn f(comptime T: type) type {
            return [w]T;
        }
    }.f;
}

/// One set's constants.
pub fn Set(comptime C: type, comptime Q: DType) type {
    return Record(C, Q, Scalar);
}

/// The sets of `w` lanes: a block, or consecutive sets computed together.
pub fn LanesOf(comptime w: usize, comptime C: type, comptime Q: DType) type {
    return Record(C, Q, VectorOf(w));
}

/// The sets of the lanes of one block.
pub fn Lanes(comptime C: type, comptime Q: DType) type {
    return LanesOf(block, C, Q);
}

const fields = [_][]const u8{ "scale", "inv_scale", "lo", "hi", "lo_near", "hi_near", "zp" };

/// Cheap where the bounds are exact (the per-group path computes a set per
/// block); wide types need the i128 bounds.
fn initSet(comptime C: type, comptime Q: DType, scale64: f64, raw_zp: i64) Set(C, Q) {
    const scale: C = @floatCast(scale64);
    const zp = Q.zeroPoint(raw_zp);
    const lo_near = nearestFloat(C, Q, Q.qmin() - zp);
    const hi_near = nearestFloat(C, Q, Q.qmax() - zp);
    const exact = comptime exactBounds(Q, C);
    return .{
        .scale = scale,
        .inv_scale = 1 / scale,
        .lo = if (exact) lo_near else floatBound(C, Q.qmin() - zp, true),
        .hi = if (exact) hi_near else floatBound(C, Q.qmax() - zp, false),
        .lo_near = lo_near,
        .hi_near = hi_near,
        .zp = @intCast(zp),
    };
}

/// One set's constants in every lane of a block.
inline fn splat(comptime C: type, comptime Q: DType, set: Set(C, Q)) Lanes(C, Q) {
    var l: Lanes(C, Q) = undefined;
    inline for (fields) |f| @field(l, f) = @splat(@field(set, f));
    return l;
}

/// A per-tensor call's constants: its one set, the same for every block.
/// Apart from `Params`, whose address goes to its noinline set-preparing
/// functions: that made every store through dst a possible write to it,
/// and a per-tensor loop reloaded the set every block (a quarter of the
/// AVX2 quantize loop). This one stays in registers.
pub fn Uniform(comptime C: type, comptime Q: DType) type {
    return struct {
        single: Lanes(C, Q),
        key: rounding.Key,

        pub fn init(a: *const types.Args) @This() {
            return .{ .single = splat(C, Q, initSet(C, Q, a.scale, a.zero_point)), .key = rounding.Key.init(a.seed) };
        }

        pub inline fn at(p: *const @This(), index: usize) Lanes(C, Q) {
            _ = index;
            return p.single;
        }
    };
}

/// Per-call constants of a (float, quantized) pair: one parameter set, or
/// the call's arrays of them (element i uses set (i / inner) % count).
pub fn Params(comptime C: type, comptime Q: DType) type {
    return struct {
        const L = Lanes(C, Q);

        single: L,
        /// Stochastic rounding's key, from the call's seed.
        key: rounding.Key,
        scales: ?[*]const u8,
        scale_type: DType,
        zero_points: [*]const i64,
        inner: usize,
        count: usize,
        /// The elements [set_begin, set_end) of the current set, which is
        /// entry `cur` of `ahead`: the next sets in order, prepared in one
        /// loop, from which each block broadcasts its set's values. Blocks
        /// come in order, so moving to the next set needs no division.
        set_begin: usize = 0,
        set_end: usize = 0,
        cur: usize = 0,
        ahead_first: usize = 0,
        ahead_len: usize = 0,
        ahead: Record(C, Q, ArrayOf(ahead_capacity)) = undefined,
        /// Element index of the first set of `ahead` when sets are shorter
        /// than a block (`short`).
        window: usize = 0,

        /// Sets prepared at a time as the blocks move on.
        const ahead_sets = 64;
        /// Short sets this few are all prepared once, followed by the first
        /// block's worth again (`cycle`): each set is used once per row,
        /// so windows of the next few would be prepared once per row.
        const cycle_max_sets = 1024;
        const ahead_capacity = cycle_max_sets + block;

        pub fn init(a: *const types.Args) @This() {
            return .{
                .single = if (a.scales == null) splat(C, Q, initSet(C, Q, a.scale, a.zero_point)) else undefined,
                .key = rounding.Key.init(a.seed),
                .scales = a.scales,
                .scale_type = a.scale_type,
                .zero_points = a.zero_points,
                .inner = a.inner,
                .count = a.count,
            };
        }

        /// The parameters of elements index … index + block - 1.
        pub inline fn at(p: *@This(), index: usize) L {
            const scales = p.scales orelse return p.single;
            if (index >= p.set_begin and index + block <= p.set_end) return p.current();
            if (index == p.set_end and index + block <= p.set_end + p.inner and p.cur + 1 < p.ahead_len) {
                p.cur += 1; // the next set, prepared already
                p.set_begin = p.set_end;
                p.set_end += p.inner;
                return p.current();
            }
            if (p.inner < block) {
                inline for (0..comptime std.math.log2_int(usize, block)) |e| {
                    if (p.inner == 1 << e) {
                        if (p.short(1 << e, scales, index)) |l| return l;
                    }
                }
            }
            if (p.seek(scales, index)) return p.current();
            return p.perLane(scales, index, index / p.inner);
        }

        /// Sets first … first + w - 1 as lanes, with vector arithmetic: for
        /// ≤16-bit types only, whose zero points fit i32 and whose bounds
        /// qmin - zp, qmax - zp are exact in C.
        fn consecutive(p: *const @This(), comptime w: usize, scales: [*]const u8, first: usize) LanesOf(w, C, Q) {
            comptime std.debug.assert(Q.bits() <= 16);
            const V = @Vector(w, C);
            const Z = @Vector(w, i32);
            const scale: V = switch (p.scale_type) {
                .f32 => @floatCast(@as(@Vector(w, f32), @as([*]align(1) const f32, @ptrCast(scales))[first..][0..w].*)),
                else => @floatCast(@as(@Vector(w, f64), @as([*]align(1) const f64, @ptrCast(scales))[first..][0..w].*)),
            };
            const zp: Z = @truncate(@as(@Vector(w, i64), p.zero_points[first..][0..w].*));
            const lo: V = @floatFromInt(@as(Z, @splat(@as(i32, @intCast(Q.qmin())))) - zp);
            const hi: V = @floatFromInt(@as(Z, @splat(@as(i32, @intCast(Q.qmax())))) - zp);
            return .{ .scale = scale, .inv_scale = @as(V, @splat(1)) / scale, .lo = lo, .hi = hi, .lo_near = lo, .hi_near = hi, .zp = zp };
        }

        /// A block of sets of g < block elements (g a power of two; g = 1 is
        /// per channel along the last axis): sets k … k + block/g - 1 of
        /// `ahead`, each spread over g lanes, found without a division.
        /// Null where the block wraps past the last set.
        inline fn short(p: *@This(), comptime g: usize, scales: [*]const u8, index: usize) ?L {
            const w = block / g;
            if (index % g != 0) return null;
            if (index < p.window or index + block > p.window + p.ahead_len * g) {
                if (!p.moveWindow(g, scales, index)) return null;
            }
            const k = (index - p.window) / g;
            const spread = comptime blk: {
                @setEvalBranchQuota(10_000); // inlined into callers that inline more of these
                var m: [block]i32 = undefined;
                for (&m, 0..) |*x, l| x.* = l / g;
                break :blk m;
            };
            var l: L = undefined;
            inline for (fields) |f| {
                const T = @typeInfo(@FieldType(L, f)).vector.child;
                const few: @Vector(w, T) = @field(p.ahead, f)[k..][0..w].*;
                @field(l, f) = @shuffle(T, few, undefined, spread);
            }
            return l;
        }

        /// Prepares the sets from the one of element `index` on; false if
        /// the block at `index` still runs past them (past the last set).
        noinline fn moveWindow(p: *@This(), comptime g: usize, scales: [*]const u8, index: usize) bool {
            const first = index / g;
            if (p.count <= cycle_max_sets) {
                if (p.ahead_len != p.count + block / g) p.cycle(scales, block / g);
                p.window = (first - first % p.count) * g; // set 0 of this row
                return true; // the block's sets are among count + w in a row
            }
            p.refill(scales, first % p.count, ahead_sets);
            p.window = first * g;
            return index + block <= p.window + p.ahead_len * g;
        }

        /// Every set, then sets 0, 1, … (cyclically) for `w` more: the w
        /// sets from any one on are consecutive entries.
        fn cycle(p: *@This(), scales: [*]const u8, w: usize) void {
            p.refill(scales, 0, p.count);
            for (p.count..p.count + w) |j| {
                inline for (fields) |f| @field(p.ahead, f)[j] = @field(p.ahead, f)[j % p.count];
            }
            p.ahead_len = p.count + w;
        }

        inline fn current(p: *const @This()) L {
            var l: L = undefined;
            inline for (fields) |f| @field(l, f) = @splat(@field(p.ahead, f)[p.cur]);
            return l;
        }

        fn setAt(p: *const @This(), scales: [*]const u8, k: usize) Set(C, Q) {
            return initSet(C, Q, types.scaleAt(scales, p.scale_type, k), p.zero_points[k]);
        }

        /// Prepares sets first, first + 1, … (up to `len` of them, and the last set).
        fn refill(p: *@This(), scales: [*]const u8, first: usize, len: usize) void {
            p.ahead_first = first;
            p.ahead_len = @min(len, p.count - first);
            p.cur = 0;
            var j: usize = 0;
            if (comptime Q.bits() <= 16) {
                while (j + 16 <= p.ahead_len) : (j += 16) {
                    const v = p.consecutive(16, scales, first + j);
                    inline for (fields) |f| @field(p.ahead, f)[j..][0..16].* = @field(v, f);
                }
            }
            while (j < p.ahead_len) : (j += 1) {
                const set = p.setAt(scales, first + j);
                inline for (fields) |f| @field(p.ahead, f)[j] = @field(set, f);
            }
        }

        /// Makes the block at `index` the current set's; false if the block
        /// spans sets.
        noinline fn seek(p: *@This(), scales: [*]const u8, index: usize) bool {
            if (index == p.set_end and index + block <= p.set_end + p.inner) {
                p.cur += 1;
                if (p.cur >= p.ahead_len) p.refill(scales, (p.ahead_first + p.ahead_len) % p.count, ahead_sets);
                p.set_begin = p.set_end;
            } else {
                const first = index / p.inner;
                if ((index + block - 1) / p.inner != first) return false;
                p.refill(scales, first % p.count, ahead_sets);
                p.set_begin = first * p.inner;
            }
            p.set_end = p.set_begin + p.inner;
            return true;
        }

        /// A block that spans sets: computed once per set met, per lane.
        noinline fn perLane(p: *const @This(), scales: [*]const u8, index: usize, first: usize) L {
            var arrays: Record(C, Q, ArrayOf(block)) = undefined;
            var s = first % p.count;
            var next = (first + 1) * p.inner; // index of the next set's first element
            var set = p.setAt(scales, s);
            for (0..block) |l| {
                if (index + l == next) {
                    s = if (s + 1 == p.count) 0 else s + 1;
                    next += p.inner;
                    set = p.setAt(scales, s);
                }
                inline for (fields) |f| @field(arrays, f)[l] = @field(set, f);
            }
            var lanes: L = undefined;
            inline for (fields) |f| @field(lanes, f) = @field(arrays, f);
            return lanes;
        }
    };
}

// ------------------------------------------------------------ validity

/// The smallest positive C whose reciprocal is finite in C (a subnormal):
/// a binary search over bit patterns, on which 1/s is monotonic.
fn smallestInvertible(comptime C: type) C {
    const U = std.meta.Int(.unsigned, @bitSizeOf(C));
    var lo: U = 0; // 1/0 is not finite
    var hi: U = @bitCast(std.math.floatMax(C)); // 1/max is
    while (hi - lo > 1) {
        const mid = lo + (hi - lo) / 2;
        if (std.math.isFinite(1 / @as(C, @bitCast(mid)))) hi = mid else lo = mid;
    }
    return @bitCast(hi);
}

/// The ABI's per-set checks (scale in C finite, > 0, with a finite
/// reciprocal; zero point in range), sixteen sets at a time, no branches.
fn setsValid(comptime C: type, comptime S: type, scales: [*]align(1) const S, zero_points: [*]const i64, count: usize, q: DType) bool {
    const W = 16;
    const lo = smallestInvertible(C);
    const hi = std.math.floatMax(C);
    const check_zp = q != .uint64; // every int64 is the bits of a uint64
    const zmin: i64 = @intCast(q.qmin());
    const zmax: i64 = @intCast(@min(q.qmax(), std.math.maxInt(i64)));
    const one: @Vector(W, u8) = @splat(1);
    const zero: @Vector(W, u8) = @splat(0);
    var bad = zero;
    var k: usize = 0;
    while (k + W <= count) : (k += W) {
        const s: @Vector(W, C) = @floatCast(@as(@Vector(W, S), scales[k..][0..W].*));
        const z: @Vector(W, i64) = zero_points[k..][0..W].*;
        bad |= @select(u8, s >= @as(@Vector(W, C), @splat(lo)), zero, one); // NaN too
        bad |= @select(u8, s <= @as(@Vector(W, C), @splat(hi)), zero, one);
        if (check_zp) {
            bad |= @select(u8, z < @as(@Vector(W, i64), @splat(zmin)), one, zero);
            bad |= @select(u8, z > @as(@Vector(W, i64), @splat(zmax)), one, zero);
        }
    }
    var ok = @reduce(.Or, bad) == 0;
    while (k < count) : (k += 1) {
        const s: C = @floatCast(scales[k]);
        const z = zero_points[k];
        ok = ok and s >= lo and s <= hi and (!check_zp or (z >= zmin and z <= zmax));
    }
    return ok;
}

/// Whether sets [begin, end) are all valid for a call with float type `f`
/// and quantized type `q` (the kernel table's `valid_sets`).
pub fn validSets(f: DType, q: DType, scales: [*]const u8, scale_type: DType, zero_points: [*]const i64, begin: usize, end: usize) callconv(.c) bool {
    return switch (scale_type) {
        inline .f32, .f64 => |t| switch (f) {
            .f64 => setsValid(f64, t.Compute(), @ptrCast(scales + begin * (t.bits() / 8)), zero_points + begin, end - begin, q),
            else => setsValid(f32, t.Compute(), @ptrCast(scales + begin * (t.bits() / 8)), zero_points + begin, end - begin, q),
        },
        else => false,
    };
}

const testing = std.testing;

test "float bounds of integers" {
    const m: i128 = std.math.maxInt(u64);
    try testing.expectEqual(@as(f32, 0x1p64), @as(f32, @floatFromInt(m)));
    try testing.expect(floatBound(f32, m, false) < 0x1p64);
    try testing.expectEqual(@as(f32, 0x1p64 - 0x1p40), floatBound(f32, m, false));
    try testing.expectEqual(@as(f64, -0x1p63), floatBound(f64, std.math.minInt(i64), true));
    try testing.expectEqual(@as(f32, 255), floatBound(f32, 255, false));
}

test "smallest invertible scales are subnormal" {
    inline for (.{ f32, f64 }) |C| {
        const s = smallestInvertible(C);
        try testing.expect(s < std.math.floatMin(C) and std.math.isFinite(1 / s));
        try testing.expect(!std.math.isFinite(1 / std.math.nextAfter(C, s, 0)));
    }
}

test "blocks of short sets get each lane's set, across windows, cycles and wraps" {
    var scales: [1100]f32 = undefined;
    var zps: [scales.len]i64 = undefined;
    for (&scales, &zps, 0..) |*s, *z, k| {
        s.* = @floatFromInt(k + 1);
        z.* = @intCast(k % 256);
    }
    // Fewer sets than a block, sets all prepared at once (rows wrapping
    // inside blocks), and more than that (windows).
    for ([_]usize{ 5, 3 * 64 + 5, scales.len }) |count| {
        inline for (0..comptime std.math.log2_int(usize, block)) |e| {
            const inner = 1 << e;
            const a = types.Args{ .src = undefined, .dst = undefined, .float_type = .f32, .quant_type = .uint8, .scale = 0, .zero_point = 0, .round_mode = .nearest, .reduce_op = .set, .seed = 0, .stream = 0, .scales = @ptrCast(&scales), .scale_type = .f32, .zero_points = &zps, .inner = inner, .count = count };
            var p = Params(f32, .uint8).init(&a);
            var index: usize = 0;
            while (index < 2 * count * inner + 3 * block) : (index += block) {
                const l = p.at(index);
                for (0..block) |k| {
                    const s = ((index + k) / inner) % count;
                    try testing.expectEqual(1 / scales[s], l.inv_scale[k]);
                    try testing.expectEqual(@as(i32, @intCast(zps[s])), l.zp[k]);
                }
            }
        }
    }
}

test "a block that spans sets gets each lane's set" {
    const scales = [_]f64{ 1, 2, 4 };
    const zps = [_]i64{ 0, 1, 2 };
    const a = types.Args{ .src = undefined, .dst = undefined, .float_type = .f32, .quant_type = .uint8, .scale = 0, .zero_point = 0, .round_mode = .nearest, .reduce_op = .set, .seed = 0, .stream = 0, .scales = @ptrCast(&scales), .zero_points = &zps, .inner = 3, .count = 3 };
    var p = Params(f32, .uint8).init(&a);
    const l = p.at(0);
    for (0..block) |k| {
        try testing.expectEqual(@as(f32, @floatCast(scales[(k / 3) % 3])), l.scale[k]);
        try testing.expectEqual(@as(i32, @intCast(zps[(k / 3) % 3])), l.zp[k]);
    }
}
