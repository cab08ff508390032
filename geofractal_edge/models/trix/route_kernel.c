/* Fused hard routing for TriX on the host CPU (see fused.py, which compiles and loads this file).
 *
 * Plain C with GCC/Clang vector extensions: no torch headers, no Python API, so it builds in well
 * under a second with the system compiler and works with any torch version. All tensors are
 * row-major float32 / int64, contiguous, owned by the caller. Ties go to the LOWEST index, like
 * torch.argmax. Scores that are NaN give an unspecified (but in-range) index. Both entry points
 * return 0, or -1 (computing nothing) for widths they cannot take. Casting a vector array to float*
 * relies on GCC/Clang letting a vector type alias its element type.
 */
#include <stdint.h>

#define V 16    /* floats per vector: 512 bits (4 NEON or 2 AVX2 registers where the machine is narrower) */
#define MAXV 16 /* the second stage holds at most MAXV * V = 256 member slots per cluster */

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));

static inline vf load(const float *p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline vf vmax(vf a, vf b) { vi m = a > b; return (vf)((m & (vi)a) | (~m & (vi)b)); }

static int64_t first_max(const float *row, int64_t n) {
    int64_t best = 0;
    float bv = row[0];
    for (int64_t j = 1; j < n; j++)
        if (row[j] > bv) { bv = row[j]; best = j; }
    return best;
}

int64_t gf_max_slots(void) { return MAXV * V; }
int64_t gf_lanes(void) { return V; }

/* out[i] = argmax_j s[i, j] for s [N, n]: a vector max, then the first index holding it. Returns -1 for n < 1. */
int64_t gf_argmax_rows(const float *restrict s, int64_t N, int64_t n, int64_t *restrict out) {
    if (n < 1) return -1;
    for (int64_t i = 0; i < N; i++) {
        const float *row = s + i * n;
        if (n < 2 * V) { out[i] = first_max(row, n); continue; }
        vf m = load(row);
        int64_t j = V;
        for (; j + V <= n; j += V) m = vmax(m, load(row + j));
        float bv = m[0];
        for (int k = 1; k < V; k++) bv = m[k] > bv ? m[k] : bv;
        for (; j < n; j++) bv = row[j] > bv ? row[j] : bv;
        int64_t best = 0;
        while (best < n - 1 && row[best] != bv) best++;
        out[i] = best;
    }
    return 0;
}

/* The second stage of hierarchical routing, one pass per token, no grouping and no gather copy:
 * route[i] = members[c, argmax_m (pad[c, m] + sum_k x[i, k] * msT[c, k, m])], c = cluster[i].
 * msT [C, d, Mp] holds each cluster's member signatures transposed, Mp a multiple of V (<= MAXV * V),
 * padded slots have zero signatures and pad -inf. Two tokens at a time keep two independent
 * accumulator chains in flight; each score is summed in ascending k. */
int64_t gf_stage2(const float *restrict x, const int64_t *restrict cluster, const float *restrict msT,
                  const float *restrict pad, const int64_t *restrict members, int64_t N, int64_t Mp, int64_t d,
                  int64_t *restrict route) {
    if (Mp < V || Mp % V != 0 || Mp > MAXV * V) return -1;
    const int64_t nv = Mp / V;
    vf a0[MAXV], a1[MAXV];
    int64_t i = 0;
    for (; i + 1 < N; i += 2) {
        const int64_t c0 = cluster[i], c1 = cluster[i + 1];
        const float *w0 = msT + c0 * d * Mp, *w1 = msT + c1 * d * Mp, *x0 = x + i * d, *x1 = x + (i + 1) * d;
        for (int64_t v = 0; v < nv; v++) { a0[v] = load(pad + c0 * Mp + v * V); a1[v] = load(pad + c1 * Mp + v * V); }
        for (int64_t k = 0; k < d; k++) {
            const vf s0 = (vf){0} + x0[k], s1 = (vf){0} + x1[k];
            const float *r0 = w0 + k * Mp, *r1 = w1 + k * Mp;
            for (int64_t v = 0; v < nv; v++) { a0[v] += load(r0 + v * V) * s0; a1[v] += load(r1 + v * V) * s1; }
        }
        route[i] = members[c0 * Mp + first_max((const float *)a0, Mp)];
        route[i + 1] = members[c1 * Mp + first_max((const float *)a1, Mp)];
    }
    for (; i < N; i++) {
        const int64_t c = cluster[i];
        const float *w = msT + c * d * Mp, *xi = x + i * d;
        for (int64_t v = 0; v < nv; v++) a0[v] = load(pad + c * Mp + v * V);
        for (int64_t k = 0; k < d; k++) {
            const vf s = (vf){0} + xi[k];
            for (int64_t v = 0; v < nv; v++) a0[v] += load(w + k * Mp + v * V) * s;
        }
        route[i] = members[c * Mp + first_max((const float *)a0, Mp)];
    }
    return 0;
}
