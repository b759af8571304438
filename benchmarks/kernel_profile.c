/* One kernel row on one ISA variant, one thread, through the C ABI (issue 15's
 * profile): `count` makes the calls callgrind counts (kernel_profile.py runs it
 * under valgrind), `time` prints the median ns per element over batches.
 *   kernel_profile ISA ROW N REPS count|time */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "piquant.h"

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *const mx_rows[] = {"mx_f32_mxfp8_e4m3", "mx_f32_mxfp8_e5m2", "mx_f32_mxfp6_e2m3", "mx_f32_mxfp6_e3m2",
                                      "mx_f32_mxfp4", "mx_f32_mxint8", "mx_f32_nvfp4"};

static int run(piquant_context *ctx, const char *row, void *f32, void *bf16, void *u8, void *f32_out, void *bf16_out, size_t n) {
    /* MX rows: codes to u8, block scales to the bf16 buffer (n / 16 bytes at most). */
    for (int f = 0; f < (int)(sizeof mx_rows / sizeof *mx_rows); f++)
        if (!strcmp(row, mx_rows[f]))
            return piquant_mx_quantize(ctx, f32, PIQUANT_DTYPE_F32, u8, bf16_out, n, n, f, f == PIQUANT_NVFP4 ? 16 : 32,
                                       PIQUANT_SCALE_FLOOR, PIQUANT_ROUND_NEAREST, 0, NULL);
    if (!strcmp(row, "quantize_f32_u8"))
        return piquant_quantize(ctx, f32, PIQUANT_DTYPE_F32, u8, PIQUANT_DTYPE_UINT8, n, 0.01, 128, PIQUANT_ROUND_NEAREST, 0);
    if (!strcmp(row, "quantize_f32_i8"))
        return piquant_quantize(ctx, f32, PIQUANT_DTYPE_F32, u8, PIQUANT_DTYPE_INT8, n, 0.01, 0, PIQUANT_ROUND_NEAREST, 0);
    if (!strcmp(row, "quantize_f32_float8_e4m3fn"))
        return piquant_quantize(ctx, f32, PIQUANT_DTYPE_F32, u8, PIQUANT_DTYPE_FLOAT8_E4M3FN, n, 0.01, 0, PIQUANT_ROUND_NEAREST, 0);
    if (!strcmp(row, "quantize_f32_float8_e5m2"))
        return piquant_quantize(ctx, f32, PIQUANT_DTYPE_F32, u8, PIQUANT_DTYPE_FLOAT8_E5M2, n, 0.01, 0, PIQUANT_ROUND_NEAREST, 0);
    if (!strcmp(row, "stochastic_f32_u8"))
        return piquant_quantize(ctx, f32, PIQUANT_DTYPE_F32, u8, PIQUANT_DTYPE_UINT8, n, 0.01, 128, PIQUANT_ROUND_STOCHASTIC, 7);
    if (!strcmp(row, "quantize_bf16_u8"))
        return piquant_quantize(ctx, bf16, PIQUANT_DTYPE_BF16, u8, PIQUANT_DTYPE_UINT8, n, 0.01, 128, PIQUANT_ROUND_NEAREST, 0);
    if (!strcmp(row, "dequantize_u8_f32"))
        return piquant_dequantize(ctx, u8, PIQUANT_DTYPE_UINT8, f32_out, PIQUANT_DTYPE_F32, n, 0.01, 128, PIQUANT_REDUCE_SET);
    if (!strcmp(row, "dequantize_u8_f32_add"))
        return piquant_dequantize(ctx, u8, PIQUANT_DTYPE_UINT8, f32_out, PIQUANT_DTYPE_F32, n, 0.01, 128, PIQUANT_REDUCE_ADD);
    if (!strcmp(row, "dequantize_u8_bf16"))
        return piquant_dequantize(ctx, u8, PIQUANT_DTYPE_UINT8, bf16_out, PIQUANT_DTYPE_BF16, n, 0.01, 128, PIQUANT_REDUCE_SET);
    fprintf(stderr, "unknown row %s\n", row);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s ISA ROW N REPS count|time\n", argv[0]);
        return 2;
    }
    size_t n = strtoull(argv[3], NULL, 10);
    int reps = atoi(argv[4]);
    piquant_context *ctx;
    if (piquant_context_create(1, argv[1], &ctx) != PIQUANT_OK) {
        fprintf(stderr, "%s\n", piquant_last_error());
        return 1;
    }
    float *f32 = malloc(n * 4), *f32_out = malloc(n * 4);
    uint16_t *bf16 = malloc(n * 2), *bf16_out = malloc(n * 2);
    uint8_t *u8 = malloc(n);
    uint64_t s = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        f32[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        memcpy(&bf16[i], (char *)&f32[i] + 2, 2);
        u8[i] = (uint8_t)s;
        f32_out[i] = 0.0f;
    }
    if (!strcmp(argv[5], "count")) {
        for (int r = 0; r < reps; r++)
            if (run(ctx, argv[2], f32, bf16, u8, f32_out, bf16_out, n) != PIQUANT_OK) return 1;
        return 0;
    }
    double *t = malloc(sizeof(double) * reps);
    int inner = (int)(200000 / n) + 1;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ns();
        for (int i = 0; i < inner; i++) run(ctx, argv[2], f32, bf16, u8, f32_out, bf16_out, n);
        t[r] = (now_ns() - t0) / ((double)inner * (double)n);
    }
    qsort(t, reps, sizeof(double), cmp);
    printf("%.5f\n", t[reps / 2]);
    piquant_context_destroy(ctx);
    return 0;
}
