/*
 * piquant — fast multithreaded CPU quantization kernels. C99 interface.
 *
 * Every function that can fail returns a piquant_status; on failure,
 * piquant_last_error() returns a message naming the argument and what was
 * expected (per thread, valid until the next failing call on that thread).
 * No function aborts the process on bad input. The exact semantics of every
 * operation are in docs/semantics.md.
 */
#ifndef PIQUANT_H
#define PIQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface; piquant_abi_version() returns the library's. */
#define PIQUANT_ABI_VERSION 4

typedef enum piquant_status {
    PIQUANT_OK = 0,
    PIQUANT_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, absurd length, unknown enum value */
    PIQUANT_ERR_UNSUPPORTED_DTYPE = 2, /* dtype not valid in this position */
    PIQUANT_ERR_INVALID_VALUE = 3,     /* scale or zero_point out of range; non-finite data */
    PIQUANT_ERR_ISA_UNAVAILABLE = 4,   /* requested ISA unknown or not runnable here */
    PIQUANT_ERR_RESOURCE = 5,          /* out of memory, could not start threads */
    PIQUANT_ERR_UNSUPPORTED = 6,       /* a valid request this version does not implement */
    PIQUANT_ERR_CLOSED = 7             /* the context was destroyed (see piquant_context) */
} piquant_status;

/* Element types. Floats are below 16, quantized types from 16 on.
 * Arithmetic is done in float64 when the float side is F64, else in float32.
 * 2- and 4-bit types are packed 4 or 2 per byte, first element in the lowest
 * bits (torch.quint2x4 / quint4x2 layout); unused fields of a last byte are 0.
 * Quantized types of 8 bits and more are stored as the C integer type; FP8
 * types as their one-byte codes (docs/semantics.md, FP8 types): they take a
 * scale and zero_point 0, and quantize to the nearest FP8 value of
 * clamp(c(in[i]) * (1/scale), -max, max) (NaN stays NaN). */
typedef enum piquant_dtype {
    PIQUANT_DTYPE_F32 = 0,
    PIQUANT_DTYPE_BF16 = 1,   /* the upper 16 bits of an IEEE binary32 */
    PIQUANT_DTYPE_F16 = 2,    /* IEEE binary16 */
    PIQUANT_DTYPE_F64 = 3,
    PIQUANT_DTYPE_UINT2 = 16, /* [0, 3] */
    PIQUANT_DTYPE_INT2 = 17,  /* [-2, 1] */
    PIQUANT_DTYPE_UINT4 = 18,
    PIQUANT_DTYPE_INT4 = 19,
    PIQUANT_DTYPE_UINT8 = 20,
    PIQUANT_DTYPE_INT8 = 21,
    PIQUANT_DTYPE_UINT16 = 22,
    PIQUANT_DTYPE_INT16 = 23,
    PIQUANT_DTYPE_UINT32 = 24,
    PIQUANT_DTYPE_INT32 = 25,
    PIQUANT_DTYPE_UINT64 = 26,
    PIQUANT_DTYPE_INT64 = 27,
    PIQUANT_DTYPE_FLOAT8_E4M3FN = 28, /* OCP FP8 E4M3 (no inf; max 448), zero_point 0 */
    PIQUANT_DTYPE_FLOAT8_E5M2 = 29    /* OCP FP8 E5M2 (max 57344), zero_point 0 */
} piquant_dtype;

typedef enum piquant_round_mode {
    PIQUANT_ROUND_NEAREST = 0,   /* half to even */
    PIQUANT_ROUND_STOCHASTIC = 1 /* up with probability frac(y); keyed by (seed, element index) */
} piquant_round_mode;

typedef enum piquant_reduce_op {
    PIQUANT_REDUCE_SET = 0, /* out = x */
    PIQUANT_REDUCE_ADD = 1  /* out += x */
} piquant_reduce_op;

/* Kernel variants; piquant_isa_mask() has bit (1 << isa) set for each one
 * this library has and this CPU runs. */
typedef enum piquant_isa {
    PIQUANT_ISA_GENERIC = 0,
    PIQUANT_ISA_SSE42 = 1,
    PIQUANT_ISA_AVX2 = 2,
    PIQUANT_ISA_AVX512F = 3,
    PIQUANT_ISA_NEON = 4
} piquant_isa;

/* Smallest and largest non-NaN value; +inf and -inf when there is none. */
typedef struct piquant_minmax_result {
    double min;
    double max;
} piquant_minmax_result;

/* An opaque context: a kernel table and a thread pool. A context may be used
 * by several threads at once (calls that find its pool busy run on the
 * calling thread alone).
 *
 * Lifetime: piquant_context_destroy may be called while other threads are
 * inside calls on the context. It closes the context at once, waits for the
 * calls in flight to return (they finish normally), then stops the threads
 * and frees it. Calls that arrive once destroy has begun return
 * PIQUANT_ERR_CLOSED. A handle is an index with a generation, not an
 * address: after destroy it never refers to another context, and every call
 * with it (destroy included) keeps failing with PIQUANT_ERR_CLOSED (destroy:
 * does nothing) — no use after free. At most 65536 contexts are open at once.
 *
 * fork: in the child, contexts made before the fork keep working, but their
 * pool threads do not exist there, so every call runs on the calling thread
 * alone (piquant_context_num_threads returns 1) and destroy joins no thread.
 * The child never frees what the parent's threads owned: a context another
 * thread was creating or destroying at the moment of the fork, and each pool
 * thread's start record (a few bytes; leak checkers report them in the child).
 * Contexts created in the child get a full pool. (Detected with
 * pthread_atfork: a raw clone/fork system call bypasses it.) */
typedef struct piquant_context piquant_context;

/* The library's ABI version (PIQUANT_ABI_VERSION when header and library match). */
uint32_t piquant_abi_version(void);
/* The library's version string, e.g. "0.1.0". */
const char *piquant_version(void);
/* The message of the last failing call on this thread ("" if none). */
const char *piquant_last_error(void);
/* Name of an ISA value ("avx2"), or NULL for an unknown value. */
const char *piquant_isa_name(int isa);
/* Bit mask of the ISA variants built in and runnable on this CPU. */
uint32_t piquant_isa_mask(void);
/* The variant a context picks when none is requested. */
int piquant_best_isa(void);
/* Threads a context uses when asked for 0: PIQUANT_NUM_THREADS if valid,
 * else the CPUs this process may run on (affinity mask, cgroup quota). */
size_t piquant_default_num_threads(void);

/* Creates a context.
 *   num_threads: threads including the caller; 0 = piquant_default_num_threads().
 *   isa: variant name, exactly ("generic", "sse42", "avx2", "avx512f", "neon";
 *        "" is not one; "avx512f" needs AVX-512 F, BW, DQ and VL); NULL uses PIQUANT_ISA, else the best. Environment
 *        variables (PIQUANT_ISA, PIQUANT_NUM_THREADS) ignore surrounding
 *        white space; unset, empty or blank means the default.
 *   out: receives the context (NULL on failure). */
int piquant_context_create(size_t num_threads, const char *isa, piquant_context **out);
/* Waits for the calls in flight, stops the pool's threads and frees the
 * context (see piquant_context); NULL or a destroyed handle is ignored. */
void piquant_context_destroy(piquant_context *ctx);
/* Threads of a context (including the caller), 0 for NULL or a destroyed one. */
size_t piquant_context_num_threads(const piquant_context *ctx);
/* The piquant_isa a context runs, -1 for NULL or a destroyed one. */
int piquant_context_isa(const piquant_context *ctx);

/* Parameters shared by the functions below.
 *   scale: rounded to the compute precision (float32 unless the float side is
 *        F64) it must be finite, > 0, and have a finite reciprocal there.
 *   zero_point: an integer within the quantized type's range. For UINT64 it
 *        is passed as the int64_t with the same bits ((int64_t)(uint64_t)zp).
 *   seed: keys stochastic rounding (ignored by NEAREST); the same seed gives
 *        the same result for every thread count and ISA variant. */

/* out[i] = clamp(round(c(in[i]) * (1/scale)) + zero_point, qmin, qmax), the
 * clamp on exact integers; NaN gives zero_point, +-inf qmax/qmin.
 *   in: numel elements of dtype_in (a float type).
 *   out: the bytes of numel elements of dtype_out (a quantized type). */
int piquant_quantize(piquant_context *ctx, const void *in, piquant_dtype dtype_in, void *out,
                     piquant_dtype dtype_out, size_t numel, double scale, int64_t zero_point,
                     piquant_round_mode mode, uint64_t seed);

/* out[i] = c(in[i] - zero_point) * scale, rounded to dtype_out (SET), or
 * out[i] = round(c(out[i]) + c(in[i] - zero_point) * scale) (ADD); c is the
 * compute precision of dtype_out and in[i] - zero_point is exact before it
 * is rounded to c.
 *   in: numel elements of dtype_in (a quantized type), packed as above.
 *   out: numel elements of dtype_out (a float type). */
int piquant_dequantize(piquant_context *ctx, const void *in, piquant_dtype dtype_in, void *out,
                       piquant_dtype dtype_out, size_t numel, double scale, int64_t zero_point,
                       piquant_reduce_op op);

/* dequantize(quantize(in)) in one pass, bit for bit, without materializing
 * the integers: in and out are numel elements of the float type dtype; out
 * may equal in (the same pointer) but must not overlap it otherwise. */
int piquant_fake_quantize(piquant_context *ctx, const void *in, piquant_dtype dtype, void *out,
                          size_t numel, piquant_dtype dtype_q, double scale, int64_t zero_point,
                          piquant_round_mode mode, uint64_t seed, piquant_reduce_op op);

/* Smallest and largest non-NaN value of numel elements of dtype_in (a float
 * type), exactly, as doubles. */
int piquant_minmax(piquant_context *ctx, const void *in, piquant_dtype dtype_in, size_t numel,
                   piquant_minmax_result *out);

/* scale and zero_point for quantizing in[0..numel) to dtype_q, as
 * torch.ao.quantization.MinMaxObserver computes them (symmetric != 0 for the
 * symmetric scheme), in the compute precision of dtype_in. NaN is ignored; an
 * infinite value gives PIQUANT_ERR_INVALID_VALUE. UINT64 zero points are
 * returned as their bits, as above. */
int piquant_compute_params(piquant_context *ctx, const void *in, piquant_dtype dtype_in,
                           size_t numel, piquant_dtype dtype_q, int symmetric, double *out_scale,
                           int64_t *out_zero_point);

/* Per-channel and per-group parameters: element i of a call uses
 * scales[s] and zero_points[s] with s = (i / inner) % count, so numel must
 * be a multiple of count * inner. Per channel along axis k of a row-major
 * shape: count = shape[k], inner = the product of shape[k+1:]. Per group of
 * g along the last axis: count = numel / g, inner = g. Every set is checked
 * as scale/zero_point above; a bad one is named in the message. */
typedef struct piquant_params {
    const void *scales;         /* count values of scale_type */
    const int64_t *zero_points; /* count values (UINT64: their bits) */
    size_t count;
    size_t inner;
    piquant_dtype scale_type;   /* PIQUANT_DTYPE_F32 or PIQUANT_DTYPE_F64 */
} piquant_params;

/* piquant_quantize, piquant_dequantize and piquant_fake_quantize with one
 * parameter set per channel or group; otherwise the same, bit for bit. */
int piquant_quantize_grouped(piquant_context *ctx, const void *in, piquant_dtype dtype_in,
                             void *out, piquant_dtype dtype_out, size_t numel,
                             const piquant_params *params, piquant_round_mode mode,
                             uint64_t seed);
int piquant_dequantize_grouped(piquant_context *ctx, const void *in, piquant_dtype dtype_in,
                               void *out, piquant_dtype dtype_out, size_t numel,
                               const piquant_params *params, piquant_reduce_op op);
int piquant_fake_quantize_grouped(piquant_context *ctx, const void *in, piquant_dtype dtype,
                                  void *out, size_t numel, piquant_dtype dtype_q,
                                  const piquant_params *params, piquant_round_mode mode,
                                  uint64_t seed, piquant_reduce_op op);

/* piquant_compute_params for each of count sets laid out as above, into
 * out_scales[count] (values of scale_type: PIQUANT_DTYPE_F64, or
 * PIQUANT_DTYPE_F32 for an F32, F16 or BF16 input, whose scales are float32
 * values) and out_zero_points[count]; a set with an infinite value is named
 * in the message. */
int piquant_compute_params_grouped(piquant_context *ctx, const void *in, piquant_dtype dtype_in,
                                   size_t numel, piquant_dtype dtype_q, int symmetric,
                                   size_t count, size_t inner, void *out_scales,
                                   piquant_dtype scale_type, int64_t *out_zero_points);

/* llama.cpp / GGUF block formats (docs/semantics.md): blocks of 32 elements
 * (the K-quants: super-blocks of 256) in exactly the bytes GGUF files hold.
 * Values are GGML's type numbers. */
typedef enum piquant_gguf_type {
    PIQUANT_GGUF_Q4_0 = 2,   /* 18 bytes a block of 32 */
    PIQUANT_GGUF_Q4_1 = 3,   /* 20 bytes a block of 32 */
    PIQUANT_GGUF_Q5_0 = 6,   /* 22 bytes a block of 32 */
    PIQUANT_GGUF_Q5_1 = 7,   /* 24 bytes a block of 32 */
    PIQUANT_GGUF_Q8_0 = 8,   /* 34 bytes a block of 32 */
    PIQUANT_GGUF_Q4_K = 12,  /* 144 bytes a super-block of 256 */
    PIQUANT_GGUF_Q5_K = 13,  /* 176 bytes a super-block of 256 */
    PIQUANT_GGUF_Q6_K = 14,  /* 210 bytes a super-block of 256 */
    PIQUANT_GGUF_MXFP4 = 39  /* 17 bytes a block of 32 */
} piquant_gguf_type;

/* Bytes of one block of a GGUF type, 0 if the type is unknown. */
size_t piquant_gguf_block_bytes(int type);

/* numel (a multiple of the type's block size, 32 or 256; else
 * PIQUANT_ERR_INVALID_ARGUMENT naming it) elements of dtype_in (a float
 * type; F64 is first rounded to float32) to numel / block size blocks of
 * type at out. */
int piquant_gguf_quantize(piquant_context *ctx, const void *in, piquant_dtype dtype_in, void *out,
                          int type, size_t numel);
/* numel / block size blocks of type to numel elements of dtype_out (float32
 * values, then rounded or widened to dtype_out). */
int piquant_gguf_dequantize(piquant_context *ctx, const void *in, int type, void *out,
                            piquant_dtype dtype_out, size_t numel);

/* OCP microscaling formats and NVFP4 (docs/semantics.md, MX block formats
 * and NVFP4), in torchao's layouts: blocks of block_size consecutive
 * elements along rows of `row` elements (the last axis: a multiple of
 * block_size), one scale byte a block (E8M0; NVFP4: an E4M3 code); codes a
 * byte each (FP8, FP6 in the low 6 bits, MXINT8 int8) or two a byte (FP4,
 * the first element in the low nibble: numel / 2 bytes). */
typedef enum piquant_mx_format {
    PIQUANT_MXFP8_E4M3 = 0,
    PIQUANT_MXFP8_E5M2 = 1,
    PIQUANT_MXFP6_E2M3 = 2,
    PIQUANT_MXFP6_E3M2 = 3,
    PIQUANT_MXFP4 = 4,
    PIQUANT_MXINT8 = 5,
    PIQUANT_NVFP4 = 6 /* block_size 16 */
} piquant_mx_format;

typedef enum piquant_scale_mode {
    PIQUANT_SCALE_FLOOR = 0, /* OCP MX v1.0 */
    PIQUANT_SCALE_RCEIL = 1  /* NVIDIA, torchao's RCEIL; NVFP4 ignores the mode */
} piquant_scale_mode;

/* numel elements of dtype_in (a float type; F64 first rounded to float32) to
 * codes at out_data and numel / block_size scales at out_scales.
 * per_tensor_scale: NULL, or NVFP4's float32 scale (finite, > 0). Stochastic
 * rounding is keyed by (seed, flat element index) as piquant_quantize's. */
int piquant_mx_quantize(piquant_context *ctx, const void *in, piquant_dtype dtype_in,
                        void *out_data, void *out_scales, size_t numel, size_t row,
                        int format, size_t block_size, int scale_mode,
                        piquant_round_mode round_mode, uint64_t seed,
                        const float *per_tensor_scale);
/* Codes and scales as piquant_mx_quantize writes them to numel elements of
 * dtype_out (float32 products, then rounded or widened to dtype_out). */
int piquant_mx_dequantize(piquant_context *ctx, const void *data, const void *scales, void *out,
                          piquant_dtype dtype_out, size_t numel, size_t row, int format,
                          size_t block_size, const float *per_tensor_scale);

/* One call as a struct: the same as the function of that name, with the
 * same arguments (float_type is quantize's dtype_in, dequantize's dtype_out,
 * fake_quantize's dtype; quant_type the other side), or as its _grouped
 * form when params.count != 0 (scale and zero_point are then ignored).
 * params.count == 0 is one scale and zero_point for every element. For
 * bindings where each argument of a foreign call is costly. */
typedef enum piquant_op {
    PIQUANT_OP_QUANTIZE = 0,
    PIQUANT_OP_DEQUANTIZE = 1,
    PIQUANT_OP_FAKE_QUANTIZE = 2
} piquant_op;

typedef struct piquant_call {
    int32_t op; /* piquant_op */
    int32_t float_type; /* piquant_dtype */
    int32_t quant_type; /* piquant_dtype */
    int32_t round_mode; /* piquant_round_mode (ignored by DEQUANTIZE) */
    int32_t reduce_op;  /* piquant_reduce_op (ignored by QUANTIZE) */
    int32_t reserved;   /* 0 */
    const void *in;
    void *out;
    size_t numel;
    double scale;
    int64_t zero_point;
    uint64_t seed;
    piquant_params params; /* per channel or group if params.count != 0 */
} piquant_call;

int piquant_execute(piquant_context *ctx, const piquant_call *call);

/* The memory roofline of the benchmarks: copies nbytes from src to dst, or
 * only reads them when dst is NULL, split over the context's threads like
 * the kernels. */
int piquant_stream(piquant_context *ctx, const void *src, void *dst, size_t nbytes);

#ifdef __cplusplus
}
#endif

#endif /* PIQUANT_H */
