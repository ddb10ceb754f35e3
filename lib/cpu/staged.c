// staged.c — a test-only backend: the CPU ops, but declaring host_memory = 0, so the code
// written for device backends (copies to and from the device, device-resident training)
// runs and can be compared with the CPU backend on machines without a GPU. Its copies are
// real memcpys. Selected by --device cpu-staged (lib/device.c); not for production use.
//
// It also keeps the CUDA backend's workspace reservation (lib/workspace.h): reserve records
// the device-independent sizes of the shape, and each op that asks a workspace of on CUDA
// checks the same ask here first, so a memory plan too small for a run dies on the CPU too.
#include <string.h>

#include "backend.h"
#include "common.h"
#include "workspace.h"

static mt_backend cpu;                   // the CPU table the ops run on
static size_t reserved[MT_WS_COUNT];     // what reserve granted

static void staged_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);  // never overlapping, as host <-> device copies
}

// Grows each workspace to the shape's size, never shrinks it: cuda_reserve's rule, so a second,
// smaller reservation (another model on the same backend) refuses nothing CUDA would run.
static void staged_reserve(const mt_workspace_shape *s) {
    size_t w[MT_WS_COUNT];
    mt_workspace_generic(s, w);
    for (int i = 0; i < MT_WS_COUNT; i++) reserved[i] = w[i] > reserved[i] ? w[i] : reserved[i];
}
static size_t staged_memory_free(void) { return SIZE_MAX; }

// The asks of attention.cu for B sequences padded to max_len (the CPU op then checks that no
// sequence is longer than max_len).
static void check_attention(int B, int max_len, int C, int NH, int backward) {
    for (int w = MT_WS_ATT_Q; w <= MT_WS_ATT_O; w++) mt_workspace_check(w, mt_ws_att_heads(B, max_len, C), reserved[w]);
    mt_workspace_check(MT_WS_ATT_S, mt_ws_att_scores(B, max_len, NH), reserved[MT_WS_ATT_S]);
    if (backward) mt_workspace_check(MT_WS_ATT_DS, mt_ws_att_scores(B, max_len, NH), reserved[MT_WS_ATT_DS]);
}

static void attention_forward(float *out, float *att, const float *qkv, const int32_t *offsets,
                              const int64_t *att_offsets, int B, int max_len, int C, int NH) {
    check_attention(B, max_len, C, NH, 0);
    cpu.attention_forward(out, att, qkv, offsets, att_offsets, B, max_len, C, NH);
}

static void attention_forward_dropout(float *out, float *att, const float *qkv, const int32_t *offsets,
                                      const int64_t *att_offsets, int B, int max_len, int C, int NH,
                                      const mt_dropout_key *drop) {
    check_attention(B, max_len, C, NH, 0);
    cpu.attention_forward_dropout(out, att, qkv, offsets, att_offsets, B, max_len, C, NH, drop);
}

static void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *offsets, const int64_t *att_offsets, int B, int max_len, int C, int NH,
                               const mt_dropout_key *drop) {
    check_attention(B, max_len, C, NH, 1);
    cpu.attention_backward(dqkv, dout, qkv, att, offsets, att_offsets, B, max_len, C, NH, drop);
}

static void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int N, int IC, int OC) {
    if (dbias) mt_workspace_check(MT_WS_SCRATCH, mt_ws_colsums(N, OC, 1), reserved[MT_WS_SCRATCH]);
    cpu.matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC);
}

static void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, int N, int C) {
    if (dweight || dbias) mt_workspace_check(MT_WS_SCRATCH, mt_ws_colsums(N, C, 2), reserved[MT_WS_SCRATCH]);
    cpu.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

static void embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids,
                                const int32_t *types, const int32_t *pos, int N, int C) {
    if (N > 0) mt_workspace_check(MT_WS_SCRATCH, mt_ws_embed_sort(N, 0), reserved[MT_WS_SCRATCH]);
    cpu.embeddings_backward(dwte, dwpe, dwtt, dout, ids, types, pos, N, C);
}

static void gram(double *out, const float *const *g, int k, size_t n) {
    if (k > 0 && n > 0) mt_workspace_check(MT_WS_SCRATCH, mt_ws_gram(k, n), reserved[MT_WS_SCRATCH]);
    cpu.gram(out, g, k, n);
}

// CUDA updates every slice of the list at once: slices out of order or overlapping would
// race there (and their order would decide the CPU's result), so they die here first.
static void adamw_update_multi(float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list,
                               int count) {
    for (int i = 1; i < count; i++)
        if (list[i].offset < list[i - 1].offset + list[i - 1].n)
            mt_die("adamw_update_multi: slice %d at %zu overlaps or precedes slice %d [%zu, %zu)", i, list[i].offset,
                   i - 1, list[i - 1].offset, list[i - 1].offset + list[i - 1].n);
    cpu.adamw_update_multi(p, g, m, v, list, count);
}

const mt_backend *mt_backend_cpu_staged(void) {
    static mt_backend staged;
    if (!staged.name) {
        cpu = *mt_backend_cpu();
        mt_backend b = cpu;
        b.name = "cpu-staged";
        b.host_memory = 0;
        b.copy_to_device = staged_copy;
        b.copy_to_host = staged_copy;
        b.attention_forward = attention_forward;
        b.attention_forward_dropout = attention_forward_dropout;
        b.attention_backward = attention_backward;
        b.matmul_backward = matmul_backward;
        b.layernorm_backward = layernorm_backward;
        b.embeddings_backward = embeddings_backward;
        b.gram = gram;
        b.adamw_update_multi = adamw_update_multi;
        b.workspace_bytes = mt_workspace_generic;  // the sizes reserve records
        b.reserve = staged_reserve;
        b.memory_free = staged_memory_free;
        staged = b;
    }
    return &staged;
}
