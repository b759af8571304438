//! OCP microscaling blocks (MXFP8, MXFP6, MXFP4, MXINT8) and NVFP4, bit for
//! bit as docs/semantics.md (MX block formats and NVFP4) specifies them.
//! One general kernel serves every format, scale rule, rounding and float
//! type as run-time values, so the build does not grow by their product;
//! the common case, float32 or bfloat16 input in blocks of whole vectors,
//! is compiled per format (wholeVectors: 14 small loops). Inputs are
//! widened to float32 by one loader; element codes come from minifloat.zig,
//! as FP8's do. Kernel ranges are ranges of blocks.

const std = @import("std");
const types = @import("../types.zig");
const simd = @import("../simd.zig");
const floats = @import("../floats.zig");
const rounding = @import("../rounding.zig");
const stream = @import("../stream.zig");
const minifloat = @import("../minifloat.zig");

const DType = types.DType;
const Args = types.Args;
const MxFormat = types.MxFormat;

/// Lanes of a vector: a kernel block of the ISA.
const w = simd.block;
const V = simd.Vec(f32);
const U = simd.Vec(u32);
const I = simd.Vec(i32);

fn splat(comptime T: type, v: T) simd.Vec(T) {
    return @splat(v);
}

/// An element format (docs/semantics.md's table).
const Element = struct {
    float: minifloat.Format,
    emax: i32,
    int: bool = false,
};

fn element(f: MxFormat) Element {
    return switch (f) {
        .mxfp8_e4m3 => .{ .float = minifloat.e4m3, .emax = 8 },
        .mxfp8_e5m2 => .{ .float = minifloat.e5m2, .emax = 15 },
        .mxfp6_e2m3 => .{ .float = minifloat.e2m3, .emax = 2 },
        .mxfp6_e3m2 => .{ .float = minifloat.e3m2, .emax = 4 },
        .mxfp4, .nvfp4 => .{ .float = minifloat.e2m1, .emax = 2 },
        else => .{ .float = .{ .m = 0, .emin = 0, .max = 127.0 / 64.0, .bits = 8 }, .emax = 0, .int = true }, // MXINT8: k · 2^-6
    };
}

/// 2^k for -149 ≤ k ≤ 127, exactly.
fn pow2(k: i32) f32 {
    if (k >= -126) return @bitCast(@as(u32, @intCast(k + 127)) << 23);
    return @bitCast(@as(u32, 1) << @intCast(k + 149));
}

/// 2^k lane by lane, for k within float32's normal exponents.
fn pow2v(k: I) V {
    return @bitCast(@as(U, @bitCast(k + splat(i32, 127))) << @splat(23));
}

/// Codes of scaled values y in their low `bits` bits; `index`: the call's
/// flat index of lane 0, which keys stochastic rounding. `nan_free`: the
/// caller knows y holds no NaN, and the NaN lanes' selects go.
inline fn encode(comptime e: Element, comptime nan_free: bool, y: V, comptime mode: types.RoundMode, key: *rounding.Key, index: usize) U {
    if (e.int) {
        var t = (if (nan_free) y else @select(f32, y != y, splat(f32, 0), y)) * splat(f32, 64);
        t = @select(f32, t < splat(f32, -128), splat(f32, -128), t);
        t = @select(f32, t > splat(f32, 127), splat(f32, 127), t);
        const k: I = @intFromFloat(rounding.round(f32, mode, t, key, index));
        return @as(U, @bitCast(k)) & splat(u32, 0xFF);
    }
    return minifloat.encode(e.float, f32, mode, nan_free, y, key, index).code;
}

/// float32 values of codes (exact).
fn decode(e: Element, c: U) V {
    if (e.int) {
        const k = @as(I, @bitCast(c << @splat(24))) >> @splat(24);
        return @as(V, @floatFromInt(k)) * splat(f32, 0x1p-6);
    }
    return minifloat.decode(e.float, c);
}

/// The NaN lanes of p = a · b with the sign the spec gives them: a's if a is
/// NaN, else b's if b is NaN, else set (inf · 0, x86's default NaN). LLVM
/// may swap the operands of a product, and ISAs differ in their default NaN.
fn signedNans(p: V, a: V, b: V) V {
    const sign = splat(u32, 0x8000_0000);
    const from_b = @select(u32, b != b, @as(U, @bitCast(b)) & sign, sign);
    const s = @select(u32, a != a, @as(U, @bitCast(a)) & sign, from_b);
    return @select(f32, p != p, @as(V, @bitCast(splat(u32, 0x7FC0_0000) | s)), p);
}

// ---------------------------------------------------------------- block scales

/// E4M3 code of a in [2^-6, 448] (normal), rounded half to even.
fn e4m3Code(a: f32) u8 {
    const ex: i32 = @as(i32, @intCast(@as(u32, @bitCast(a)) >> 23)) - 127;
    const t = a * pow2(3 - ex);
    const r = (t + 0x1p23) - 0x1p23; // half to even: t < 16
    return @intCast(((ex + 6) << 3) + @as(i32, @intFromFloat(r)));
}

fn e4m3Value(code: u8) f32 {
    const mag = code & 0x7F;
    const v: f32 = if (mag == 0x7F) std.math.nan(f32) else @as(f32, @bitCast(@as(u32, mag) << 20)) * 0x1p120;
    return if (code & 0x80 != 0) -v else v;
}

/// A block's scale code and the factor its elements are multiplied by
/// (floor's division by a power of two is this exact multiplication;
/// 0 for s = 255, where x / inf gives the same zeros and NaN).
const Scale = struct { code: u8, r: f32 };

fn blockScale(a: *const Args, e: Element, amax: f32, factors: *const Factors) Scale {
    if (a.mx == .nvfp4) {
        var b = amax / 6;
        if (a.per_tensor_scale != 0) b = b / a.per_tensor_scale;
        const code: u8 = if (b != b) 0x7F else e4m3Code(@min(@max(b, 0x1p-6), 448));
        return .{ .code = code, .r = factors[code] };
    }
    if (a.scale_mode == .rceil) {
        const s = rceil(amax, e.float.max);
        return .{ .code = s, .r = if (s == 0) 1 else if (s == 255) std.math.nan(f32) else pow2(127 - @as(i32, s)) };
    }
    // torchao divides by 2^-126 where the scale is 2^-127; MXINT8, which
    // torchao lacks, divides by the scale as OCP does.
    const s = floor(amax, e.emax);
    const k = 127 - @as(i32, s);
    return .{ .code = s, .r = if (s == 255) 0 else pow2(if (e.int) k else @min(k, 126)) };
}

/// NVFP4's factor of each block scale code S (0x7F: NaN), c(1 / S) or with
/// a per-tensor scale p c(c(1 / p) / S): 128 divisions a call, not one a block.
const Factors = [0x80]f32;

fn nvfp4Factors(a: *const Args) Factors {
    var r: Factors = undefined;
    if (a.mx != .nvfp4) return r;
    const p = a.per_tensor_scale;
    for (&r, 0..) |*x, c| x.* = if (p != 0) (1 / p) / e4m3Value(@intCast(c)) else 1 / e4m3Value(@intCast(c));
    return r;
}

fn floor(amax: f32, emax: i32) u8 {
    if (amax != amax) return 255;
    const exp: i32 = @as(i32, @intCast((@as(u32, @bitCast(amax)) >> 23) & 0xFF)) - 127;
    return @intCast(std.math.clamp(exp - emax, -127, 128) + 127);
}

/// log2 in float64 rounded to float32, as the reference computes it.
fn rceil(amax: f32, top: f32) u8 {
    const d = amax / top;
    if (d != d) return 255;
    if (std.math.isInf(d)) return 254;
    if (d == 0) return 0;
    const l: f32 = @floatCast(@log2(@as(f64, d)));
    return @intFromFloat(std.math.clamp(@ceil(l), -127, 127) + 127);
}

/// The value of a stored scale code.
fn scaleValue(a: *const Args, code: u8) f32 {
    if (a.mx == .nvfp4) {
        const s = e4m3Value(code);
        return if (a.per_tensor_scale != 0) s * a.per_tensor_scale else s;
    }
    return if (code == 255) std.math.nan(f32) else pow2(@as(i32, code) - 127);
}

// ---------------------------------------------------------------- loads and stores

inline fn load(t: DType, src: [*]const u8, i: usize) V {
    return switch (t) {
        inline .f32, .bf16, .f16 => |S| floats.loadFloats(S, src, i),
        .f64 => @floatCast(floats.loadFloats(.f64, src, i)),
        else => unreachable,
    };
}

inline fn store(t: DType, dst: [*]u8, i: usize, x: V) void {
    switch (t) {
        inline .f32, .bf16, .f16 => |D| floats.storeFloats(D, dst, i, x),
        .f64 => floats.storeFloats(.f64, dst, i, @floatCast(x)),
        else => unreachable,
    }
}

/// The elements of lanes [lo, hi) of the vector at element v, the other
/// lanes 0: vectors at the ends of a range stick out of it.
fn loadPart(t: DType, src: [*]const u8, v: usize, lo: usize, hi: usize) V {
    const size = t.bits() / 8;
    var buf: [w * 8]u8 = @splat(0);
    @memcpy(buf[lo * size .. hi * size], src[(v + lo) * size .. (v + hi) * size]);
    return load(t, &buf, 0);
}

fn storePart(t: DType, dst: [*]u8, v: usize, lo: usize, hi: usize, x: V) void {
    const size = t.bits() / 8;
    var buf: [w * 8]u8 = undefined;
    store(t, &buf, 0, x);
    @memcpy(dst[(v + lo) * size .. (v + hi) * size], buf[lo * size .. hi * size]);
}

const evens = std.simd.iota(i32, w / 2) * @as(@Vector(w / 2, i32), @splat(2));
const odds = evens + @as(@Vector(w / 2, i32), @splat(1));
/// Lane 2j from the first vector's lane j, lane 2j + 1 from the second's.
const interleave = blk: {
    var m: [w]i32 = undefined;
    for (&m, 0..) |*l, k| l.* = if (k % 2 == 0) k / 2 else ~@as(i32, k / 2);
    break :blk m;
};

/// Codes of lanes [lo, hi) to the data at element v: FP4 two a byte, the
/// first element in the low nibble (lo and hi are even then); else a byte each.
fn storeCodes(f: MxFormat, dst: [*]u8, v: usize, lo: usize, hi: usize, codes: U) void {
    if (f.isFp4()) {
        const pairs = @shuffle(u32, codes, undefined, evens) | (@shuffle(u32, codes, undefined, odds) << @splat(4));
        const bytes: [w / 2]u8 = @as(@Vector(w / 2, u8), @truncate(pairs));
        if (lo == 0 and hi == w) dst[v / 2 ..][0 .. w / 2].* = bytes else @memcpy(dst[(v + lo) / 2 .. (v + hi) / 2], bytes[lo / 2 .. hi / 2]);
        return;
    }
    const bytes: [w]u8 = simd.narrowBytes(u8, @bitCast(codes));
    if (lo == 0 and hi == w) dst[v..][0..w].* = bytes else @memcpy(dst[v + lo .. v + hi], bytes[lo..hi]);
}

fn loadCodes(f: MxFormat, src: [*]const u8, v: usize, lo: usize, hi: usize) U {
    if (f.isFp4()) {
        var b: [w / 2]u8 = @splat(0);
        if (lo == 0 and hi == w) b = src[v / 2 ..][0 .. w / 2].* else @memcpy(b[lo / 2 .. hi / 2], src[(v + lo) / 2 .. (v + hi) / 2]);
        const bv: @Vector(w / 2, u8) = b;
        return @shuffle(u8, bv & @as(@Vector(w / 2, u8), @splat(15)), bv >> @splat(4), interleave);
    }
    var b: [w]u8 = @splat(0);
    if (lo == 0 and hi == w) b = src[v..][0..w].* else @memcpy(b[lo..hi], src[v + lo .. v + hi]);
    return @as(simd.Vec(u8), b);
}

// ---------------------------------------------------------------- ranges of blocks

/// The largest lane of a vector without NaN: halves compared with selects
/// (one max instruction each; @reduce(.Max) adds NaN handling).
fn maxLane(comptime m: usize, v: @Vector(m, f32)) f32 {
    if (m == 1) return v[0];
    const lo = @shuffle(f32, v, undefined, std.simd.iota(i32, m / 2));
    const hi = @shuffle(f32, v, undefined, std.simd.iota(i32, m / 2) + @as(@Vector(m / 2, i32), @splat(m / 2)));
    return maxLane(m / 2, @select(f32, lo > hi, lo, hi));
}

/// max |x| of elements [i, i + n), NaN if one is NaN.
fn blockAmax(t: DType, src: [*]const u8, i: usize, n: usize) f32 {
    var m: V = @splat(0);
    var nan: U = @splat(0);
    var j: usize = 0;
    while (j + w <= n) : (j += w) {
        const x = @abs(load(t, src, i + j));
        nan |= @select(u32, x != x, splat(u32, 1), splat(u32, 0));
        m = @select(f32, x > m, x, m);
    }
    if (j < n) {
        const x = @abs(loadPart(t, src, i + j, 0, n - j));
        nan |= @select(u32, x != x, splat(u32, 1), splat(u32, 0));
        m = @select(f32, x > m, x, m);
    }
    return if (@reduce(.Or, nan) != 0) std.math.nan(f32) else maxLane(w, m);
}

/// The vectors of w elements covering the elements of n consecutive
/// blocks from element `begin`: each at element v (a multiple of w, so that
/// stochastic rounding's uniforms come in whole vectors), its lanes [lo, hi)
/// inside the blocks, and each lane's block (an index below n) taking its
/// value from `values`.
const Vectors = struct {
    v: usize,
    begin: usize,
    end: usize,
    size: usize,
    /// The block of lane lo, and the first element of the block after it.
    k: usize = 0,
    boundary: usize,
    lo: usize = 0,
    hi: usize = 0,

    fn init(begin: usize, n: usize, size: usize) Vectors {
        return .{ .v = begin - begin % w, .begin = begin, .end = begin + n * size, .size = size, .boundary = begin + size };
    }

    /// The block value of each lane of the next vector, null after the last.
    fn next(self: *Vectors, values: []const f32) ?V {
        if (self.v >= self.end) return null;
        const v = self.v;
        self.lo = @max(v, self.begin) - v;
        self.hi = @min(v + w, self.end) - v;
        if (self.boundary <= v + self.lo) {
            self.k += 1;
            self.boundary += self.size;
        }
        var s: V = @splat(values[self.k]);
        while (self.boundary < v + self.hi) {
            self.k += 1;
            const start: i32 = @intCast(self.boundary - v);
            s = @select(f32, std.simd.iota(i32, w) >= splat(i32, start), splat(f32, values[self.k]), s);
            self.boundary += self.size;
        }
        return s;
    }

    fn whole(self: *const Vectors) bool {
        return self.lo == 0 and self.hi == w;
    }
};

/// The general kernel does blocks a batch at a time: their scales (a pass
/// over the batch), then their elements (a second pass, from the cache).
const batch_elements = 4096;

fn quantizeRange(args: *const Args, begin: usize, end: usize) callconv(.c) void {
    const a = args.*;
    if (a.block_size % w == 0 or a.block_size == w / 2) switch (a.float_type) {
        inline .f32, .bf16 => |t| switch (a.mx) {
            inline .mxfp8_e4m3, .mxfp8_e5m2, .mxfp6_e2m3, .mxfp6_e3m2, .mxfp4, .mxint8, .nvfp4 => |f| {
                if (a.block_size % w == 0) return wholeVectors(f, t, false, &a, begin, end);
                // Two blocks a vector from an even block, so that vectors
                // start at multiples of w; an odd block at either end of the
                // range goes through the general kernel.
                const first = @min(begin + begin % 2, end);
                const last = @max(first, end - end % 2);
                if (first > begin) generalRange(&a, begin, first);
                wholeVectors(f, t, true, &a, first, last);
                if (last < end) generalRange(&a, last, end);
                return;
            },
            else => unreachable,
        },
        else => {},
    };
    generalRange(&a, begin, end);
}

/// The general kernel over blocks [begin, end).
fn generalRange(args: *const Args, begin: usize, end: usize) void {
    const a = args.*;
    const e = element(a.mx);
    const size = a.block_size;
    const stochastic = a.round_mode == .stochastic;
    var key = rounding.Key.init(a.seed);
    const factors = nvfp4Factors(&a);
    var r: [batch_elements]f32 = undefined;
    const per: usize = @max(1, batch_elements / size);
    var b = begin;
    while (b < end) {
        const n = @min(per, end - b);
        for (0..n) |k| {
            stream.prefetchAhead(a.src, a.float_type.byteCount((b + k) * size));
            const s = blockScale(&a, e, blockAmax(a.float_type, a.src, (b + k) * size, size), &factors);
            a.mx_scales.?[b + k] = s.code;
            r[k] = s.r;
        }
        var it = Vectors.init(b * size, n, size);
        while (it.next(r[0..n])) |m| {
            const x = if (it.whole()) load(a.float_type, a.src, it.v) else loadPart(a.float_type, a.src, it.v, it.lo, it.hi);
            const y = signedNans(x * m, x, m);
            const c = switch (a.mx) {
                inline .mxfp8_e4m3, .mxfp8_e5m2, .mxfp6_e2m3, .mxfp6_e3m2, .mxfp4, .mxint8, .nvfp4 => |f| if (stochastic)
                    encode(comptime element(f), false, y, .stochastic, &key, it.v)
                else
                    encode(comptime element(f), false, y, .nearest, &key, it.v),
                else => unreachable,
            };
            storeCodes(a.mx, a.dst, it.v, it.lo, it.hi, c);
            it.v += w;
        }
        b += n;
    }
}

/// Blocks of whole vectors (the block size a multiple of w) or, `pairs`,
/// of half vectors (the block size w / 2, from an even block, an even
/// count), the format and float type known at compile time, a batch at a
/// time: the blocks' amaxes (one pass), their scales w blocks a vector (no
/// scalar chain a block), then their codes (a second pass, from L1).
/// amax is the largest |x| as bits (ordered as the values; NaN above
/// infinity's bits), and a block with a finite amax and factor cannot make
/// a NaN y, so its codes skip the NaN selects.
fn wholeVectors(comptime f: MxFormat, comptime t: DType, comptime pairs: bool, a: *const Args, begin: usize, end: usize) void {
    const size = a.block_size;
    const stochastic = a.round_mode == .stochastic;
    var key = rounding.Key.init(a.seed);
    const factors = nvfp4Factors(a);
    const per: usize = @max(1, @min(batch_blocks, batch_elements / size));
    var bits: [batch_blocks]u32 = undefined;
    var codes: [batch_blocks]u8 = undefined;
    var r: [batch_blocks]f32 = undefined;
    var b = begin;
    while (b < end) {
        const n = @min(per, end - b);
        // The common block sizes known at compile time, so that a block's
        // loads unroll (a loop of one trip cost nvfp4 a tenth of its time).
        if (pairs) amaxes(t, a.src, b * size, R, n, &bits) else switch (size) {
            w => amaxes(t, a.src, b * size, w, n, &bits),
            2 * w => amaxes(t, a.src, b * size, 2 * w, n, &bits),
            else => amaxes(t, a.src, b * size, size, n, &bits),
        }
        @memset(bits[n .. (n + w - 1) / w * w], 0);
        blockScales(f, a, &bits, n, &codes, &r, &factors);
        @memcpy(a.mx_scales.?[b..][0..n], codes[0..n]);
        if (stochastic) {
            batchCodes(f, t, .stochastic, pairs, a.src, a.dst, b, n, size, &bits, &r, &key);
        } else batchCodes(f, t, .nearest, pairs, a.src, a.dst, b, n, size, &bits, &r, &key);
        b += n;
    }
}

/// Lanes of a register: blocks of w / 2 elements are one register each.
const R = w / 2;
const Half = @Vector(R, u32);

/// amax bits of the n blocks of `size` elements (a multiple of R) from
/// element i into bits[0..n): each block maxed into one register, R
/// blocks (R registers) at a time folded into one register of R amaxes
/// (log2 R levels, a shuffle, a blend and a max per pair of registers),
/// not reduced a block at a time (log2 R shuffles and maxes each).
inline fn amaxes(comptime t: DType, src: [*]const u8, i: usize, size: usize, n: usize, bits: *[batch_blocks]u32) void {
    var k: usize = 0;
    while (k + R <= n) : (k += R) {
        var regs: [R]Half = undefined;
        // Block fold_order[l] into register l: the folds leave block o in lane o.
        inline for (&regs, 0..) |*reg, l| reg.* = blockMax(t, src, i + (k + fold_order[l]) * size, size);
        comptime var seg = R;
        inline while (seg > 1) : (seg /= 2) {
            inline for (0..seg / 2) |p| regs[p] = foldHalves(seg, regs[2 * p], regs[2 * p + 1]);
        }
        bits[k..][0..R].* = regs[0];
    }
    while (k < n) : (k += 1) bits[k] = @reduce(.Max, blockMax(t, src, i + k * size, size));
}

/// The |x| bits of the block of `size` elements at element i, maxed lane
/// by lane into one register.
inline fn blockMax(comptime t: DType, src: [*]const u8, i: usize, size: usize) Half {
    const magnitude: Half = @splat(0x7FFF_FFFF);
    var m: Half = @splat(0);
    var j: usize = 0;
    while (j < size) : (j += R) {
        stream.prefetchAhead(src, t.byteCount(i + j));
        m = @max(m, @as(Half, @bitCast(floats.load(t, R, src, i + j))) & magnitude);
    }
    return m;
}

/// foldHalves' masks at a level of `seg` (chunks of seg lanes, one block
/// each), as declarations: each is evaluated once, on its own branch quota,
/// not on that of the inlined callers. `from_y`: lane o takes y's lane in
/// the second half of a chunk, x's in the first. `other`: the half of the
/// same block that from_y leaves out (x's second half into the first half
/// of a chunk, y's first half into the second).
fn FoldMasks(comptime seg: usize) type {
    return struct {
        const from_y: @Vector(R, bool) = blk: {
            var m: [R]bool = undefined;
            for (&m, 0..) |*b, o| b.* = o % seg >= seg / 2;
            break :blk m;
        };
        const other: @Vector(R, i32) = blk: {
            var m: [R]i32 = undefined;
            for (&m, 0..) |*l, o| l.* = if (o % seg < seg / 2) o + seg / 2 else ~@as(i32, o - seg / 2);
            break :blk m;
        };
    };
}

/// x and y hold blocks of `seg` lanes each; the result holds in each chunk
/// of seg lanes x's block of that chunk, then y's, each in seg / 2 lanes
/// the max of the block's halves: the chunk's own lanes (a blend) maxed
/// with the other halves (one two-source shuffle).
inline fn foldHalves(comptime seg: usize, x: Half, y: Half) Half {
    const masks = FoldMasks(seg);
    return @max(@select(u32, masks.from_y, y, x), @shuffle(u32, x, y, masks.other));
}

/// The register each block of R goes into, so that foldHalves' levels
/// leave block o in lane o: their order of blocks simulated on labels.
const fold_order = blk: {
    var labels: [R][R]usize = undefined;
    for (&labels, 0..) |*reg, l| reg.* = @splat(l);
    var seg = R;
    while (seg > 1) : (seg /= 2) {
        for (0..seg / 2) |p| {
            for (0..R) |o| labels[p][o] = if (o % seg >= seg / 2) labels[2 * p + 1][o] else labels[2 * p][o];
        }
    }
    var order: [R]usize = undefined;
    for (0..R) |o| order[labels[0][o]] = o;
    break :blk order;
};

/// wholeVectors' second pass, the rounding mode known at compile time: the
/// codes of blocks [b, b + n), a batch whose amax bits and factors are
/// `bits` and `r` (src and dst are locals: stores through dst could
/// otherwise alias the Args they came from, and be reloaded each vector).
/// A batch with finite amaxes and factors cannot make a NaN y: its codes
/// skip the NaN selects and the test a block; another batch tests each
/// block (pairs: each two).
inline fn batchCodes(comptime f: MxFormat, comptime t: DType, comptime mode: types.RoundMode, comptime pairs: bool, src: [*]const u8, dst: [*]u8, b: usize, n: usize, size: usize, bits: *const [batch_blocks]u32, r: *const [batch_blocks]f32, key: *rounding.Key) void {
    const e = comptime element(f);
    const all_clean = batchClean(n, bits, r);
    const ahead = t.byteCount(n * size);
    if (pairs) {
        var k: usize = 0;
        if (all_clean) {
            while (k < n) : (k += 2) {
                const i = (b + k) * R;
                const m: V = @bitCast([2]@Vector(R, f32){ @splat(r[k]), @splat(r[k + 1]) });
                prefetchNext(t, src, i, ahead);
                storeCodes(f, dst, i, 0, w, encode(e, true, floats.loadFloats(t, src, i) * m, mode, key, i));
            }
            return;
        }
        while (k < n) : (k += 2) {
            const i = (b + k) * R;
            const m: V = @bitCast([2]@Vector(R, f32){ @splat(r[k]), @splat(r[k + 1]) });
            prefetchNext(t, src, i, ahead);
            const x = floats.loadFloats(t, src, i);
            const clean = @max(bits[k], bits[k + 1]) < 0x7F80_0000 and std.math.isFinite(r[k]) and std.math.isFinite(r[k + 1]);
            const c = if (clean) encode(e, true, x * m, mode, key, i) else encode(e, false, signedNans(x * m, x, m), mode, key, i);
            storeCodes(f, dst, i, 0, w, c);
        }
        return;
    }
    if (all_clean) {
        for (0..n) |k| {
            const i = (b + k) * size;
            const m: V = @splat(r[k]);
            var j: usize = 0;
            while (j < size) : (j += w) {
                prefetchNext(t, src, i + j, ahead);
                storeCodes(f, dst, i + j, 0, w, encode(e, true, floats.loadFloats(t, src, i + j) * m, mode, key, i + j));
            }
        }
        return;
    }
    for (0..n) |k| {
        const i = (b + k) * size;
        const m: V = @splat(r[k]);
        var j: usize = 0;
        if (bits[k] < 0x7F80_0000 and std.math.isFinite(r[k])) {
            while (j < size) : (j += w) {
                prefetchNext(t, src, i + j, ahead);
                const x = floats.loadFloats(t, src, i + j);
                storeCodes(f, dst, i + j, 0, w, encode(e, true, x * m, mode, key, i + j));
            }
        } else while (j < size) : (j += w) {
            prefetchNext(t, src, i + j, ahead);
            const x = floats.loadFloats(t, src, i + j);
            storeCodes(f, dst, i + j, 0, w, encode(e, false, signedNans(x * m, x, m), mode, key, i + j));
        }
    }
}

/// Prefetches the lines of the vector at element i a batch (`ahead` bytes)
/// on: memory streams the next batch while this one's codes are computed
/// from L1, instead of only during the next amax pass.
inline fn prefetchNext(comptime t: DType, src: [*]const u8, i: usize, ahead: usize) void {
    inline for (0..comptime @max(1, t.byteCount(w) / 64)) |l| @prefetch(src + t.byteCount(i) + ahead + 64 * l, .{ .locality = 3 });
}

/// Whether blocks [0, n) of a batch have finite amax bits and factors.
fn batchClean(n: usize, bits: *const [batch_blocks]u32, r: *const [batch_blocks]f32) bool {
    const magnitude = splat(u32, 0x7FFF_FFFF);
    var top: U = @splat(0);
    var k: usize = 0;
    while (k + w <= n) : (k += w) top = @max(top, @max(@as(U, bits[k..][0..w].*), @as(U, @bitCast(@as(V, r[k..][0..w].*))) & magnitude));
    var m = @reduce(.Max, top);
    while (k < n) : (k += 1) m = @max(m, @max(bits[k], @as(u32, @bitCast(r[k])) & 0x7FFF_FFFF));
    return m < 0x7F80_0000;
}

/// Blocks in a batch of wholeVectors: a multiple of every target's w.
const batch_blocks = 256;

comptime {
    std.debug.assert(batch_blocks % w == 0);
}

/// blockScale of blocks [0, n) of amax bits (lanes up to the next multiple
/// of w are 0), w blocks a vector where the rule is a few integer and
/// float operations: the same values, lane by lane. rceil's float64 log2
/// stays scalar.
fn blockScales(comptime f: MxFormat, a: *const Args, bits: *const [batch_blocks]u32, n: usize, codes: *[batch_blocks]u8, r: *[batch_blocks]f32, factors: *const Factors) void {
    const e = comptime element(f);
    if (f != .nvfp4 and a.scale_mode == .rceil) {
        for (0..n) |k| {
            const s = blockScale(a, e, if (bits[k] > 0x7F80_0000) std.math.nan(f32) else @bitCast(bits[k]), factors);
            codes[k] = s.code;
            r[k] = s.r;
        }
        return;
    }
    var k: usize = 0;
    while (k < n) : (k += w) {
        const x: U = bits[k..][0..w].*;
        const nan = x > splat(u32, 0x7F80_0000);
        if (f == .nvfp4) {
            // e4m3Code of the clamped b, lane by lane.
            var q = @as(V, @bitCast(x)) / splat(f32, 6);
            if (a.per_tensor_scale != 0) q = q / splat(f32, a.per_tensor_scale);
            const bad = q != q;
            const c = @min(@max(@select(f32, bad, splat(f32, 1), q), splat(f32, 0x1p-6)), splat(f32, 448));
            const ex: I = @as(I, @bitCast(@as(U, @bitCast(c)) >> @splat(23))) - splat(i32, 127);
            const y = c * pow2v(splat(i32, 3) - ex);
            const even = (y + splat(f32, 0x1p23)) - splat(f32, 0x1p23);
            const code: U = @bitCast(((ex + splat(i32, 6)) << @splat(3)) + @as(I, @intFromFloat(even)));
            const sc = @select(u32, bad, splat(u32, 0x7F), code);
            codes[k..][0..w].* = @as(@Vector(w, u8), @truncate(sc));
            for (k..k + w) |l| r[l] = factors[codes[l]];
        } else {
            // floor: the exponent field (≤ 255: the sign is clear) less emax.
            const exp = @as(I, @bitCast(x >> @splat(23))) - splat(i32, 127);
            const s = @max(@min(exp - splat(i32, e.emax), splat(i32, 128)), splat(i32, -127)) + splat(i32, 127);
            const sc = @select(i32, nan, splat(i32, 255), s);
            const k2 = splat(i32, 127) - sc;
            const kk = if (e.int) k2 else @min(k2, splat(i32, 126));
            const normal = @as(U, @bitCast(kk + splat(i32, 127))) << @splat(23);
            var rb = @select(u32, kk >= splat(i32, -126), normal, splat(u32, 0x0040_0000)); // 2^-127
            rb = @select(u32, sc == splat(i32, 255), splat(u32, 0), rb);
            codes[k..][0..w].* = @as(@Vector(w, u8), @truncate(@as(U, @bitCast(sc))));
            r[k..][0..w].* = @as(V, @bitCast(rb));
        }
    }
}

fn dequantizeRange(args: *const Args, begin: usize, end: usize) callconv(.c) void {
    const a = args.*;
    const e = element(a.mx);
    const size = a.block_size;
    var sf: [batch_elements]f32 = undefined;
    const per: usize = @max(1, batch_elements / size);
    var b = begin;
    while (b < end) {
        const n = @min(per, end - b);
        for (0..n) |k| sf[k] = scaleValue(&a, a.mx_scales.?[b + k]);
        var it = Vectors.init(b * size, n, size);
        while (it.next(sf[0..n])) |s| {
            const q = decode(e, loadCodes(a.mx, a.src, it.v, it.lo, it.hi));
            const y = signedNans(q * s, q, s);
            if (it.whole()) store(a.float_type, a.dst, it.v, y) else storePart(a.float_type, a.dst, it.v, it.lo, it.hi, y);
            it.v += w;
        }
        b += n;
    }
}

/// This family's slots of the kernel table.
pub const entries = .{
    .mx_quantize = &quantizeRange,
    .mx_dequantize = &dequantizeRange,
};

const testing = std.testing;

test "E4M3 block scales: codes and values agree, ties go to even" {
    try testing.expectEqual(@as(u8, 0x7E), e4m3Code(448));
    try testing.expectEqual(@as(f32, 448), e4m3Value(0x7E));
    try testing.expectEqual(@as(u8, 0x08), e4m3Code(0x1p-6));
    try testing.expectEqual(@as(u8, 0x58), e4m3Code(17)); // 16 and 18 are neighbours: 17 goes to 16
    try testing.expect(std.math.isNan(e4m3Value(0xFF)));
    try testing.expectEqual(@as(f32, -0x1p-9), e4m3Value(0x81));
}

test "every code decodes to a value that encodes back to it" {
    inline for (.{ MxFormat.mxfp8_e4m3, .mxfp8_e5m2, .mxfp6_e2m3, .mxfp6_e3m2, .mxfp4, .mxint8 }) |f| {
        const e = comptime element(f);
        const count: u32 = @as(u32, 1) << e.float.bits;
        var c: u32 = 0;
        while (c < count) : (c += w) {
            const codes = std.simd.iota(u32, w) + splat(u32, c);
            const v = decode(e, codes);
            var key = rounding.Key.init(0);
            const back = encode(e, false, v, .nearest, &key, 0);
            for (0..w) |j| {
                if (codes[j] >= count) continue;
                const mag = codes[j] & ((count >> 1) - 1);
                if (!e.int and (mag == e.float.inf or mag >= e.float.dnan)) continue; // inf saturates; NaN codes are one code
                try testing.expectEqual(codes[j], back[j]);
            }
        }
    }
}
