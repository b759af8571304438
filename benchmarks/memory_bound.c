/* The least work 2-thread passes over large arrays can do, for
 * benchmarks/memory_bound.py: reading a float32 array alone; a minimal
 * AVX-512 float32 -> uint8 quantize (one multiply-add, round to nearest
 * even, saturate) writing with non-temporal or with ordinary stores; and a
 * minimal uint8 -> float32 dequantize added into its output. No prefetching,
 * no head or tail: n is a multiple of 64 and the arrays are 64-byte aligned.
 * Built with -O3 -march=x86-64-v4 -fopenmp. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

float bound_read(const float *x, size_t n) {
    float r = 0;
#pragma omp parallel for reduction(max : r) schedule(static)
    for (size_t b = 0; b < n / 64; b++) {
        const float *p = x + b * 64;
        __m512 m = _mm512_max_ps(_mm512_max_ps(_mm512_load_ps(p), _mm512_load_ps(p + 16)),
                                 _mm512_max_ps(_mm512_load_ps(p + 32), _mm512_load_ps(p + 48)));
        float v = _mm512_reduce_max_ps(m);
        if (v > r) r = v;
    }
    return r;
}

static inline __m128i quantize16(const float *p, __m512 inv_scale, __m512 zero_point) {
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(p), inv_scale), zero_point);
    __m512i i = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvtusepi32_epi8(_mm512_max_epi32(i, _mm512_setzero_si512()));
}

static inline __m512i quantize64(const float *p, __m512 inv_scale, __m512 zero_point) {
    __m256i lo = _mm256_set_m128i(quantize16(p + 16, inv_scale, zero_point), quantize16(p, inv_scale, zero_point));
    __m256i hi = _mm256_set_m128i(quantize16(p + 48, inv_scale, zero_point), quantize16(p + 32, inv_scale, zero_point));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

void bound_quantize(const float *x, uint8_t *out, size_t n, float inv_scale, float zero_point, int non_temporal) {
    __m512 s = _mm512_set1_ps(inv_scale), z = _mm512_set1_ps(zero_point);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n / 64; b++) {
        __m512i q = quantize64(x + b * 64, s, z);
        if (non_temporal)
            _mm512_stream_si512((__m512i *)(out + b * 64), q);
        else
            _mm512_store_si512((__m512i *)(out + b * 64), q);
    }
    _mm_sfence();
}

void bound_dequantize_add(const uint8_t *q, float *out, size_t n, float scale, float zero_point) {
    __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(zero_point);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n / 64; b++) {
        for (size_t k = 0; k < 64; k += 16) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(q + b * 64 + k))));
            float *o = out + b * 64 + k;
            _mm512_store_ps(o, _mm512_add_ps(_mm512_load_ps(o), _mm512_mul_ps(_mm512_sub_ps(v, z), s)));
        }
    }
}
