// workspace.h — a backend's device workspaces (the padded attention buffers, the scratch of the
// backward and optimizer ops, the 16-bit operand copies, cuBLASLt's workspace): their names, what
// one op call asks of each, and their sizes for a run's shape. The CUDA launchers ask exactly
// these numbers of their reservation; the cpu-staged backend checks the same numbers against
// its own, so an under-sized plan is caught on machines without a GPU. C and CUDA alike.
#ifndef MT_WORKSPACE_H
#define MT_WORKSPACE_H
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

enum {
    MT_WS_ATT_Q, MT_WS_ATT_K, MT_WS_ATT_V, MT_WS_ATT_O,  // [B*NH, Lmax, hs] padded heads (fp32)
    MT_WS_ATT_S, MT_WS_ATT_DS,                            // [B*NH, Lmax, Lmax] scores (fp32)
    MT_WS_SCRATCH,                                        // backward / optimizer partial sums
    MT_WS_BF16_A, MT_WS_BF16_B,                           // 16-bit (bf16 or fp16) copies of a product's operands
    MT_WS_LT,                                             // cuBLASLt's workspace
    MT_WS_COUNT
};

static const char *const mt_workspace_names[MT_WS_COUNT] = {
    "attention Q", "attention K", "attention V", "attention O", "attention scores", "attention score gradients",
    "backward scratch", "16-bit operand A", "16-bit operand B", "cuBLASLt workspace",
};

#define MT_WS_COLSUM_ROWS 256  // rows per partial column sum (backward.cu): fixed summation order

// ---- what one call asks (bytes) ----
// attention: each padded head buffer, and each score buffer, of a batch of B sequences <= Lmax
static inline size_t mt_ws_att_heads(int B, int Lmax, int C) { return (size_t)B * Lmax * C * sizeof(float); }
static inline size_t mt_ws_att_scores(int B, int Lmax, int NH) {
    return (size_t)B * NH * Lmax * Lmax * sizeof(float);
}
// the fused attention's backward (kernels/flash.cu): D [B, NH, Lmax] in the "attention O" workspace,
// within its mt_ws_att_heads (NH <= C)
static inline size_t mt_ws_att_rows(int B, int Lmax, int NH) { return (size_t)B * NH * Lmax * sizeof(float); }
// The bound on sequences x longest of any batch within s (max_padded, else max_batch x max_len).
static inline int64_t mt_ws_padded_bound(const mt_workspace_shape *s) {
    return s->max_padded > 0 ? s->max_padded : (int64_t)s->max_batch * s->max_len;
}
// column sums of N rows of C columns (two sets for LayerNorm's weight and bias): double partials
static inline size_t mt_ws_colsums(int N, int C, int sets) {
    return (size_t)((N + MT_WS_COLSUM_ROWS - 1) / MT_WS_COLSUM_ROWS) * C * sets * sizeof(double);
}
// embeddings_backward: three int32 [N] arrays (64-aligned), then the sort's temporary storage
static inline size_t mt_ws_embed_sort(int N, size_t sort_temp) {
    return ((size_t)3 * N + 63) / 64 * 64 * sizeof(int32_t) + sort_temp;
}
// A 16-bit operand copy (gemm.cu's as_half): `count` matrices of rows x cols, leading dimension
// ld, `stride` apart, converted as one span (padding between rows included), in elements.
static inline size_t mt_ws_half_span(int rows, int cols, int ld, int64_t stride, int count) {
    return (size_t)((int64_t)(count - 1) * stride + (int64_t)(rows - 1) * ld + cols);
}
// The largest such span for any batch of shape s, in elements (bf16 / fp16 precision only):
// the encoder's activations and their gradients [N, max(3C, F)], its weights [max(3C, F), C],
// the attention's padded heads and scores (generic: mt_workspace_generic's sizes), and the
// products outside the encoder (s->operand_floats).
static inline size_t mt_ws_half_operands(const mt_workspace_shape *s, const size_t *generic) {
    size_t widest = (size_t)(3 * s->C > s->F ? 3 * s->C : s->F), n = (size_t)s->max_tokens * widest;
    size_t more[] = {widest * s->C, generic[MT_WS_ATT_Q] / sizeof(float), generic[MT_WS_ATT_S] / sizeof(float),
                     s->operand_floats};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) n = more[i] > n ? more[i] : n;
    return n;
}
// gram of k buffers of n floats: the k*k result, then per pair and MT_GRAM_BLOCK block a partial
static inline size_t mt_ws_gram(int k, size_t n) {
    size_t blocks = (n + MT_GRAM_BLOCK - 1) / MT_GRAM_BLOCK, pairs = (size_t)k * (k + 1) / 2;
    return ((size_t)k * k + pairs * blocks) * sizeof(double);
}

#ifdef __cplusplus
extern "C" {
#endif
// The device-independent sizes for shape s (each[MT_WS_COUNT]; bf16, cuBLASLt and the sort's
// temporary storage are the CUDA backend's to add): the largest ask of any batch within s.
// Returns the sum.
size_t mt_workspace_generic(const mt_workspace_shape *s, size_t *each);
// Dies, naming the workspace and both sizes, when `bytes` exceeds what was reserved for it.
void mt_workspace_check(int which, size_t bytes, size_t reserved);
#ifdef __cplusplus
}
#endif
#endif
