//! Types shared by the per-ISA kernel objects and the C ABI layer. Everything
//! that crosses an object boundary is `extern` so that objects compiled for
//! different CPU models agree on layout.

/// Element types. Values are the C ABI's `piquant_dtype`; floats below 16,
/// quantized types from 16 on, so later dtypes slot in without renumbering.
pub const DType = enum(c_int) {
    f32 = 0,
    bf16 = 1,
    uint4 = 18,
    int4 = 19,
    uint8 = 20,
    int8 = 21,
    _,

    pub fn isFloat(t: DType) bool {
        return t == .f32 or t == .bf16;
    }

    pub fn isQuantized(t: DType) bool {
        return switch (t) {
            .uint4, .int4, .uint8, .int8 => true,
            else => false,
        };
    }

    /// Bits per element in memory.
    pub fn bits(t: DType) u8 {
        return switch (t) {
            .f32 => 32,
            .bf16 => 16,
            .uint4, .int4 => 4,
            .uint8, .int8 => 8,
            _ => 0,
        };
    }

    pub fn qmin(t: DType) i64 {
        return switch (t) {
            .int4 => -8,
            .int8 => -128,
            else => 0,
        };
    }

    pub fn qmax(t: DType) i64 {
        return switch (t) {
            .uint4 => 15,
            .int4 => 7,
            .uint8 => 255,
            .int8 => 127,
            else => 0,
        };
    }

    /// Bytes needed for `n` elements; packed types round up to whole bytes.
    pub fn byteCount(t: DType, n: usize) usize {
        return switch (t.bits()) {
            4 => n / 2 + n % 2,
            else => |b| n * (b / 8),
        };
    }
};

pub const RoundMode = enum(c_int) { nearest = 0, stochastic = 1, _ };

pub const ReduceOp = enum(c_int) { set = 0, add = 1, _ };

/// Arguments of one quantize call. Kernels process element ranges
/// `[begin, end)` of it; for packed types `begin` is a multiple of the
/// elements per byte.
pub const QuantizeArgs = extern struct {
    src: [*]const u8,
    dst: [*]u8,
    src_type: DType,
    dst_type: DType,
    inv_scale: f32,
    zero_point: i64,
    round_mode: RoundMode,
};

pub const DequantizeArgs = extern struct {
    src: [*]const u8,
    dst: [*]u8,
    src_type: DType,
    dst_type: DType,
    scale: f32,
    zero_point: i64,
    reduce_op: ReduceOp,
};

/// Smallest and largest non-NaN value of a range; +inf/-inf if it has none.
pub const MinMax = extern struct {
    min: f32,
    max: f32,
};

/// One per ISA variant. Each kernel takes its argument block and an element
/// range, so the thread pool can split any call without knowing its type.
pub const KernelTable = extern struct {
    quantize: *const fn (args: *const QuantizeArgs, begin: usize, end: usize) callconv(.c) void,
    dequantize: *const fn (args: *const DequantizeArgs, begin: usize, end: usize) callconv(.c) void,
    minmax: *const fn (src: [*]const u8, src_type: DType, begin: usize, end: usize) callconv(.c) MinMax,
};

pub const Isa = enum(c_int) {
    generic = 0,
    sse42 = 1,
    avx2 = 2,
    avx512f = 3,
    neon = 4,
};

/// Elements per parallel work unit are a multiple of this, so no byte of a
/// packed output is shared by two threads and chunk starts stay aligned.
pub const chunk_granule = 64;

/// Round half to even. Adding and subtracting 2^23 leaves the nearest
/// integer under the default rounding mode; magnitudes of 2^23 and up are
/// integers already. The float mode is strict, so this is not folded away.
pub fn roundHalfEven(comptime n: comptime_int, y: @Vector(n, f32)) @Vector(n, f32) {
    const V = @Vector(n, f32);
    const U = @Vector(n, u32);
    const two23: V = @splat(8388608.0);
    const a = @abs(y);
    const r: U = @bitCast((a + two23) - two23);
    const sign = @as(U, @bitCast(y)) & @as(U, @splat(0x8000_0000));
    return @select(f32, a < two23, @as(V, @bitCast(r | sign)), y);
}
