/* Quantizes 1,000,003 floats to uint8 and back with libpiquant, then to
 * int4 with stochastic rounding.
 * Build (after `python -m ziglang build`):
 *   cc -std=c99 -Wall -Wextra -pedantic -I zig-out/include examples/quantize.c \
 *      -L zig-out/lib -lpiquant -Wl,-rpath,zig-out/lib -lm -o quantize_example */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

#include "piquant.h"

#define N 1000003

static int check(int status, const char *what) {
    if (status != PIQUANT_OK) fprintf(stderr, "%s failed (%d): %s\n", what, status, piquant_last_error());
    return status != PIQUANT_OK;
}

int main(void) {
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *q = malloc(N);
    piquant_context *ctx = NULL;
    double scale = 0.0;
    float max_err = 0.0f;
    int64_t zero_point = 0;
    size_t i;
    int rc = 1;

    if (!x || !y || !q) goto done;
    for (i = 0; i < N; i++) x[i] = sinf((float)i * 0.001f) * 3.0f;

    if (check(piquant_context_create(0, NULL, &ctx), "context_create")) goto done;
    printf("piquant %s (ABI %u), isa %s, %zu threads\n", piquant_version(), piquant_abi_version(),
           piquant_isa_name(piquant_context_isa(ctx)), piquant_context_num_threads(ctx));

    if (check(piquant_compute_params(ctx, x, PIQUANT_DTYPE_F32, N, PIQUANT_DTYPE_UINT8, 0, &scale, &zero_point), "compute_params")) goto done;
    if (check(piquant_quantize(ctx, x, PIQUANT_DTYPE_F32, q, PIQUANT_DTYPE_UINT8, N, scale, zero_point, PIQUANT_ROUND_NEAREST, 0), "quantize")) goto done;
    if (check(piquant_dequantize(ctx, q, PIQUANT_DTYPE_UINT8, y, PIQUANT_DTYPE_F32, N, scale, zero_point, PIQUANT_REDUCE_SET), "dequantize")) goto done;
    for (i = 0; i < N; i++) {
        float e = fabsf(y[i] - x[i]);
        if (e > max_err) max_err = e;
    }
    printf("scale %g zero_point %lld max error %g\n", scale, (long long)zero_point, max_err);

    /* Stochastic rounding: the seed makes it reproducible. */
    if (check(piquant_quantize(ctx, x, PIQUANT_DTYPE_F32, q, PIQUANT_DTYPE_INT4, N, 0.5, 0, PIQUANT_ROUND_STOCHASTIC, 42), "quantize int4")) goto done;
    printf("first packed int4 byte: 0x%02x\n", q[0]);

    /* A bad argument is a status and a message, never an abort. */
    if (piquant_quantize(ctx, x, PIQUANT_DTYPE_F32, q, PIQUANT_DTYPE_UINT8, N, -1.0, 0, PIQUANT_ROUND_NEAREST, 0) != PIQUANT_ERR_INVALID_VALUE) goto done;
    printf("negative scale rejected: %s\n", piquant_last_error());
    rc = max_err <= (float)scale * 0.5f * 1.0001f ? 0 : 1;

done:
    piquant_context_destroy(ctx);
    free(x);
    free(y);
    free(q);
    return rc;
}
