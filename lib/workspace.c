// workspace.c — see workspace.h.
#include "workspace.h"

#include <string.h>

#include "common.h"

#define MAX(a, b) ((a) > (b) ? (a) : (b))

size_t mt_workspace_generic(const mt_workspace_shape *s, size_t *each) {
    size_t w[MT_WS_COUNT];
    memset(w, 0, sizeof w);
    // The padded products cost B * Lmax (and B * Lmax^2): B sequences whose longest has Lmax
    // tokens hold at least Lmax + B - 1 tokens, so Lmax <= max_tokens - B + 1; and B * Lmax is
    // at most the padded bound.
    int64_t padded = mt_ws_padded_bound(s);
    for (int B = 1; B <= s->max_batch && B <= s->max_tokens; B++) {
        int L = s->max_tokens - B + 1 < s->max_len ? s->max_tokens - B + 1 : s->max_len;
        L = padded / B < L ? (int)(padded / B) : L;
        w[MT_WS_ATT_Q] = MAX(w[MT_WS_ATT_Q], mt_ws_att_heads(B, L, s->C));
        w[MT_WS_ATT_S] = MAX(w[MT_WS_ATT_S], mt_ws_att_scores(B, L, s->NH));
    }
    w[MT_WS_ATT_K] = w[MT_WS_ATT_V] = w[MT_WS_ATT_O] = w[MT_WS_ATT_Q];
    if (s->training) {
        int N = s->max_tokens, widest = MAX(3 * s->C, s->F);
        w[MT_WS_ATT_DS] = w[MT_WS_ATT_S];
        w[MT_WS_SCRATCH] = MAX(mt_ws_colsums(N, s->C, 2), mt_ws_colsums(N, widest, 1));  // LayerNorm, dbias
        w[MT_WS_SCRATCH] = MAX(w[MT_WS_SCRATCH], mt_ws_embed_sort(N, 0));
        if (s->gram_n) w[MT_WS_SCRATCH] = MAX(w[MT_WS_SCRATCH], mt_ws_gram(MT_GRAM_MAX_K, s->gram_n));
    }
    size_t total = 0;
    for (int i = 0; i < MT_WS_COUNT; i++) total += w[i];
    if (each) memcpy(each, w, sizeof w);
    return total;
}

void mt_workspace_check(int which, size_t bytes, size_t reserved) {
    if (bytes > reserved)
        mt_die("the %s workspace needs %zu bytes but %zu were reserved: the memory plan is too small for this "
               "batch (a bug: the plan must cover every batch of the run)", mt_workspace_names[which], bytes, reserved);
}
