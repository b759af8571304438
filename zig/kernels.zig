//! The quantization kernels. This one source is compiled once per ISA
//! variant (build.zig sets the CPU model and the `isa` option); each object
//! exports its table as `piquant_kernels_<isa>`, which dispatch.zig selects at
//! run time. Tails run through the same vector code on a padded block, so
//! every element of a call sees identical arithmetic.

const std = @import("std");
const builtin = @import("builtin");
const types = @import("types.zig");
const options = @import("build_options");
const gguf = @import("gguf.zig");

const DType = types.DType;
const Isa = types.Isa;
const Args = types.Args;

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
pub const block = 2 * lanes;

/// Whether the target converts float16 in hardware (F16C, Neon); elsewhere
/// LLVM would call a library routine per element, so we convert by bits.
const hardware_f16 = switch (isa) {
    .avx2, .avx512f, .neon => true,
    .generic, .sse42 => false,
};

fn Vec(comptime T: type) type {
    return @Vector(block, T);
}

fn splat(comptime T: type, v: anytype) Vec(T) {
    return @splat(v);
}

// ------------------------------------------------------------ float side

pub fn loadFloats(comptime S: DType, src: [*]const u8, i: usize) Vec(S.Compute()) {
    switch (S) {
        .f32, .f64 => {
            const p: [*]align(1) const S.Compute() = @ptrCast(src);
            return p[i..][0..block].*;
        },
        .bf16 => {
            const p: [*]align(1) const u16 = @ptrCast(src);
            const h: Vec(u16) = p[i..][0..block].*;
            return @bitCast(@as(Vec(u32), h) << @splat(16));
        },
        .f16 => {
            const p: [*]align(1) const u16 = @ptrCast(src);
            const h: Vec(u16) = p[i..][0..block].*;
            if (hardware_f16) return @floatCast(@as(Vec(f16), @bitCast(h)));
            return f16ToF32(h);
        },
        else => @compileError("not a float type"),
    }
}

pub fn storeFloats(comptime D: DType, dst: [*]u8, i: usize, x: Vec(D.Compute())) void {
    switch (D) {
        .f32, .f64 => {
            const p: [*]align(1) D.Compute() = @ptrCast(dst);
            p[i..][0..block].* = x;
        },
        .bf16 => {
            const p: [*]align(1) u16 = @ptrCast(dst);
            p[i..][0..block].* = toBf16(x);
        },
        .f16 => {
            const p: [*]align(1) u16 = @ptrCast(dst);
            p[i..][0..block].* = if (hardware_f16) @bitCast(@as(Vec(f16), @floatCast(x))) else f32ToF16(x);
        },
        else => @compileError("not a float type"),
    }
}

/// Round to nearest bfloat16, ties to even; NaN keeps its sign and top
/// payload bits and is made quiet.
fn toBf16(x: Vec(f32)) Vec(u16) {
    const b: Vec(u32) = @bitCast(x);
    // Wrapping: only NaN bit patterns (replaced below) can carry past 2^32.
    const rounded = (b +% splat(u32, 0x7FFF) +% ((b >> @splat(16)) & splat(u32, 1))) >> @splat(16);
    const quiet = (b >> @splat(16)) | splat(u32, 0x40);
    return @truncate(@select(u32, x != x, quiet, rounded));
}

/// float16 bits to float32, exactly. Scaling the shifted bits by 2^112
/// re-biases the exponent and normalizes subnormals in one multiply.
fn f16ToF32(h: Vec(u16)) Vec(f32) {
    const w: Vec(u32) = h;
    const em = w & splat(u32, 0x7FFF);
    const scaled: Vec(u32) = @bitCast(@as(Vec(f32), @bitCast(em << @splat(13))) * splat(f32, 0x1p112));
    const special = (em << @splat(13)) | splat(u32, 0x7F80_0000); // inf, NaN with its payload
    const mag = @select(u32, em >= splat(u32, 0x7C00), special, scaled);
    return @bitCast(mag | ((w & splat(u32, 0x8000)) << @splat(16)));
}

/// float32 to float16 bits: round to nearest, ties to even, the same as
/// F16C's vcvtps2ph; NaN becomes a quiet NaN with the top payload bits.
fn f32ToF16(x: Vec(f32)) Vec(u16) {
    const b: Vec(u32) = @bitCast(x);
    const a = b & splat(u32, 0x7FFF_FFFF);
    const nan = splat(u32, 0x7E00) | ((a >> @splat(13)) & splat(u32, 0x3FF));
    // Below 2^-14 the result is subnormal: adding 0.5 rounds to its grid.
    const sub = @as(Vec(u32), @bitCast(@as(Vec(f32), @bitCast(a)) + splat(f32, 0.5))) -% splat(u32, 126 << 23);
    const odd = (a >> @splat(13)) & splat(u32, 1);
    const norm = (a +% splat(u32, @as(u32, @bitCast(@as(i32, (15 - 127) << 23)))) +% splat(u32, 0xFFF) +% odd) >> @splat(13);
    var r = @select(u32, a < splat(u32, 113 << 23), sub, norm);
    r = @select(u32, a >= splat(u32, 143 << 23), splat(u32, 0x7C00), r);
    r = @select(u32, a > splat(u32, 0x7F80_0000), nan, r);
    return @truncate(r | ((b >> @splat(16)) & splat(u32, 0x8000)));
}

// ------------------------------------------------------------ rounding

// LLVM's roundeven: one instruction with SSE4.1 (roundps $8), AVX-512
// (vrndscaleps) and Neon (frintn), independent of the MXCSR rounding mode.
// Called per native register: wider vectors would be passed by pointer.
extern fn @"llvm.roundeven.v4f32"(@Vector(4, f32)) @Vector(4, f32);
extern fn @"llvm.roundeven.v8f32"(@Vector(8, f32)) @Vector(8, f32);
extern fn @"llvm.roundeven.v16f32"(@Vector(16, f32)) @Vector(16, f32);
extern fn @"llvm.roundeven.v2f64"(@Vector(2, f64)) @Vector(2, f64);
extern fn @"llvm.roundeven.v4f64"(@Vector(4, f64)) @Vector(4, f64);
extern fn @"llvm.roundeven.v8f64"(@Vector(8, f64)) @Vector(8, f64);

fn roundEvenRegister(comptime C: type, comptime n: usize, v: @Vector(n, C)) @Vector(n, C) {
    return switch (@Vector(n, C)) {
        @Vector(4, f32) => @"llvm.roundeven.v4f32"(v),
        @Vector(8, f32) => @"llvm.roundeven.v8f32"(v),
        @Vector(16, f32) => @"llvm.roundeven.v16f32"(v),
        @Vector(2, f64) => @"llvm.roundeven.v2f64"(v),
        @Vector(4, f64) => @"llvm.roundeven.v4f64"(v),
        @Vector(8, f64) => @"llvm.roundeven.v8f64"(v),
        else => @compileError("no register of this shape"),
    };
}

/// Round half to even. Baseline x86-64 has no rounding instruction (LLVM
/// would call roundevenf per lane), so it uses the add-and-subtract trick.
fn roundEven(comptime C: type, y: Vec(C)) Vec(C) {
    if (isa == .generic) return types.roundHalfEven(block, C, y);
    const reg = lanes * 4 / @sizeOf(C); // elements of C per native register
    var parts: [block / reg]@Vector(reg, C) = undefined;
    const arr: [block]C = y;
    inline for (&parts, 0..) |*part, k| part.* = roundEvenRegister(C, reg, arr[k * reg ..][0..reg].*);
    return @bitCast(parts);
}

fn floorExact(comptime C: type, y: Vec(C)) Vec(C) {
    // SSE4.1, AVX-512 and Neon floor in one instruction; baseline x86-64
    // would call floorf per lane, so it rounds to nearest and steps down.
    if (isa != .generic) return @floor(y);
    const t = roundEven(C, y);
    return t - @select(C, t > y, splat(C, 1), splat(C, 0));
}

fn iota() Vec(u32) {
    var v: [block]u32 = undefined;
    for (&v, 0..) |*e, k| e.* = @intCast(k);
    return v;
}

/// Golden-ratio multiplier: spreads consecutive indices before the hash,
/// which a single lowbias32 round on a counter needs (alone it fails
/// chi-square tests of pairs of neighbours).
const weyl: u32 = 0x9E37_79B1;

/// The uniform u in [0, 1) of stochastic rounding for elements i .. i+block
/// (docs/semantics.md): lowbias32 of the index's low half times `weyl`, keyed
/// by a word from SplitMix64(seed) and the index's high half. `i` is a
/// multiple of the block, so the high half and the key are the same in every
/// lane, and (i + lane)·weyl = i·weyl + lane·weyl needs one scalar multiply.
fn uniforms(comptime C: type, key: u64, i: usize) Vec(C) {
    const lanes_weyl = comptime iota() *% splat(u32, weyl);
    const spread = splat(u32, @as(u32, @truncate(i)) *% weyl) +% lanes_weyl;
    const hi: u32 = @truncate(@as(u64, i) >> 32);
    const k = @as(u32, @truncate(key)) ^ types.lowbias32(1, .{hi ^ @as(u32, @truncate(key >> 32))})[0];
    const h = types.lowbias32(block, spread ^ splat(u32, k));
    if (C == f32) return @as(Vec(f32), @floatFromInt(@as(Vec(i32), @bitCast(h >> @splat(8))))) * splat(f32, 0x1p-24);
    return @as(Vec(f64), @floatFromInt(h)) * splat(f64, 0x1p-32);
}

/// y rounded to an integer-valued float: half to even, or stochastically
/// (up with probability frac(y), the comparison u < y - floor(y)).
fn roundValues(comptime C: type, comptime mode: types.RoundMode, y: Vec(C), key: u64, i: usize) Vec(C) {
    switch (mode) {
        .nearest => return roundEven(C, y),
        .stochastic => {
            const fl = floorExact(C, y);
            return fl + @select(C, uniforms(C, key, i) < y - fl, splat(C, 1), splat(C, 0));
        },
        else => @compileError("unknown round mode"),
    }
}

// ------------------------------------------------------------ quantized side

/// Lanes of quantized values between load/store and arithmetic.
fn Lane(comptime Q: DType) type {
    return if (Q.bits() <= 16) i32 else Q.Storage();
}

/// Whether [qmin - zp, qmax - zp] is exactly representable in C for every
/// zero point, so that clamping can be done in float.
fn exactBounds(comptime Q: DType, comptime C: type) bool {
    return Q.bits() <= 16 or (C == f64 and Q.bits() <= 32);
}

/// The integer type a zero point is added or subtracted at in lane arithmetic.
fn ZpLane(comptime Q: DType) type {
    return switch (Q.bits()) {
        0...16 => i32,
        32 => i64,
        else => Q.Storage(),
    };
}

/// v rounded to C; through i64 where it fits (i128 conversions are calls).
fn nearestFloat(comptime C: type, comptime Q: DType, v: i128) C {
    if (comptime Q.bits() <= 32) return @floatFromInt(@as(i64, @intCast(v)));
    return @floatFromInt(v);
}

/// The constants of one parameter set (a scale and a zero point) of a
/// (float, quantized) pair.
fn Set(comptime C: type, comptime Q: DType) type {
    return struct {
        scale: C,
        inv_scale: C,
        /// The smallest C ≥ qmin - zp and the largest C ≤ qmax - zp: an
        /// integer-valued r is in range exactly when lo ≤ r ≤ hi.
        lo: C,
        hi: C,
        /// qmin - zp and qmax - zp rounded to nearest: what a saturated
        /// element dequantizes to before scaling.
        lo_near: C,
        hi_near: C,
        zp: ZpLane(Q),

        /// Cheap where the bounds are exact (the per-group path computes a
        /// set per block); wide types need the i128 bounds.
        fn init(scale64: f64, raw_zp: i64) @This() {
            const scale: C = @floatCast(scale64);
            const zp = Q.zeroPoint(raw_zp);
            const lo_near = nearestFloat(C, Q, Q.qmin() - zp);
            const hi_near = nearestFloat(C, Q, Q.qmax() - zp);
            const exact = comptime exactBounds(Q, C);
            return .{
                .scale = scale,
                .inv_scale = 1 / scale,
                .lo = if (exact) lo_near else types.floatBound(C, Q.qmin() - zp, true),
                .hi = if (exact) hi_near else types.floatBound(C, Q.qmax() - zp, false),
                .lo_near = lo_near,
                .hi_near = hi_near,
                .zp = @intCast(zp),
            };
        }
    };
}

/// The parameters of the lanes of one block.
fn Lanes(comptime C: type, comptime Q: DType) type {
    return LanesOf(block, C, Q);
}

/// The parameters of `w` lanes (a block, or sets prepared ahead).
fn LanesOf(comptime w: usize, comptime C: type, comptime Q: DType) type {
    return struct {
        scale: @Vector(w, C),
        inv_scale: @Vector(w, C),
        lo: @Vector(w, C),
        hi: @Vector(w, C),
        lo_near: @Vector(w, C),
        hi_near: @Vector(w, C),
        zp: @Vector(w, ZpLane(Q)),

        fn splatSet(s: Set(C, Q)) @This() {
            return .{
                .scale = @splat(s.scale),
                .inv_scale = @splat(s.inv_scale),
                .lo = @splat(s.lo),
                .hi = @splat(s.hi),
                .lo_near = @splat(s.lo_near),
                .hi_near = @splat(s.hi_near),
                .zp = @splat(s.zp),
            };
        }
    };
}

/// Per-call constants of a (float, quantized) pair: one parameter set, or
/// the call's arrays of them (element i uses set (i / inner) % count).
fn Params(comptime C: type, comptime Q: DType) type {
    return struct {
        const S = Set(C, Q);
        const L = Lanes(C, Q);

        single: L,
        key: u64,
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
        ahead: Ahead = undefined,

        const ahead_sets = 64;
        const Ahead = struct {
            scale: [ahead_sets]C,
            inv_scale: [ahead_sets]C,
            lo: [ahead_sets]C,
            hi: [ahead_sets]C,
            lo_near: [ahead_sets]C,
            hi_near: [ahead_sets]C,
            zp: [ahead_sets]ZpLane(Q),
        };

        fn init(a: *const Args) @This() {
            return .{
                .single = if (a.scales == null) L.splatSet(S.init(a.scale, a.zero_point)) else undefined,
                .key = types.splitmix64(a.seed),
                .scales = a.scales,
                .scale_type = a.scale_type,
                .zero_points = a.zero_points,
                .inner = a.inner,
                .count = a.count,
            };
        }

        /// The parameters of elements index … index + block - 1.
        inline fn at(p: *@This(), index: usize) L {
            const scales = p.scales orelse return p.single;
            if (index >= p.set_begin and index + block <= p.set_end) return p.current();
            if (index == p.set_end and index + block <= p.set_end + p.inner and p.cur + 1 < p.ahead_len) {
                p.cur += 1; // the next set, prepared already
                p.set_begin = p.set_end;
                p.set_end += p.inner;
                return p.current();
            }
            if (p.seek(scales, index)) return p.current();
            if (comptime Q.bits() <= 16) {
                // Per channel along the last axis: the lanes are consecutive sets.
                if (p.inner == 1) {
                    const first = index % p.count;
                    if (first + block <= p.count) return p.consecutive(block, scales, first);
                }
            }
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

        inline fn current(p: *const @This()) L {
            const k = p.cur;
            return .{
                .scale = @splat(p.ahead.scale[k]),
                .inv_scale = @splat(p.ahead.inv_scale[k]),
                .lo = @splat(p.ahead.lo[k]),
                .hi = @splat(p.ahead.hi[k]),
                .lo_near = @splat(p.ahead.lo_near[k]),
                .hi_near = @splat(p.ahead.hi_near[k]),
                .zp = @splat(p.ahead.zp[k]),
            };
        }

        fn setAt(p: *const @This(), scales: [*]const u8, k: usize) S {
            return S.init(types.scaleAt(scales, p.scale_type, k), p.zero_points[k]);
        }

        /// Prepares sets first, first + 1, … (up to the last set).
        fn refill(p: *@This(), scales: [*]const u8, first: usize) void {
            p.ahead_first = first;
            p.ahead_len = @min(ahead_sets, p.count - first);
            p.cur = 0;
            var j: usize = 0;
            if (comptime Q.bits() <= 16) {
                while (j + 16 <= p.ahead_len) : (j += 16) {
                    const v = p.consecutive(16, scales, first + j);
                    p.ahead.scale[j..][0..16].* = v.scale;
                    p.ahead.inv_scale[j..][0..16].* = v.inv_scale;
                    p.ahead.lo[j..][0..16].* = v.lo;
                    p.ahead.hi[j..][0..16].* = v.hi;
                    p.ahead.lo_near[j..][0..16].* = v.lo_near;
                    p.ahead.hi_near[j..][0..16].* = v.hi_near;
                    p.ahead.zp[j..][0..16].* = v.zp;
                }
            }
            while (j < p.ahead_len) : (j += 1) {
                const set = p.setAt(scales, first + j);
                p.ahead.scale[j] = set.scale;
                p.ahead.inv_scale[j] = set.inv_scale;
                p.ahead.lo[j] = set.lo;
                p.ahead.hi[j] = set.hi;
                p.ahead.lo_near[j] = set.lo_near;
                p.ahead.hi_near[j] = set.hi_near;
                p.ahead.zp[j] = set.zp;
            }
        }

        /// Makes the block at `index` the current set's; false if the block
        /// spans sets.
        noinline fn seek(p: *@This(), scales: [*]const u8, index: usize) bool {
            if (index == p.set_end and index + block <= p.set_end + p.inner) {
                p.cur += 1;
                if (p.cur >= p.ahead_len) p.refill(scales, (p.ahead_first + p.ahead_len) % p.count);
                p.set_begin = p.set_end;
            } else {
                const first = index / p.inner;
                if ((index + block - 1) / p.inner != first) return false;
                p.refill(scales, first % p.count);
                p.set_begin = first * p.inner;
            }
            p.set_end = p.set_begin + p.inner;
            return true;
        }

        /// A block that spans sets: computed once per set met, per lane.
        noinline fn perLane(p: *const @This(), scales: [*]const u8, index: usize, first: usize) L {
            var scale: [block]C = undefined;
            var inv_scale: [block]C = undefined;
            var lo: [block]C = undefined;
            var hi: [block]C = undefined;
            var lo_near: [block]C = undefined;
            var hi_near: [block]C = undefined;
            var zp: [block]ZpLane(Q) = undefined;
            var s = first % p.count;
            var next = (first + 1) * p.inner; // index of the next set's first element
            var set = p.setAt(scales, s);
            for (0..block) |l| {
                if (index + l == next) {
                    s = if (s + 1 == p.count) 0 else s + 1;
                    next += p.inner;
                    set = p.setAt(scales, s);
                }
                scale[l] = set.scale;
                inv_scale[l] = set.inv_scale;
                lo[l] = set.lo;
                hi[l] = set.hi;
                lo_near[l] = set.lo_near;
                hi_near[l] = set.hi_near;
                zp[l] = set.zp;
            }
            return .{ .scale = scale, .inv_scale = inv_scale, .lo = lo, .hi = hi, .lo_near = lo_near, .hi_near = hi_near, .zp = zp };
        }
    };
}

/// The bits of integer-valued r modulo 2^N, for |r| < 2^N, without an
/// out-of-range float-to-int conversion.
fn wrapBits(comptime N: u16, comptime C: type, r: Vec(C)) Vec(std.meta.Int(.unsigned, N)) {
    const UN = std.meta.Int(.unsigned, N);
    const IN = std.meta.Int(.signed, N);
    const half: C = @floatFromInt(@as(u64, 1) << (N - 1));
    const a = @abs(r);
    const big = a >= splat(C, half);
    const low = @select(C, big, a - splat(C, half), a); // Sterbenz: exact
    var m: Vec(UN) = @bitCast(@as(Vec(IN), @intFromFloat(low)));
    m +%= @select(UN, big, splat(UN, @as(UN, 1) << (N - 1)), splat(UN, 0));
    return @select(UN, r < splat(C, 0), splat(UN, 0) -% m, m);
}

/// clamp(r + zp, qmin, qmax) for integer-valued r, NaN → zp, exactly.
fn toQuant(comptime Q: DType, comptime C: type, r: Vec(C), p: Lanes(C, Q)) Vec(Lane(Q)) {
    var c = @select(C, r > p.hi, p.hi, r);
    c = @select(C, c < p.lo, p.lo, c);
    c = @select(C, c != c, splat(C, 0), c);
    if (comptime exactBounds(Q, C)) {
        const W = if (comptime Q.bits() <= 16) i32 else i64;
        const d: Vec(W) = @intFromFloat(c);
        return @intCast(d + @as(Vec(W), p.zp));
    }
    // hi/lo may lie inside the range here; saturated lanes are set apart.
    const UN = std.meta.Int(.unsigned, Q.bits());
    const zp_bits: Vec(UN) = @truncate(@as(Vec(u64), @bitCast(p.zp)));
    var q = wrapBits(Q.bits(), C, c) +% zp_bits;
    q = @select(UN, r > p.hi, splat(UN, @as(UN, @truncate(@as(u128, @bitCast(Q.qmax()))))), q);
    q = @select(UN, r < p.lo, splat(UN, @as(UN, @truncate(@as(u128, @bitCast(Q.qmin()))))), q);
    return @bitCast(q);
}

/// f(q - zp) exactly rounded to C.
fn fromQuant(comptime Q: DType, comptime C: type, q: Vec(Lane(Q)), z: Vec(ZpLane(Q))) Vec(C) {
    switch (comptime Q.bits()) {
        0...16 => return @floatFromInt(q - z),
        32 => return @floatFromInt(@as(Vec(i64), q) - z),
        64 => {
            const ge = q >= z;
            const mag = @select(u64, ge, @as(Vec(u64), @bitCast(q -% z)), @as(Vec(u64), @bitCast(z -% q)));
            const f: Vec(C) = @floatFromInt(mag);
            return @select(C, ge, f, -f);
        },
        else => @compileError("no such width"),
    }
}

/// Positions k, k + per, k + 2·per, … of a block.
fn strided(comptime per: usize, comptime k: usize) @Vector(block / per, i32) {
    var m: [block / per]i32 = undefined;
    for (&m, 0..) |*e, j| e.* = @intCast(j * per + k);
    return m;
}

/// Two vectors one after the other.
fn concat(comptime T: type, comptime n: usize, a: @Vector(n, T), b: @Vector(n, T)) @Vector(2 * n, T) {
    comptime var m: [2 * n]i32 = undefined;
    inline for (0..2 * n) |k| m[k] = if (k < n) @intCast(k) else ~@as(i32, @intCast(k - n));
    return @shuffle(T, a, b, m);
}

/// The inverse of `strided`: element j·per + k from fields[k][j].
fn interleave(comptime T: type, comptime per: usize, fields: [per]@Vector(block / per, T)) Vec(T) {
    const n = block / per;
    const all: Vec(T) = if (per == 2) concat(T, n, fields[0], fields[1]) else concat(T, 2 * n, concat(T, n, fields[0], fields[1]), concat(T, n, fields[2], fields[3]));
    comptime var m: [block]i32 = undefined;
    inline for (0..block) |e| m[e] = @intCast((e % per) * n + e / per);
    return @shuffle(T, all, undefined, m);
}

fn storeQuantized(comptime Q: DType, dst: [*]u8, i: usize, q: Vec(Lane(Q))) void {
    if (comptime Q.bits() < 8) {
        // First element in the lowest bits (torch.quint4x2/quint2x4's layout).
        // Gathering and combining at 32-bit width keeps the shuffles to ones
        // every target has (vpermt2d with AVX-512F; no byte permutes needed).
        const per = comptime Q.perByte();
        const b = comptime Q.bits();
        const n = block / per;
        const fields = @as(Vec(u32), @bitCast(q)) & splat(u32, (1 << b) - 1);
        var packed_words: @Vector(n, u32) = @splat(0);
        inline for (0..per) |k| packed_words |= @shuffle(u32, fields, undefined, strided(per, k)) << @splat(b * k);
        dst[i / per ..][0..n].* = @as(@Vector(n, u8), @truncate(packed_words));
        return;
    }
    const T = Q.Storage();
    const p: [*]align(1) T = @ptrCast(dst);
    p[i..][0..block].* = @as(Vec(T), @intCast(q));
}

fn loadQuantized(comptime Q: DType, src: [*]const u8, i: usize) Vec(Lane(Q)) {
    if (comptime Q.bits() < 8) {
        const per = comptime Q.perByte();
        const b = comptime Q.bits();
        const n = block / per;
        const bytes: @Vector(n, u8) = src[i / per ..][0..n].*;
        const words: @Vector(n, i32) = @as(@Vector(n, u8), bytes); // widen first: see storeQuantized
        var fields: [per]@Vector(n, i32) = undefined;
        inline for (0..per) |k| {
            if (comptime Q.isSigned()) {
                // Move the field to the top of the word, shift back arithmetically.
                fields[k] = (words << @splat(32 - b * (k + 1))) >> @splat(32 - b);
            } else {
                fields[k] = (words >> @splat(b * k)) & @as(@Vector(n, i32), @splat((1 << b) - 1));
            }
        }
        return interleave(i32, per, fields);
    }
    const T = Q.Storage();
    const p: [*]align(1) const T = @ptrCast(src);
    const v: Vec(T) = p[i..][0..block].*;
    return v;
}

// ------------------------------------------------------------ streaming stores

const line = 64;

/// How far ahead of its loads a loop prefetches its input, in bytes.
/// Measured at 27M elements: prefetching into L1 (locality 3) 2 KiB ahead
/// cut quantize from 6.6 to 4.6 ms; non-temporal prefetch (locality 0)
/// doubled it. The hardware prefetchers of the virtual machine alone do
/// not keep one core's loads streaming while it computes.
const prefetch_bytes = 2048;

pub fn prefetchAhead(src: [*]const u8, byte_offset: usize) void {
    @prefetch(src + byte_offset + prefetch_bytes, .{ .locality = 3 });
}

/// Stores 64-byte lines from `src` to the 64-byte aligned address `dst`,
/// bypassing the cache. The staging buffer was just written by blocks of
/// 16 bytes or more; loading it 16 bytes at a time keeps every load inside
/// one earlier store, so it is forwarded instead of waiting for the stores
/// to reach the cache.
fn storeLinesNonTemporal(dst: usize, src: []align(line) const u8) void {
    var off: usize = 0;
    while (off < src.len) : (off += 16) {
        const v: @Vector(16, u8) = src[off..][0..16].*;
        switch (builtin.cpu.arch) {
            .x86_64 => if (isa == .avx512f or isa == .avx2) asm volatile ("vmovntdq %[v], (%[p])"
                :
                : [v] "x" (v),
                  [p] "r" (dst + off),
                : .{ .memory = true }) else asm volatile ("movntdq %[v], (%[p])"
                :
                : [v] "x" (v),
                  [p] "r" (dst + off),
                : .{ .memory = true }),
            else => @as(*[16]u8, @ptrFromInt(dst + off)).* = v,
        }
    }
}

/// Non-temporal stores are weakly ordered: fence them before the pool
/// reports the chunk done.
fn fenceNonTemporal() void {
    if (builtin.cpu.arch == .x86_64) asm volatile ("sfence" ::: .{ .memory = true });
}

/// Writes the output of elements [begin, end) group by group, each group a
/// whole number of cache lines produced by `emitter.emit(base, i)` (one
/// block written at `base` + byte offset of element i) into an aligned
/// staging buffer. Whole lines go out with non-temporal stores; the partial
/// lines at the two ends, which may share a line with another thread's
/// bytes, with regular stores. Returns where it stopped (whole groups only).
pub fn streamGroups(comptime out_bits: u16, dst: [*]u8, begin: usize, end: usize, emitter: anytype) usize {
    const group: usize = @max(block, line * 8 / @as(usize, out_bits));
    const group_bytes = group * out_bits / 8; // a multiple of the line
    if (end - begin < 2 * group) return begin;
    var staging: [group_bytes + line]u8 align(line) = undefined;
    const first = @intFromPtr(dst) + begin * out_bits / 8;
    const m = first % line;
    var i = begin;
    while (i + group <= end) : (i += group) {
        const at = first + (i - begin) * out_bits / 8; // address of element i
        // The block code writes element i to base + offset(i): aim it at staging[m].
        const base = (@intFromPtr(&staging) + m) -% i * out_bits / 8;
        var j: usize = 0;
        while (j < group) : (j += block) {
            emitter.prefetch(i + j);
            emitter.emit(@as([*]u8, @ptrFromInt(base)), i + j);
        }
        if (i == begin) {
            // staging[0..m) holds no bytes of ours yet: the first line is partial.
            @memcpy(@as([*]u8, @ptrFromInt(at))[0 .. line - m], staging[m..line]);
            storeLinesNonTemporal(at - m + line, staging[line..group_bytes]);
        } else {
            storeLinesNonTemporal(at - m, staging[0..group_bytes]);
        }
        staging[0..line].* = staging[group_bytes..][0..line].*; // the next line's start (m bytes used)
    }
    const stop = first + (i - begin) * out_bits / 8;
    @memcpy(@as([*]u8, @ptrFromInt(stop - m))[0..m], staging[0..m]);
    fenceNonTemporal();
    return i;
}

// ------------------------------------------------------------ operations

inline fn quantizeBlock(comptime S: DType, comptime Q: DType, comptime mode: types.RoundMode, p: *Params(S.Compute(), Q), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = S.Compute();
    const l = p.at(index);
    const y = loadFloats(S, src, i) * l.inv_scale;
    storeQuantized(Q, dst, i, toQuant(Q, C, roundValues(C, mode, y, p.key, index), l));
}

fn quantizeRange(comptime S: DType, comptime Q: DType, comptime mode: types.RoundMode, args: *const Args, begin: usize, end: usize) void {
    // A local copy: stores through dst could alias *args as far as the
    // compiler knows, which would reload every parameter per block.
    const a = args.*;
    var p = Params(S.Compute(), Q).init(&a);
    const Block = struct {
        fn run(q: *@TypeOf(p), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
            quantizeBlock(S, Q, mode, q, src, dst, i, index);
        }
    };
    // Measured: streaming speeds up nearest but slows stochastic rounding,
    // whose extra arithmetic already hides the destination reads.
    runRange(S, Q, false, mode == .nearest and a.stream != 0, &p, a.src, a.dst, begin, end, Block.run);
}

/// The loop every operation shares: whole cache lines written past the
/// cache when `stream` (and the destination is not read), then blocks with
/// the input prefetched ahead, then the tail through the same block code on
/// zero-padded copies. `blockFn(p, src, dst, i, index)` reads element i of
/// src and writes element i of dst; `index` is the element's number in the
/// call (stochastic rounding's counter), which differs from i in the tail.
fn runRange(comptime In: DType, comptime Out: DType, comptime reads_dst: bool, stream: bool, p: anytype, src: [*]const u8, dst: [*]u8, begin: usize, end: usize, comptime blockFn: anytype) void {
    var i = begin;
    if (!reads_dst and stream) {
        const Emit = struct {
            p: @TypeOf(p),
            src: [*]const u8,
            fn emit(e: @This(), base: [*]u8, k: usize) void {
                blockFn(e.p, e.src, base, k, k);
            }
            fn prefetch(e: @This(), k: usize) void {
                prefetchAhead(e.src, In.byteCount(k));
            }
        };
        i = streamGroups(Out.bits(), dst, begin, end, Emit{ .p = p, .src = src });
    }
    while (i + block <= end) : (i += block) {
        prefetchAhead(src, In.byteCount(i));
        if (reads_dst) prefetchAhead(dst, Out.byteCount(i));
        @call(.always_inline, blockFn, .{ p, src, dst, i, i });
    }
    if (i == end) return;
    const n = end - i;
    const in_bytes = In.byteCount(n);
    const out_bytes = Out.byteCount(n);
    var src_buf: [block * 8]u8 align(64) = @splat(0);
    @memcpy(src_buf[0..in_bytes], src[In.byteCount(i)..][0..in_bytes]);
    var dst_buf: [block * 8]u8 align(64) = @splat(0);
    if (reads_dst) @memcpy(dst_buf[0..out_bytes], dst[Out.byteCount(i)..][0..out_bytes]);
    blockFn(p, &src_buf, &dst_buf, 0, i);
    const used = n % Out.perByte();
    if (used != 0) dst_buf[out_bytes - 1] &= @truncate((@as(u32, 1) << @intCast(used * Out.bits())) - 1); // unused fields are 0
    @memcpy(dst[Out.byteCount(i)..][0..out_bytes], dst_buf[0..out_bytes]);
}

fn dequantizeBlock(comptime Q: DType, comptime D: DType, comptime op: types.ReduceOp, p: *Params(D.Compute(), Q), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = D.Compute();
    const l = p.at(index);
    var x = fromQuant(Q, C, loadQuantized(Q, src, i), l.zp) * l.scale;
    if (op == .add) x = loadFloats(D, dst, i) + x;
    storeFloats(D, dst, i, x);
}

fn dequantizeRange(comptime Q: DType, comptime D: DType, comptime op: types.ReduceOp, args: *const Args, begin: usize, end: usize) void {
    const a = args.*; // see quantizeRange
    var p = Params(D.Compute(), Q).init(&a);
    const Block = struct {
        fn run(q: *@TypeOf(p), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
            dequantizeBlock(Q, D, op, q, src, dst, i, index);
        }
    };
    runRange(Q, D, op == .add, a.stream != 0, &p, a.src, a.dst, begin, end, Block.run);
}

/// dequantize(quantize(x)) without the integers: an in-range r dequantizes
/// to r itself, a saturated one to the nearest float of qmin/qmax - zp.
inline fn fakeBlock(comptime S: DType, comptime Q: DType, comptime mode: types.RoundMode, comptime op: types.ReduceOp, p: *Params(S.Compute(), Q), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
    const C = S.Compute();
    const l = p.at(index);
    const r = roundValues(C, mode, loadFloats(S, src, i) * l.inv_scale, p.key, index);
    // + 0 turns -0 into +0, as the integer round trip does.
    var v = @select(C, r != r, splat(C, 0), r + splat(C, 0));
    v = @select(C, r > l.hi, l.hi_near, v);
    v = @select(C, r < l.lo, l.lo_near, v);
    var x = v * l.scale;
    if (op == .add) x = loadFloats(S, dst, i) + x;
    storeFloats(S, dst, i, x);
}

fn fakeRange(comptime S: DType, comptime Q: DType, comptime mode: types.RoundMode, comptime op: types.ReduceOp, args: *const Args, begin: usize, end: usize) void {
    const a = args.*; // see quantizeRange
    var p = Params(S.Compute(), Q).init(&a);
    const Block = struct {
        fn run(q: *@TypeOf(p), src: [*]const u8, dst: [*]u8, i: usize, index: usize) void {
            fakeBlock(S, Q, mode, op, q, src, dst, i, index);
        }
    };
    runRange(S, S, op == .add, a.stream != 0, &p, a.src, a.dst, begin, end, Block.run);
}

// ------------------------------------------------------------ dispatch by type

fn quantize(a: *const Args, begin: usize, end: usize) callconv(.c) void {
    inline for (DType.floats) |S| {
        inline for (DType.quantized) |Q| {
            if (a.float_type == S and a.quant_type == Q) return switch (a.round_mode) {
                .stochastic => quantizeRange(S, Q, .stochastic, a, begin, end),
                else => quantizeRange(S, Q, .nearest, a, begin, end),
            };
        }
    }
}

fn dequantize(a: *const Args, begin: usize, end: usize) callconv(.c) void {
    inline for (DType.quantized) |Q| {
        inline for (DType.floats) |D| {
            if (a.quant_type == Q and a.float_type == D) return switch (a.reduce_op) {
                .add => dequantizeRange(Q, D, .add, a, begin, end),
                else => dequantizeRange(Q, D, .set, a, begin, end),
            };
        }
    }
}

fn fakeQuantize(a: *const Args, begin: usize, end: usize) callconv(.c) void {
    inline for (DType.floats) |S| {
        inline for (DType.quantized) |Q| {
            if (a.float_type == S and a.quant_type == Q) {
                const stochastic = a.round_mode == .stochastic;
                const add = a.reduce_op == .add;
                if (stochastic and add) return fakeRange(S, Q, .stochastic, .add, a, begin, end);
                if (stochastic) return fakeRange(S, Q, .stochastic, .set, a, begin, end);
                if (add) return fakeRange(S, Q, .nearest, .add, a, begin, end);
                return fakeRange(S, Q, .nearest, .set, a, begin, end);
            }
        }
    }
}

fn minmaxRange(comptime S: DType, src: [*]const u8, begin: usize, end: usize) types.MinMax {
    const C = S.Compute();
    const inf: Vec(C) = @splat(std.math.inf(C));
    var lo = inf;
    var hi = -inf;
    var i = begin;
    while (i < end) : (i += block) {
        var x: Vec(C) = undefined;
        if (i + block <= end) {
            prefetchAhead(src, i * (S.bits() / 8));
            x = loadFloats(S, src, i);
        } else {
            // Tail: padding lanes become NaN, which is ignored.
            const n = end - i;
            const s_bytes = S.bits() / 8;
            var buf: [block * 8]u8 align(64) = @splat(0);
            @memcpy(buf[0 .. n * s_bytes], src[i * s_bytes ..][0 .. n * s_bytes]);
            x = @select(C, (comptime iota()) < splat(u32, @as(u32, @intCast(n))), loadFloats(S, &buf, 0), splat(C, std.math.nan(C)));
        }
        // x < lo is false for NaN, so NaN never replaces a bound (and this
        // is x86's minps/maxps exactly, with no NaN fix-up of @min/@max).
        lo = @select(C, x < lo, x, lo);
        hi = @select(C, x > hi, x, hi);
    }
    return .{ .min = @reduce(.Min, lo), .max = @reduce(.Max, hi) };
}

fn minmax(src: [*]const u8, src_type: DType, begin: usize, end: usize) callconv(.c) types.MinMax {
    inline for (DType.floats) |S| {
        if (src_type == S) return minmaxRange(S, src, begin, end);
    }
    return .{ .min = std.math.inf(f64), .max = -std.math.inf(f64) };
}

// ------------------------------------------------------------ parameter checks

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

fn validSets(f: DType, q: DType, scales: [*]const u8, scale_type: DType, zero_points: [*]const i64, begin: usize, end: usize) callconv(.c) bool {
    return switch (scale_type) {
        inline .f32, .f64 => |t| switch (f) {
            .f64 => setsValid(f64, t.Compute(), @ptrCast(scales + begin * (t.bits() / 8)), zero_points + begin, end - begin, q),
            else => setsValid(f32, t.Compute(), @ptrCast(scales + begin * (t.bits() / 8)), zero_points + begin, end - begin, q),
        },
        else => false,
    };
}

const table = types.KernelTable{
    .quantize = &quantize,
    .dequantize = &dequantize,
    .fake_quantize = &fakeQuantize,
    .gguf_quantize = &gguf.quantize,
    .gguf_dequantize = &gguf.dequantize,
    .valid_sets = &validSets,
    .minmax = &minmax,
};

comptime {
    @export(&table, .{ .name = "piquant_kernels_" ++ options.isa });
}

// ------------------------------------------------------------ tests

const testing = std.testing;

test "smallest invertible scales are subnormal" {
    inline for (.{ f32, f64 }) |C| {
        const s = smallestInvertible(C);
        try testing.expect(s < std.math.floatMin(C) and std.math.isFinite(1 / s));
        try testing.expect(!std.math.isFinite(1 / std.math.nextAfter(C, s, 0)));
    }
}

test "round half to even" {
    try testing.expectEqual(@as(f32, 2.0), types.roundHalfEven(block, f32, splat(f32, 2.5))[0]);
    try testing.expectEqual(@as(f32, -4.0), types.roundHalfEven(block, f32, splat(f32, -3.5))[0]);
    try testing.expectEqual(@as(f64, 4503599627370497.0), types.roundHalfEven(block, f64, splat(f64, 4503599627370497.0))[0]);
    try testing.expectEqual(@as(f64, 2.0), types.roundHalfEven(block, f64, splat(f64, 1.5))[0]);
}

test "bf16 rounding ties to even" {
    try testing.expectEqual(@as(u16, 0x3F80), toBf16(splat(f32, @as(f32, @bitCast(@as(u32, 0x3F80_8000)))))[0]);
    try testing.expectEqual(@as(u16, 0x3F82), toBf16(splat(f32, @as(f32, @bitCast(@as(u32, 0x3F81_8000)))))[0]);
}

test "float16 by bits matches the hardware conversion" {
    var h: u32 = 0;
    while (h < 0x10000) : (h += block) {
        var v: Vec(u16) = undefined;
        for (0..block) |k| v[k] = @intCast(h + k);
        const x = f16ToF32(v);
        const want: Vec(f32) = @floatCast(@as(Vec(f16), @bitCast(v)));
        for (0..block) |k| {
            if (x[k] != x[k]) continue; // NaN quieting differs by design; payloads checked via the tests of f32ToF16
            try testing.expectEqual(@as(u32, @bitCast(want[k])), @as(u32, @bitCast(x[k])));
        }
    }
    const samples = [_]f32{ 65519.99, 65520.0, 1e-8, 2.98e-8, 2.9802322e-8, 5.96e-8, 6.1035156e-5, 6.1e-5, 1.0009765625, 1.00048828125, -0.0, std.math.inf(f32) };
    for (samples) |s| {
        const want: f16 = @floatCast(s);
        try testing.expectEqual(@as(u16, @bitCast(want)), f32ToF16(splat(f32, s))[0]);
    }
}

test "packing round trips" {
    inline for (.{ DType.int4, DType.uint4, DType.int2, DType.uint2 }) |Q| {
        var buf: [block]u8 = undefined;
        var q: Vec(i32) = undefined;
        const range: i32 = @intCast(Q.qmax() - Q.qmin() + 1);
        for (0..block) |k| q[k] = @as(i32, @intCast(Q.qmin())) + @mod(@as(i32, @intCast(k)), range);
        storeQuantized(Q, &buf, 0, q);
        try testing.expectEqual(q, loadQuantized(Q, &buf, 0));
    }
    var buf: [block]u8 = undefined;
    var q: Vec(i32) = @splat(0);
    q[0] = -2;
    q[1] = 1;
    q[3] = -1;
    storeQuantized(.int2, &buf, 0, q);
    try testing.expectEqual(@as(u8, 0b11_00_01_10), buf[0]);
}

test "wide saturation is exact" {
    const a = Args{ .src = undefined, .dst = undefined, .float_type = .f32, .quant_type = .uint64, .scale = 1, .zero_point = 5, .round_mode = .nearest, .reduce_op = .set, .seed = 0, .stream = 0 };
    var p = Params(f32, .uint64).init(&a);
    var r: Vec(f32) = @splat(0);
    r[0] = 0x1p64;
    r[1] = -6;
    r[2] = -5;
    r[3] = 0x1p63;
    const q = toQuant(.uint64, f32, r, p.at(0));
    try testing.expectEqual(@as(u64, std.math.maxInt(u64)), q[0]);
    try testing.expectEqual(@as(u64, 0), q[1]);
    try testing.expectEqual(@as(u64, 0), q[2]);
    try testing.expectEqual(@as(u64, (1 << 63) + 5), q[3]);
    const back = fromQuant(.uint64, f32, q, p.at(0).zp);
    try testing.expectEqual(@as(f32, 0x1p64), back[0]);
    try testing.expectEqual(@as(f32, -5), back[1]);
}

test "stochastic uniforms: vector lanes follow the scalar formula, high index bits count" {
    const key = types.splitmix64(12345);
    const i: usize = (5 << 32) + 64;
    const u = uniforms(f32, key, i);
    for (0..block) |lane| {
        const idx: u64 = i + lane;
        const k = @as(u32, @truncate(key)) ^ types.lowbias32(1, .{@as(u32, @truncate(idx >> 32)) ^ @as(u32, @truncate(key >> 32))})[0];
        const h = types.lowbias32(1, .{(@as(u32, @truncate(idx)) *% weyl) ^ k})[0];
        try testing.expectEqual(@as(f32, @floatFromInt(h >> 8)) * 0x1p-24, u[lane]);
    }
    try testing.expect(uniforms(f32, key, 64)[0] != u[0]);
}
