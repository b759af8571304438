/* libFuzzer harness for the C ABI: each input is a header (operation,
 * types, element count, scale, zero point, seed, modes — valid or not)
 * followed by bytes that fill the buffers. Buffers end at a PROT_NONE page,
 * so a kernel that reads or writes one byte past its range crashes the run.
 *
 *   clang -O1 -g -fsanitize=fuzzer,address -I zig-out/include tests/c/fuzz_abi.c \
 *         -L zig-out/lib -lpiquant -Wl,-rpath,$PWD/zig-out/lib -o fuzz_abi
 *   ./fuzz_abi -max_total_time=600 corpus/      # longer runs: raise the time
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "piquant.h"

struct header {
    uint8_t op, float_type, quant_type, round_mode, reduce_op, symmetric, threads, pad;
    uint32_t numel;
    double scale;
    int64_t zero_point;
    uint64_t seed;
};

/* n bytes that end exactly where an inaccessible page begins. */
static uint8_t *guarded(size_t n, void **base, size_t *len) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (n + page - 1) / page * page;
    uint8_t *p = mmap(NULL, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    mprotect(p + body, page, PROT_NONE);
    *base = p;
    *len = body + page;
    return p + body - n;
}

static void fill(uint8_t *dst, size_t n, const uint8_t *src, size_t m) {
    size_t i;
    for (i = 0; i < n; i++) dst[i] = m ? src[i % m] : (uint8_t)i;
}

/* Values 0..31 cover every valid enum and some invalid ones; 255 → -1. */
static int enum_value(uint8_t v) { return v == 255 ? -1 : v % 32; }

/* Bytes that n elements of type t take (8 per element for invalid types). */
static size_t bytes_for(int t, size_t n) {
    switch (t) {
        case PIQUANT_DTYPE_F32: return n * 4;
        case PIQUANT_DTYPE_BF16: case PIQUANT_DTYPE_F16: return n * 2;
        case PIQUANT_DTYPE_F64: return n * 8;
        case PIQUANT_DTYPE_UINT2: case PIQUANT_DTYPE_INT2: return (n + 3) / 4;
        case PIQUANT_DTYPE_UINT4: case PIQUANT_DTYPE_INT4: return (n + 1) / 2;
        case PIQUANT_DTYPE_UINT8: case PIQUANT_DTYPE_INT8: return n;
        case PIQUANT_DTYPE_FLOAT8_E4M3FN: case PIQUANT_DTYPE_FLOAT8_E5M2: return n;
        case PIQUANT_DTYPE_UINT16: case PIQUANT_DTYPE_INT16: return n * 2;
        case PIQUANT_DTYPE_UINT32: case PIQUANT_DTYPE_INT32: return n * 4;
        case PIQUANT_DTYPE_UINT64: case PIQUANT_DTYPE_INT64: return n * 8;
        default: return n * 8;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static piquant_context *ctx[2];
    struct header h;
    void *in_base, *out_base;
    size_t in_len, out_len, numel;
    uint8_t *in, *out;
    piquant_call call;
    piquant_minmax_result mm;
    double scale;
    int64_t zp;

    if (!ctx[0] && (piquant_context_create(1, NULL, &ctx[0]) || piquant_context_create(2, NULL, &ctx[1]))) abort();
    if (size < sizeof h) return 0;
    memcpy(&h, data, sizeof h);
    data += sizeof h;
    size -= sizeof h;
    /* Mostly small, now and then past the 32,768-element threshold of the pool. */
    numel = h.numel % 8 == 0 ? h.numel % 70000 : h.numel % 300;
    memset(&call, 0, sizeof call);
    call.op = h.op % 4;
    call.float_type = enum_value(h.float_type);
    call.quant_type = enum_value(h.quant_type);
    call.round_mode = h.round_mode % 3;
    call.reduce_op = h.reduce_op % 3;
    call.numel = numel;
    call.scale = h.scale;
    call.zero_point = h.zero_point;
    call.seed = h.seed;
    {
        /* Each buffer is exactly as long as its type needs and ends at the guard page. */
        int in_type = call.op == 1 ? call.quant_type : call.float_type;
        int out_type = call.op == 0 ? call.quant_type : call.float_type;
        size_t in_bytes = bytes_for(in_type, numel), out_bytes = bytes_for(out_type, numel);
        in = guarded(in_bytes, &in_base, &in_len);
        out = guarded(out_bytes, &out_base, &out_len);
        fill(in, in_bytes, data, size);
        fill(out, out_bytes, data + size / 2, size - size / 2);
        call.in = in;
        call.out = out;
    }
    piquant_execute(ctx[h.threads & 1], &call);
    if (call.op != 1) {
        piquant_minmax(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, numel, &mm);
        piquant_compute_params(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, numel,
                               (piquant_dtype)call.quant_type, h.symmetric & 1, &scale, &zp);
    }
    {
        /* The same call with up to 8 parameter sets (the header's scale and
         * zero point and variations of them), whose layout may not fit. */
        double scales[8];
        int64_t zps[8];
        size_t k, count = 1 + h.pad % 8;
        piquant_params g;
        for (k = 0; k < count; k++) {
            scales[k] = h.scale * (double)(k + 1);
            zps[k] = h.zero_point - (int64_t)k;
        }
        g.scales = scales;
        g.zero_points = zps;
        g.count = count;
        g.inner = h.pad & 0x80 ? 1 + h.seed % 97 : (numel / count ? numel / count : 1);
        g.scale_type = h.pad & 0x40 ? PIQUANT_DTYPE_F64 : (piquant_dtype)enum_value(h.symmetric); /* F32 (0) mostly, or invalid */
        if (call.op == 0) {
            piquant_quantize_grouped(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, out, (piquant_dtype)call.quant_type, numel, &g,
                                     (piquant_round_mode)call.round_mode, call.seed);
            piquant_compute_params_grouped(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, numel, (piquant_dtype)call.quant_type,
                                           h.symmetric & 1, g.count, g.inner, scales, g.scale_type, zps);
        } else if (call.op == 1) {
            piquant_dequantize_grouped(ctx[h.threads & 1], in, (piquant_dtype)call.quant_type, out, (piquant_dtype)call.float_type, numel, &g,
                                       (piquant_reduce_op)call.reduce_op);
        } else if (call.op == 2) {
            piquant_fake_quantize_grouped(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, out, numel, (piquant_dtype)call.quant_type, &g,
                                          (piquant_round_mode)call.round_mode, call.seed, (piquant_reduce_op)call.reduce_op);
        }
        /* And as one piquant_call carrying the sets. */
        call.params = g;
        piquant_execute(ctx[h.threads & 1], &call);
    }
    {
        /* GGUF both ways, on buffers sized for whole blocks of the type. */
        static const int types[] = {2, 3, 6, 7, 8, 12, 13, 14, 39, 9}; /* 9: not a type */
        int type = types[(unsigned)call.quant_type % 10];
        size_t per = type >= 12 && type <= 14 ? 256 : 32; /* K-quants: super-blocks */
        size_t bytes = piquant_gguf_block_bytes(type), blocks = numel / per;
        void *blk_base;
        size_t blk_len;
        uint8_t *blk = guarded(blocks * (bytes ? bytes : 34), &blk_base, &blk_len);
        fill(blk, blocks * (bytes ? bytes : 34), data, size);
        /* in holds float_type elements unless op is 1; out does unless op is 0. */
        if (call.op != 1) piquant_gguf_quantize(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, blk, type, blocks * per);
        if (call.op != 0) piquant_gguf_dequantize(ctx[h.threads & 1], blk, type, out, (piquant_dtype)call.float_type, blocks * per);
        munmap(blk_base, blk_len);
    }
    {
        /* MX and NVFP4 both ways: fuzzed format (7: not one), block size,
         * scale rule, rounding and per-tensor scale, on rows that may not be
         * whole blocks; buffers as long as the format needs for numel. */
        int format = (int)(h.pad % 8);
        size_t block = h.pad & 0x80 ? 16 : 1 + h.seed % 64, row = h.pad & 0x40 ? numel : block * (1 + h.symmetric % 4);
        size_t data_bytes = format == 4 || format == 6 ? numel / 2 : numel, blocks = block ? numel / block : 0;
        float pts = (float)h.scale;
        void *d_base, *s_base;
        size_t d_len, s_len;
        uint8_t *d = guarded(data_bytes, &d_base, &d_len), *sc = guarded(blocks, &s_base, &s_len);
        fill(d, data_bytes, data, size);
        fill(sc, blocks, data + size / 2, size - size / 2);
        if (call.op != 1)
            piquant_mx_quantize(ctx[h.threads & 1], in, (piquant_dtype)call.float_type, d, sc, numel, row, format, block, h.symmetric % 3,
                                (piquant_round_mode)call.round_mode, call.seed, h.reduce_op & 4 ? &pts : NULL);
        if (call.op != 0)
            piquant_mx_dequantize(ctx[h.threads & 1], d, sc, out, (piquant_dtype)call.float_type, numel, row, format, block,
                                  h.reduce_op & 4 ? &pts : NULL);
        munmap(d_base, d_len);
        munmap(s_base, s_len);
    }
    munmap(in_base, in_len);
    munmap(out_base, out_len);
    return 0;
}
