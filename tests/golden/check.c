/* Checks a piquant library against golden vectors from the numpy reference
 * (tests/golden/make_vectors.py), for every ISA variant the CPU runs and
 * 1 and 2 threads. Prints "<isa> <threads> <vectors> <failures>" per run;
 * exits non-zero on any failure.
 *
 *   check VECTORS.bin
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "piquant.h"

struct head {
    uint32_t op;
    int32_t float_type, quant_type, round_mode, reduce_op;
    uint32_t reserved;
    uint64_t numel;
    double scale;
    int64_t zero_point;
    uint64_t seed, in_bytes, out_bytes;
};

int main(int argc, char **argv) {
    FILE *f;
    long size;
    uint8_t *all, *p, *end;
    uint32_t count;
    int isa, threads, bad_total = 0;

    if (argc != 2 || !(f = fopen(argv[1], "rb"))) {
        fprintf(stderr, "usage: check VECTORS.bin\n");
        return 2;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    all = malloc((size_t)size);
    if (!all || fread(all, 1, (size_t)size, f) != (size_t)size || memcmp(all, "PQGV", 4) != 0) return 2;
    fclose(f);
    memcpy(&count, all + 4, 4);
    end = all + size;
    for (isa = 0; isa < 32; isa++) {
        if (!(piquant_isa_mask() >> isa & 1)) continue;
        for (threads = 1; threads <= 2; threads++) {
            piquant_context *ctx = NULL;
            uint32_t k, bad = 0;
            if (piquant_context_create((size_t)threads, piquant_isa_name(isa), &ctx) != PIQUANT_OK) return 3;
            p = all + 8;
            for (k = 0; k < count && p < end; k++) {
                struct head h;
                piquant_call call;
                uint8_t *out;
                memcpy(&h, p, sizeof h);
                p += sizeof h;
                out = malloc(h.out_bytes + 1);
                memcpy(out, p + h.in_bytes, h.out_bytes);
                memset(&call, 0, sizeof call);
                call.op = (int32_t)h.op;
                call.float_type = h.float_type;
                call.quant_type = h.quant_type;
                call.round_mode = h.round_mode;
                call.reduce_op = h.reduce_op;
                call.in = p;
                call.out = out;
                call.numel = (size_t)h.numel;
                call.scale = h.scale;
                call.zero_point = h.zero_point;
                call.seed = h.seed;
                if (piquant_execute(ctx, &call) != PIQUANT_OK || memcmp(out, p + h.in_bytes + h.out_bytes, h.out_bytes) != 0) {
                    if (bad < 5)
                        fprintf(stderr, "%s/%d: vector %u (op %u, float %d, quant %d, mode %d, reduce %d, n %llu) differs: %s\n",
                                piquant_isa_name(isa), threads, k, h.op, h.float_type, h.quant_type, h.round_mode, h.reduce_op,
                                (unsigned long long)h.numel, piquant_last_error());
                    bad++;
                }
                free(out);
                p += h.in_bytes + 2 * h.out_bytes;
            }
            printf("%s %d %u %u\n", piquant_isa_name(isa), threads, k, bad);
            bad_total += (int)bad;
            piquant_context_destroy(ctx);
        }
    }
    free(all);
    return bad_total != 0;
}
