//! The vocabulary shared by the per-ISA kernel objects and the C ABI layer:
//! element types, modes, a call's arguments and the kernel table. Everything
//! that crosses an object boundary is `extern` so that objects compiled for
//! different CPU models agree on layout.

const std = @import("std");

/// Element types. Values are the C ABI's `piquant_dtype`; floats below 16,
/// quantized types from 16 on.
pub const DType = enum(c_int) {
    f32 = 0,
    bf16 = 1,
    f16 = 2,
    f64 = 3,
    uint2 = 16,
    int2 = 17,
    uint4 = 18,
    int4 = 19,
    uint8 = 20,
    int8 = 21,
    uint16 = 22,
    int16 = 23,
    uint32 = 24,
    int32 = 25,
    uint64 = 26,
    int64 = 27,
    float8_e4m3fn = 28,
    float8_e5m2 = 29,
    _,

    pub const floats = [_]DType{ .f32, .bf16, .f16, .f64 };
    pub const quantized = [_]DType{ .uint2, .int2, .uint4, .int4, .uint8, .int8, .uint16, .int16, .uint32, .int32, .uint64, .int64 };
    /// FP8 types quantize with a scale alone (formats/float8.zig).
    pub const float8 = [_]DType{ .float8_e4m3fn, .float8_e5m2 };

    pub fn isFloat(t: DType) bool {
        return std.mem.indexOfScalar(DType, &floats, t) != null;
    }

    pub fn isQuantized(t: DType) bool {
        return std.mem.indexOfScalar(DType, &quantized, t) != null or t.isFloat8();
    }

    pub fn isFloat8(t: DType) bool {
        return t == .float8_e4m3fn or t == .float8_e5m2;
    }

    /// Of the integer types; FP8 codes are stored as raw bytes.
    pub fn isSigned(t: DType) bool {
        return !t.isFloat8() and @intFromEnum(t) & 1 == 1;
    }

    /// Bits per element in memory.
    pub fn bits(t: DType) u8 {
        return switch (t) {
            .f32 => 32,
            .bf16, .f16 => 16,
            .f64 => 64,
            .uint2, .int2 => 2,
            .uint4, .int4 => 4,
            .uint8, .int8, .float8_e4m3fn, .float8_e5m2 => 8,
            .uint16, .int16 => 16,
            .uint32, .int32 => 32,
            .uint64, .int64 => 64,
            _ => 0,
        };
    }

    /// FP8 types have no integer range: [0, 0] holds their zero point to 0.
    pub fn qmin(t: DType) i128 {
        if (!t.isSigned()) return 0;
        return -(@as(i128, 1) << @intCast(t.bits() - 1));
    }

    pub fn qmax(t: DType) i128 {
        if (t.isFloat8()) return 0;
        if (!t.isSigned()) return (@as(i128, 1) << @intCast(t.bits())) - 1;
        return (@as(i128, 1) << @intCast(t.bits() - 1)) - 1;
    }

    /// The integer type a quantized element is stored as (packed types: u8).
    pub fn Storage(comptime t: DType) type {
        return std.meta.Int(if (t.isSigned()) .signed else .unsigned, @max(8, t.bits()));
    }

    /// The float type arithmetic on this float type is done in.
    pub fn Compute(comptime t: DType) type {
        return if (t == .f64) f64 else f32;
    }

    /// Elements per byte of packed types, 1 otherwise.
    pub fn perByte(t: DType) usize {
        return if (t.bits() < 8) 8 / t.bits() else 1;
    }

    /// Bytes needed for `n` elements; packed types round up to whole bytes.
    pub fn byteCount(t: DType, n: usize) usize {
        if (t.bits() < 8) return std.math.divCeil(usize, n, t.perByte()) catch unreachable;
        return n * (t.bits() / 8);
    }

    /// A zero point as passed through the ABI (an int64; uint64's are its
    /// bits) as the exact integer it stands for.
    pub fn zeroPoint(t: DType, raw: i64) i128 {
        return if (t == .uint64) @as(u64, @bitCast(raw)) else raw;
    }

    /// The ABI form of an exact zero point; see `zeroPoint`.
    pub fn rawZeroPoint(t: DType, zp: i128) i64 {
        return if (t == .uint64) @bitCast(@as(u64, @intCast(zp))) else @intCast(zp);
    }
};

pub const RoundMode = enum(c_int) { nearest = 0, stochastic = 1, _ };

pub const ReduceOp = enum(c_int) { set = 0, add = 1, _ };

/// Arguments of one quantize, dequantize or fake-quantize call. Kernels
/// process element ranges `[begin, end)` of it; `begin` is always a multiple
/// of `chunk_granule`.
pub const Args = extern struct {
    src: [*]const u8,
    dst: [*]u8,
    /// The float side: quantize's input, dequantize's output, fake-quantize's both.
    float_type: DType,
    quant_type: DType,
    scale: f64,
    zero_point: i64,
    round_mode: RoundMode,
    reduce_op: ReduceOp,
    seed: u64,
    /// Nonzero: write whole cache lines of the output with stores that
    /// bypass the cache (set by the ABI for outputs too large to stay cached).
    stream: u32,
    /// Per-channel or per-group parameters when `scales` is set: element i
    /// uses scales[s] and zero_points[s] with s = (i / inner) % count, and
    /// `scale`/`zero_point` are unused. Scales are f32 or f64 (`scale_type`).
    scales: ?[*]const u8 = null,
    scale_type: DType = .f64,
    zero_points: [*]const i64 = undefined,
    inner: usize = 1,
    count: usize = 1,
    /// The llama.cpp block format of gguf_quantize/gguf_dequantize calls.
    gguf: GgufType = .q8_0,
    /// mx_quantize/mx_dequantize (formats/mx.zig): the block format, the
    /// elements of a block, the scale rule, the block scales (written by
    /// quantize, read by dequantize) and NVFP4's per-tensor scale (0: none).
    /// Their element ranges are ranges of blocks.
    mx: MxFormat = .mxfp8_e4m3,
    scale_mode: ScaleMode = .floor,
    block_size: usize = 32,
    mx_scales: ?[*]u8 = null,
    per_tensor_scale: f32 = 0,
};

/// OCP microscaling formats and NVFP4; values are the C ABI's piquant_mx_format.
pub const MxFormat = enum(c_int) {
    mxfp8_e4m3 = 0,
    mxfp8_e5m2 = 1,
    mxfp6_e2m3 = 2,
    mxfp6_e3m2 = 3,
    mxfp4 = 4,
    mxint8 = 5,
    nvfp4 = 6,
    _,

    pub fn isKnown(f: MxFormat) bool {
        return @intFromEnum(f) >= 0 and @intFromEnum(f) <= 6;
    }

    /// Two codes a byte.
    pub fn isFp4(f: MxFormat) bool {
        return f == .mxfp4 or f == .nvfp4;
    }

    /// Bytes of the codes of `n` elements.
    pub fn dataBytes(f: MxFormat, n: usize) usize {
        return if (f.isFp4()) n / 2 else n;
    }
};

/// How an MX block's E8M0 scale follows from its largest magnitude.
pub const ScaleMode = enum(c_int) { floor = 0, rceil = 1, _ };

/// llama.cpp / GGUF block formats; values are GGML's type numbers.
pub const GgufType = enum(c_int) {
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    mxfp4 = 39,
    _,

    pub const all = [_]GgufType{ .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .mxfp4, .q4_k, .q5_k, .q6_k };

    /// Bytes of one block (0 if unknown).
    pub fn blockBytes(t: GgufType) usize {
        return switch (t) {
            .q4_0 => 18,
            .q4_1 => 20,
            .q5_0 => 22,
            .q5_1 => 24,
            .q8_0 => 34,
            .mxfp4 => 17,
            .q4_k => 144,
            .q5_k => 176,
            .q6_k => 210,
            _ => 0,
        };
    }

    /// Elements of one block: 32, or 256 for the K-quants' super-blocks.
    pub fn blockElements(t: GgufType) usize {
        return if (t.isKQuant()) gguf_super_block else gguf_block;
    }

    pub fn isKQuant(t: GgufType) bool {
        return t == .q4_k or t == .q5_k or t == .q6_k;
    }
};

/// Scale k of an array of f32 or f64 scales, as f64 (exactly).
pub fn scaleAt(scales: [*]const u8, t: DType, k: usize) f64 {
    if (t == .f32) return @as([*]align(1) const f32, @ptrCast(scales))[k];
    return @as([*]align(1) const f64, @ptrCast(scales))[k];
}

/// Elements per GGUF block, and per K-quant super-block.
pub const gguf_block = 32;
pub const gguf_super_block = 256;

/// Smallest and largest non-NaN value of a range; +inf/-inf if it has none.
pub const MinMax = extern struct {
    min: f64,
    max: f64,
};

pub const Kernel = *const fn (args: *const Args, begin: usize, end: usize) callconv(.c) void;

/// One per ISA variant. Each kernel takes its argument block and an element
/// range, so the thread pool can split any call without knowing its type.
pub const KernelTable = extern struct {
    quantize: Kernel,
    dequantize: Kernel,
    fake_quantize: Kernel,
    /// Element ranges of these two are whole GGUF blocks.
    gguf_quantize: Kernel,
    gguf_dequantize: Kernel,
    /// quantize, dequantize and fake_quantize of the FP8 types.
    float8_quantize: Kernel,
    float8_dequantize: Kernel,
    float8_fake_quantize: Kernel,
    /// MX and NVFP4 blocks; element ranges are ranges of blocks (Args.block_size).
    mx_quantize: Kernel,
    mx_dequantize: Kernel,
    /// Whether sets [begin, end) of per-channel/per-group parameters are
    /// all valid for a call with these float and quantized types.
    valid_sets: *const fn (float_type: DType, quant_type: DType, scales: [*]const u8, scale_type: DType, zero_points: [*]const i64, begin: usize, end: usize) callconv(.c) bool,
    minmax: *const fn (src: [*]const u8, src_type: DType, begin: usize, end: usize) callconv(.c) MinMax,
    /// Sets [first, last) of a per-channel/per-group layout's ranges.
    minmax_sets: *const fn (job: *const SetRanges, first: usize, last: usize) callconv(.c) void,
    /// Parameters of the first n sets of `job` from their ranges: the index
    /// of the first set whose range has none (infinite, or overflowing), or n.
    params_sets: *const fn (job: *const SetParams, n: usize) callconv(.c) usize,
};

/// The smallest and largest non-NaN value of each set s of an (outer,
/// count, inner) layout of `src` over rows [row_begin, row_end): set s is
/// the runs [(o·count + s)·inner, +inner) for each such o. Sets first …
/// last - 1 go to mins[0 .. last - first] and maxs[0 .. last - first].
pub const SetRanges = extern struct {
    src: [*]const u8,
    src_type: DType,
    row_begin: usize,
    row_end: usize,
    count: usize,
    inner: usize,
    mins: [*]f64,
    maxs: [*]f64,
};

/// Sets' ranges (mins, maxs) turned into parameters (scales, zero_points,
/// in the ABI's form) for input type float_type and quantized type quant_type.
pub const SetParams = extern struct {
    float_type: DType,
    quant_type: DType,
    symmetric: bool,
    mins: [*]const f64,
    maxs: [*]const f64,
    /// Values of scale_type: f64, or f32 where the compute type is f32.
    scales: [*]u8,
    scale_type: DType,
    zero_points: [*]i64,
};

/// Elements per parallel work unit are a multiple of this, so no byte of a
/// packed output is shared by two threads and chunk starts stay aligned.
pub const chunk_granule = 64;

test "quantized ranges" {
    try std.testing.expectEqual(@as(i128, -2), DType.int2.qmin());
    try std.testing.expectEqual(@as(i128, 3), DType.uint2.qmax());
    try std.testing.expectEqual(@as(i128, std.math.maxInt(u64)), DType.uint64.qmax());
    try std.testing.expectEqual(@as(i128, std.math.minInt(i64)), DType.int64.qmin());
    try std.testing.expectEqual(@as(usize, 3), DType.uint2.byteCount(9));
    try std.testing.expect(DType.int32.Storage() == i32);
}
