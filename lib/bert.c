// bert.c — see bert.h. Forward as transformers' BertModel (eval mode): embeddings
// (word + token type + position) → LayerNorm → L × [self-attention → dense + residual →
// LayerNorm → dense → GELU → dense + residual → LayerNorm] → optional tanh pooler on [CLS].
#include "bert.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "safetensors.h"
#include "workspace.h"

// ---- the parameter table -------------------------------------------------------------

static void add_param(mt_bert *m, const char *name, int d0, int d1) {
    m->param_table = mt_realloc(m->param_table, (m->num_param_tensors + 1) * sizeof *m->param_table);
    mt_bert_param *p = &m->param_table[m->num_param_tensors++];
    p->name = mt_strdup(name);
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (d1 ? d1 : 1);
    p->offset = m->num_params;
    m->num_params += p->numel;
}

// Order matters: query/key/value weights, then their biases, are adjacent so that each
// layer's three projections form one [3C, C] matrix and one [3C] bias.
static void build_param_table(mt_bert *m) {
    const mt_bert_config *c = &m->cfg;
    int C = c->hidden_size, F = c->intermediate_size;
    char name[128];
    add_param(m, "embeddings.word_embeddings.weight", c->vocab_size, C);
    add_param(m, "embeddings.position_embeddings.weight", c->max_position_embeddings, C);
    add_param(m, "embeddings.token_type_embeddings.weight", c->type_vocab_size, C);
    add_param(m, "embeddings.LayerNorm.weight", C, 0);
    add_param(m, "embeddings.LayerNorm.bias", C, 0);
    static const char *const qkv[3] = {"query", "key", "value"};
    static const struct { const char *suffix; int rows_f, cols_f; } rest[] = {
        {"attention.output.dense.weight", 0, 0}, {"attention.output.dense.bias", 0, -1},
        {"attention.output.LayerNorm.weight", 0, -1}, {"attention.output.LayerNorm.bias", 0, -1},
        {"intermediate.dense.weight", 1, 0}, {"intermediate.dense.bias", 1, -1},
        {"output.dense.weight", 0, 1}, {"output.dense.bias", 0, -1},
        {"output.LayerNorm.weight", 0, -1}, {"output.LayerNorm.bias", 0, -1},
    };  // rows/cols: 0 → C, 1 → F, -1 → 1-D
    for (int l = 0; l < c->num_hidden_layers; l++) {
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "encoder.layer.%d.attention.self.%s.weight", l, qkv[i]);
            add_param(m, name, C, C);
        }
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "encoder.layer.%d.attention.self.%s.bias", l, qkv[i]);
            add_param(m, name, C, 0);
        }
        for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) {
            snprintf(name, sizeof name, "encoder.layer.%d.%s", l, rest[i].suffix);
            add_param(m, name, rest[i].rows_f ? F : C, rest[i].cols_f < 0 ? 0 : rest[i].cols_f ? F : C);
        }
    }
    if (m->has_pooler) {
        add_param(m, "pooler.dense.weight", C, C);
        add_param(m, "pooler.dense.bias", C, 0);
    }
}

const mt_bert_param *mt_bert_find_param(const mt_bert *m, const char *hf_name) {
    for (int i = 0; i < m->num_param_tensors; i++)
        if (strcmp(m->param_table[i].name, hf_name) == 0) return &m->param_table[i];
    return NULL;
}

// Typed views, in table order.
static void point_views(mt_bert *m) {
    int k = 0;
    float *P = m->params;
#define NEXT (P + m->param_table[k++].offset)
    m->wte = NEXT; m->wpe = NEXT; m->wtt = NEXT; m->emb_ln_w = NEXT; m->emb_ln_b = NEXT;
    m->layers = mt_calloc(m->cfg.num_hidden_layers, sizeof *m->layers);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        mt_bert_layer *L = &m->layers[l];
        L->qkv_w = NEXT; k += 2;  // key, value follow contiguously
        L->qkv_b = NEXT; k += 2;
        L->attn_out_w = NEXT; L->attn_out_b = NEXT; L->ln1_w = NEXT; L->ln1_b = NEXT;
        L->fc_w = NEXT; L->fc_b = NEXT; L->fc_out_w = NEXT; L->fc_out_b = NEXT; L->ln2_w = NEXT; L->ln2_b = NEXT;
    }
    if (m->has_pooler) { m->pool_w = NEXT; m->pool_b = NEXT; }
#undef NEXT
}

// ---- loading -------------------------------------------------------------------------

static void shape_str(char *out, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(out + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n) snprintf(out + k, n - k, "]");
}

// Copies every table entry from st (names with prefix), checking presence and shape.
static int load_weights(mt_bert *m, const mt_safetensors *st, const char *prefix, char *err, size_t errlen) {
    float *host = m->be->host_memory ? m->params : mt_malloc(m->num_params * sizeof(float));
    int rc = 0;
    for (int i = 0; i < m->num_param_tensors && !rc; i++) {
        const mt_bert_param *p = &m->param_table[i];
        char full[256], got[96], want[96];
        snprintf(full, sizeof full, "%s%s", prefix, p->name);
        const mt_st_tensor *t = mt_safetensors_find(st, full);
        int64_t wshape[2] = {p->shape[0], p->shape[1]};
        if (!t) {
            rc = mt_fail(err, errlen, "%s: missing tensor '%s'", st->path, full);
        } else if (t->dtype == MT_ST_I64) {
            rc = mt_fail(err, errlen, "%s: tensor '%s' has dtype I64, expected a float type", st->path, full);
        } else if (t->ndim != p->ndim || t->shape[0] != wshape[0] || (p->ndim == 2 && t->shape[1] != wshape[1])) {
            shape_str(got, sizeof got, t->ndim, t->shape);
            shape_str(want, sizeof want, p->ndim, wshape);
            rc = mt_fail(err, errlen, "%s: tensor '%s' has shape %s, config.json implies %s", st->path, full, got, want);
        } else {
            mt_st_to_f32(t, host + p->offset);
        }
    }
    if (!m->be->host_memory) {
        if (!rc) m->be->copy_to_device(m->params, host, m->num_params * sizeof(float));
        free(host);
    }
    return rc;
}

// The whole file as a string (kept so that checkpoints carry the config exactly as loaded).
mt_bert *mt_bert_load(const char *dir, const mt_backend *be, char *err, size_t errlen) {
    mt_bert *m = mt_calloc(1, sizeof *m);
    m->be = be;
    m->dir = mt_strdup(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t json_len;  // read once: the config parsed is the text a checkpoint saves
    if (!(m->config_json = mt_read_file(path, MT_CONFIG_MAX_BYTES, &json_len, err, errlen)) ||
        mt_config_parse(&m->cfg, m->config_json, json_len, path, err, errlen)) {
        mt_bert_free(m);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    mt_safetensors st;
    if (mt_safetensors_open(&st, path, err, errlen)) { mt_bert_free(m); return NULL; }
    // BertModel checkpoints name "embeddings...", BertFor* checkpoints "bert.embeddings..."
    const char *prefix = mt_safetensors_find(&st, "embeddings.word_embeddings.weight") ? ""
                       : mt_safetensors_find(&st, "bert.embeddings.word_embeddings.weight") ? "bert." : "";
    char pw[64], pb[64];
    snprintf(pw, sizeof pw, "%spooler.dense.weight", prefix);
    snprintf(pb, sizeof pb, "%spooler.dense.bias", prefix);
    m->has_pooler = mt_safetensors_find(&st, pw) || mt_safetensors_find(&st, pb);  // half a pooler fails below
    build_param_table(m);
    m->params = be->alloc(m->num_params * sizeof(float));
    point_views(m);
    int rc = load_weights(m, &st, prefix, err, errlen);
    mt_safetensors_close(&st);
    if (rc) { mt_bert_free(m); return NULL; }
    mt_file_fingerprint(path, m->fingerprint);
    return m;
}

void mt_bert_free(mt_bert *m) {
    if (!m) return;
    if (m->params) m->be->free(m->params);
    if (m->arena) m->be->free(m->arena);
    if (m->grad_arena) m->be->free(m->grad_arena);
    if (m->dhidden) m->be->free(m->dhidden);
    free(m->config_json);
    for (int i = 0; i < m->num_param_tensors; i++) free(m->param_table[i].name);
    free(m->param_table);
    free(m->layers);
    free(m->dir);
    free(m->h_ids); free(m->h_types); free(m->h_pos); free(m->h_offsets); free(m->h_att_offsets); free(m->h_hidden);
    free(m);
}

void mt_bert_set_threads(mt_bert *m, int n) { m->be->set_threads(n); }
const char *mt_bert_error(const mt_bert *m) { return m->err; }

// ---- the activation arena --------------------------------------------------------------

// Bump allocation inside the arena: with base == NULL it only measures.
static void *carve(char *base, size_t *cursor, size_t bytes) {
    void *p = base ? base + *cursor : NULL;
    *cursor += (bytes + 63) / 64 * 64;
    return p;
}

static size_t layout_arena(mt_bert *m, char *base) {
    const mt_bert_config *c = &m->cfg;
    size_t N = (size_t)m->max_tokens, B = (size_t)m->max_batch, C = c->hidden_size, F = c->intermediate_size;
    size_t L = m->training ? (size_t)c->num_hidden_layers : 1, cur = 0, f = sizeof(float);
    mt_bert_acts *a = &m->acts;
    a->emb = carve(base, &cur, N * C * f);
    a->emb_mean = carve(base, &cur, N * f);
    a->emb_rstd = carve(base, &cur, N * f);
    // inference: a layer's input is dead once the residual is formed, so one x serves all layers
    a->x = carve(base, &cur, (m->training ? L + 1 : 1) * N * C * f);
    a->qkv = carve(base, &cur, L * N * 3 * C * f);
    a->att = m->training ? carve(base, &cur, L * c->num_attention_heads * N * (size_t)m->max_len * f) : NULL;
    a->atty = carve(base, &cur, L * N * C * f);
    a->res1 = carve(base, &cur, L * N * C * f);
    a->ln1 = carve(base, &cur, L * N * C * f);
    a->ln1_mean = carve(base, &cur, L * N * f);
    a->ln1_rstd = carve(base, &cur, L * N * f);
    a->fch = carve(base, &cur, L * N * F * f);
    a->fch_gelu = m->training ? carve(base, &cur, L * N * F * f) : a->fch;
    a->res2 = m->training ? carve(base, &cur, L * N * C * f) : a->res1;  // res1 is dead after ln1
    a->ln2_mean = carve(base, &cur, L * N * f);
    a->ln2_rstd = carve(base, &cur, L * N * f);
    a->cls = carve(base, &cur, B * C * f);
    a->pooled = carve(base, &cur, B * C * f);
    a->ids = carve(base, &cur, N * sizeof(int32_t));
    a->types = carve(base, &cur, N * sizeof(int32_t));
    a->pos = carve(base, &cur, N * sizeof(int32_t));
    a->offsets = carve(base, &cur, (B + 1) * sizeof(int32_t));
    a->att_offsets = carve(base, &cur, B * sizeof(int64_t));
    return cur;
}

// Carves (base NULL: measures) the gradient buffers for `rows` tokens, end to end in the order
// that makes each layer's buffers one span for zero_grads: dxa (the layer writes its input
// gradient there) through dfch, or dxb back to the dropout copies (without dropout: to g2).
static size_t layout_grad_arena(mt_bert *m, char *base, size_t rows) {
    size_t C = m->cfg.hidden_size, F = m->cfg.intermediate_size, cur = 0, f = sizeof(float);
    mt_bert_grad_acts *g = &m->grad_acts;
    g->dxa = carve(base, &cur, rows * C * f);
    g->dropped = carve(base, &cur, rows * C * f);
    g->dropped2 = carve(base, &cur, rows * C * f);
    g->g2 = carve(base, &cur, rows * C * f);
    g->datty = carve(base, &cur, rows * C * f);
    g->dqkv = carve(base, &cur, rows * 3 * C * f);
    g->dgelu = carve(base, &cur, rows * F * f);
    g->dfch = carve(base, &cur, rows * F * f);
    g->dxb = carve(base, &cur, rows * C * f);
    return cur;
}

// A model with only a config and the sizes, for measuring layouts before anything is allocated.
static mt_bert *sizing_model(const mt_bert_config *cfg, int max_tokens, int max_batch, int max_len, int training) {
    mt_bert *m = mt_calloc(1, sizeof *m);
    m->cfg = *cfg;
    m->max_tokens = max_tokens, m->max_batch = max_batch, m->max_len = max_len, m->training = training;
    return m;
}

size_t mt_bert_arena_bytes(const mt_bert_config *cfg, int max_tokens, int max_batch, int max_len, int training) {
    mt_bert *m = sizing_model(cfg, max_tokens, max_batch, max_len, training);
    size_t n = layout_arena(m, NULL);
    free(m);
    return n;
}

size_t mt_bert_grad_arena_bytes(const mt_bert_config *cfg, int max_tokens) {
    mt_bert *m = sizing_model(cfg, max_tokens, 1, 1, 1);
    size_t n = layout_grad_arena(m, NULL, (size_t)max_tokens);
    free(m);
    return n;
}

size_t mt_bert_count_params(const mt_bert_config *cfg, int has_pooler) {
    mt_bert *m = sizing_model(cfg, 0, 0, 0, 0);
    m->has_pooler = has_pooler;
    build_param_table(m);
    size_t n = m->num_params;
    for (int i = 0; i < m->num_param_tensors; i++) free(m->param_table[i].name);
    free(m->param_table), free(m);
    return n;
}

mt_workspace_shape mt_bert_workspace_shape(const mt_bert_config *cfg, int max_tokens, int max_batch, int max_len,
                                           int training, size_t num_params) {
    return (mt_workspace_shape){max_tokens, max_batch, max_len, cfg->hidden_size, cfg->num_attention_heads,
                                cfg->intermediate_size, training, training ? num_params : 0,
                                0,   // no products beyond the encoder
                                0};  // no padded bound beyond max_batch x max_len
}

// The gradient buffers, and dhidden (mt_bert_dhidden), for max_tokens.
static void reserve_grad_arena(mt_bert *m) {
    if (m->grad_arena && m->grad_tokens >= m->max_tokens) return;
    if (m->grad_arena) m->be->free(m->grad_arena);
    m->grad_tokens = m->max_tokens;
    m->grad_arena = m->be->alloc(layout_grad_arena(m, NULL, (size_t)m->grad_tokens));
    layout_grad_arena(m, m->grad_arena, (size_t)m->grad_tokens);
    if (m->dhidden) m->be->free(m->dhidden);
    m->dhidden = m->be->alloc((size_t)m->max_tokens * m->cfg.hidden_size * sizeof(float));
}

static void reserve(mt_bert *m, int max_tokens, int max_batch, int max_len, int training, int max_padded) {
    // the bound as the workspaces read it (0: max_batch x max_len), within an int
    int64_t padded = mt_ws_padded_bound(&(mt_workspace_shape){.max_batch = max_batch, .max_len = max_len,
                                                               .max_padded = max_padded});
    if (padded > INT_MAX) padded = INT_MAX;
    if (m->arena && max_tokens <= m->max_tokens && max_batch <= m->max_batch && max_len <= m->max_len &&
        padded <= m->max_padded && training == m->training)
        return;
    if (m->arena) m->be->free(m->arena);
    m->max_tokens = max_tokens > m->max_tokens ? max_tokens : m->max_tokens;
    m->max_batch = max_batch > m->max_batch ? max_batch : m->max_batch;
    m->max_len = max_len > m->max_len ? max_len : m->max_len;
    m->max_padded = (int)padded > m->max_padded ? (int)padded : m->max_padded;
    m->training = training;
    m->arena = m->be->alloc(layout_arena(m, NULL));
    layout_arena(m, m->arena);
    mt_workspace_shape ws = mt_bert_workspace_shape(&m->cfg, m->max_tokens, m->max_batch, m->max_len, training,
                                                    m->num_params);
    ws.max_padded = m->max_padded;
    m->be->reserve(&ws);
    if (training) reserve_grad_arena(m);  // backward then allocates nothing
    m->h_ids = mt_realloc(m->h_ids, m->max_tokens * sizeof(int32_t));
    m->h_types = mt_realloc(m->h_types, m->max_tokens * sizeof(int32_t));
    m->h_pos = mt_realloc(m->h_pos, m->max_tokens * sizeof(int32_t));
    m->h_offsets = mt_realloc(m->h_offsets, (m->max_batch + 1) * sizeof(int32_t));
    m->h_att_offsets = mt_realloc(m->h_att_offsets, m->max_batch * sizeof(int64_t));
    if (!m->be->host_memory)
        m->h_hidden = mt_realloc(m->h_hidden, (size_t)m->max_tokens * m->cfg.hidden_size * sizeof(float));
}

void mt_bert_reserve(mt_bert *m, int max_tokens, int max_batch, int max_len, int training, int max_padded) {
    reserve(m, max_tokens, max_batch, max_len, training, max_padded);
    m->planned = 1;
}

// ---- forward ---------------------------------------------------------------------------

// Checks a batch and packs its real tokens into the host staging arrays; returns N or -1.
// Sequence b's tokens: padded (offsets NULL) at ids[b*T ..], lengths[b] of them (1..T);
// packed at ids[offsets[b] .. offsets[b+1]-1].
static int pack_batch(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *lengths,
                      const int32_t *offsets, int B, int T, int training) {
    const mt_bert_config *c = &m->cfg;
    if (B < 1 || (!offsets && T < 1)) return mt_fail(m->err, sizeof m->err, "empty batch (B = %d, T = %d)", B, T);
    if (offsets && offsets[0] != 0) return mt_fail(m->err, sizeof m->err, "offsets[0] is %d, not 0", offsets[0]);
    int64_t N = 0;
    int max_len = 0;
    for (int b = 0; b < B; b++) {
        int64_t len = offsets ? (int64_t)offsets[b + 1] - offsets[b] : lengths[b];
        if (len < 1 || (!offsets && len > T))
            return mt_fail(m->err, sizeof m->err, "sequence %d has length %lld, outside 1..%d", b, (long long)len,
                        offsets ? c->max_position_embeddings : T);
        if (len > c->max_position_embeddings)
            return mt_fail(m->err, sizeof m->err, "sequence %d has %lld tokens; the model accepts at most %d "
                        "(max_position_embeddings)", b, (long long)len, c->max_position_embeddings);
        N += len;
        if (len > max_len) max_len = (int)len;
    }
    if (N > INT32_MAX / 4) return mt_fail(m->err, sizeof m->err, "batch of %lld tokens is too large", (long long)N);
    if (!m->planned) reserve(m, (int)N, B, max_len, training, 0);  // no plan: grown to the batch
    else if (N > m->max_tokens || B > m->max_batch || max_len > m->max_len || (int64_t)B * max_len > m->max_padded ||
             training != m->training)
        return mt_fail(m->err, sizeof m->err, "a batch of %lld tokens in %d sequences (longest %d%s) is outside the "
                       "reservation of %d tokens, %d sequences, longest %d, sequences x longest %d%s "
                       "(mt_bert_reserve): the memory plan must cover every batch", (long long)N, B, max_len,
                       training ? ", training" : "", m->max_tokens, m->max_batch, m->max_len, m->max_padded,
                       m->training ? ", training" : "");
    int n = 0;
    int64_t att = 0;
    for (int b = 0; b < B; b++) {
        int len = offsets ? offsets[b + 1] - offsets[b] : lengths[b];
        size_t start = offsets ? (size_t)offsets[b] : (size_t)b * T;
        m->h_offsets[b] = n;
        m->h_att_offsets[b] = att;
        att += (int64_t)c->num_attention_heads * len * len;
        for (int t = 0; t < len; t++, n++) {
            int32_t id = ids[start + t], ty = types ? types[start + t] : 0;
            if (id < 0 || id >= c->vocab_size)
                return mt_fail(m->err, sizeof m->err, "sequence %d, position %d: token id %d outside the vocabulary "
                            "(0..%d)", b, t, id, c->vocab_size - 1);
            if (ty < 0 || ty >= c->type_vocab_size)
                return mt_fail(m->err, sizeof m->err, "sequence %d, position %d: token type %d outside 0..%d", b, t, ty,
                            c->type_vocab_size - 1);
            m->h_ids[n] = id;
            m->h_types[n] = ty;
            m->h_pos[n] = t;
        }
    }
    m->h_offsets[B] = n;
    m->last_max_len = max_len;  // the attention ops size their work by it (no readback of offsets)
    return n;
}

// One encoder layer's activations in the arena (the training layout keeps L of each; the
// inference layout one, shared by every layer). Strides use this batch's N.
typedef struct {
    float *x, *qkv, *att, *atty, *res1, *ln1, *ln1_mean, *ln1_rstd, *fch, *fch_gelu, *res2, *ln2_mean, *ln2_rstd;
    float *out;  // the layer's output: the next layer's x
} layer_view;

static layer_view view_layer(const mt_bert *m, int l, int N) {
    const mt_bert_acts *a = &m->acts;
    const mt_bert_config *c = &m->cfg;
    size_t C = c->hidden_size, F = c->intermediate_size, k = m->training ? (size_t)l : 0, NN = (size_t)N;
    size_t xin = m->training ? (size_t)l : 0, xout = m->training ? (size_t)l + 1 : 0;
    return (layer_view){
        .x = a->x + xin * NN * C, .qkv = a->qkv + k * NN * 3 * C,
        .att = a->att ? a->att + k * c->num_attention_heads * NN * m->max_len : NULL,
        .atty = a->atty + k * NN * C, .res1 = a->res1 + k * NN * C, .ln1 = a->ln1 + k * NN * C,
        .ln1_mean = a->ln1_mean + k * NN, .ln1_rstd = a->ln1_rstd + k * NN, .fch = a->fch + k * NN * F,
        .fch_gelu = a->fch_gelu + k * NN * F, .res2 = a->res2 + k * NN * C, .ln2_mean = a->ln2_mean + k * NN,
        .ln2_rstd = a->ln2_rstd + k * NN, .out = a->x + xout * NN * C,
    };
}

static int dropout_active(const mt_bert *m) { return m->trained_forward && m->drop.p > 0.0f; }

// The mask key of one dropout site of the current training forward.
static mt_dropout_key site_key(const mt_bert *m, int layer, uint32_t kind) {
    return (mt_dropout_key){m->drop.p, m->drop.seed, m->drop.step, mt_dropout_site(m->drop.pass, (uint32_t)layer, kind)};
}

static void encoder_layer(mt_bert *m, int l, int N, int B) {
    const mt_backend *be = m->be;
    const mt_bert_config *c = &m->cfg;
    const mt_bert_layer *w = &m->layers[l];
    const mt_bert_acts *a = &m->acts;
    int C = c->hidden_size, F = c->intermediate_size, drop = dropout_active(m);
    int64_t NC = (int64_t)N * C;
    layer_view v = view_layer(m, l, N);
    mt_dropout_key probs = site_key(m, l, MT_BERT_DROP_ATTENTION_PROBS);
    mt_dropout_key att_out = site_key(m, l, MT_BERT_DROP_ATTENTION_OUTPUT), ffn_out = site_key(m, l, MT_BERT_DROP_FFN_OUTPUT);

    be->matmul_forward(v.qkv, v.x, w->qkv_w, w->qkv_b, NULL, N, C, 3 * C);
    int NH = c->num_attention_heads, Lmax = m->last_max_len;
    if (drop) be->attention_forward_dropout(v.atty, v.att, v.qkv, a->offsets, a->att_offsets, B, Lmax, C, NH, &probs);
    else be->attention_forward(v.atty, v.att, v.qkv, a->offsets, a->att_offsets, B, Lmax, C, NH);
    // res1 = dropout(atty @ Wo^T + bo) + x; without dropout the residual is fused into the GEMM
    be->matmul_forward(v.res1, v.atty, w->attn_out_w, w->attn_out_b, drop ? NULL : v.x, N, C, C);
    if (drop) be->dropout_forward(v.res1, v.res1, v.x, NC, &att_out);
    be->layernorm_forward(v.ln1, v.ln1_mean, v.ln1_rstd, v.res1, w->ln1_w, w->ln1_b, N, C, c->layer_norm_eps);
    be->matmul_forward(v.fch, v.ln1, w->fc_w, w->fc_b, NULL, N, C, F);
    be->gelu_forward(v.fch_gelu, v.fch, (int64_t)N * F);
    be->matmul_forward(v.res2, v.fch_gelu, w->fc_out_w, w->fc_out_b, drop ? NULL : v.ln1, N, F, C);
    if (drop) be->dropout_forward(v.res2, v.res2, v.ln1, NC, &ffn_out);
    be->layernorm_forward(v.out, v.ln2_mean, v.ln2_rstd, v.res2, w->ln2_w, w->ln2_b, N, C, c->layer_norm_eps);
}

static const float *last_hidden(const mt_bert *m) {
    size_t last = m->training ? (size_t)m->cfg.num_hidden_layers : 0;
    return m->acts.x + last * (size_t)m->last_N * m->cfg.hidden_size;  // layer stride is this batch's N
}

// Uploads the staged batch (N tokens, B sequences) and runs embeddings and every layer.
static void run_encoder(mt_bert *m, int N, int B) {
    const mt_backend *be = m->be;
    mt_bert_acts *a = &m->acts;
    int C = m->cfg.hidden_size;
    be->copy_to_device(a->ids, m->h_ids, N * sizeof(int32_t));
    be->copy_to_device(a->types, m->h_types, N * sizeof(int32_t));
    be->copy_to_device(a->pos, m->h_pos, N * sizeof(int32_t));
    be->copy_to_device(a->offsets, m->h_offsets, (B + 1) * sizeof(int32_t));
    be->copy_to_device(a->att_offsets, m->h_att_offsets, B * sizeof(int64_t));
    be->embeddings_forward(a->emb, a->ids, a->types, a->pos, m->wte, m->wpe, m->wtt, N, C);
    be->layernorm_forward(a->x, a->emb_mean, a->emb_rstd, a->emb, m->emb_ln_w, m->emb_ln_b, N, C,
                          m->cfg.layer_norm_eps);
    if (dropout_active(m)) {
        mt_dropout_key k = site_key(m, 0, MT_BERT_DROP_EMBEDDINGS);
        be->dropout_forward(a->x, a->x, NULL, (int64_t)N * C, &k);
    }
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) encoder_layer(m, l, N, B);
    m->last_B = B;
    m->last_N = N;
}

int mt_bert_forward(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *lengths, int B, int T,
                    float *out_hidden, float *out_pooled) {
    const mt_backend *be = m->be;
    int C = m->cfg.hidden_size;
    m->err[0] = 0;
    m->trained_forward = 0;
    if (out_pooled && !m->has_pooler)
        return mt_fail(m->err, sizeof m->err, "%s has no pooler weights; use a pooling mode instead", m->dir);
    int N = pack_batch(m, ids, types, lengths, NULL, B, T, m->training);
    if (N < 0) return -1;
    run_encoder(m, N, B);
    mt_bert_acts *a = &m->acts;
    const float *hidden = last_hidden(m);
    if (out_pooled) {
        be->pool_forward(a->cls, hidden, a->offsets, B, C, MT_POOL_CLS);
        be->matmul_forward(a->pooled, a->cls, m->pool_w, m->pool_b, NULL, B, C, C);
        be->tanh_forward(a->pooled, a->pooled, (int64_t)B * C);
        be->copy_to_host(out_pooled, a->pooled, (size_t)B * C * sizeof(float));
    }
    if (out_hidden && be->host_memory) {
        be->unpack_forward(out_hidden, hidden, a->offsets, B, T, C);
    } else if (out_hidden) {  // device backends: fetch packed rows, unpack on the host
        be->copy_to_host(m->h_hidden, hidden, (size_t)N * C * sizeof(float));
        for (int b = 0; b < B; b++) {
            int L = m->h_offsets[b + 1] - m->h_offsets[b];
            float *o = out_hidden + (size_t)b * T * C;
            memcpy(o, m->h_hidden + (size_t)m->h_offsets[b] * C, sizeof(float) * L * C);
            memset(o + (size_t)L * C, 0, sizeof(float) * (T - L) * C);
        }
    }
    return 0;
}

void mt_bert_pool(mt_bert *m, int mode, float *out) {
    int B = m->last_B, C = m->cfg.hidden_size;
    if (m->be->host_memory) {
        m->be->pool_forward(out, last_hidden(m), m->acts.offsets, B, C, mode);
    } else {
        m->be->pool_forward(m->acts.cls, last_hidden(m), m->acts.offsets, B, C, mode);
        m->be->copy_to_host(out, m->acts.cls, (size_t)B * C * sizeof(float));
    }
}

const float *mt_bert_packed_hidden_be(const mt_bert *m, const int32_t **offsets, int *B, int *N) {
    if (offsets) *offsets = m->h_offsets;
    if (B) *B = m->last_B;
    if (N) *N = m->last_N;
    return last_hidden(m);
}

const float *mt_bert_packed_hidden(mt_bert *m, const int32_t **offsets, int *B, int *N) {
    const float *h = mt_bert_packed_hidden_be(m, offsets, B, N);
    if (m->be->host_memory) return h;
    m->be->copy_to_host(m->h_hidden, h, (size_t)m->last_N * m->cfg.hidden_size * sizeof(float));
    return m->h_hidden;
}

// ---- training: forward and backward ------------------------------------------------------

const float *mt_bert_forward_train(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *offsets,
                                   int B, const mt_bert_dropout *drop) {
    m->err[0] = 0;
    m->trained_forward = 0;
    if (drop && !(drop->p >= 0.0f && drop->p < 1.0f)) {
        mt_fail(m->err, sizeof m->err, "dropout probability %g is outside [0, 1)", drop->p);
        return NULL;
    }
    if (drop && drop->pass >= 255) {
        mt_fail(m->err, sizeof m->err, "dropout pass %u is not below 255", drop->pass);
        return NULL;
    }
    int N = pack_batch(m, ids, types, NULL, offsets, B, 0, 1);
    if (N < 0) return NULL;
    m->drop = drop ? *drop : (mt_bert_dropout){0};
    m->trained_forward = 1;
    run_encoder(m, N, B);
    return last_hidden(m);
}


#define GRAD(p) (grads + ((p) - m->params))  // a parameter's gradient, same offset

// The gradient through a dropout site: dout itself without dropout, else the masked copy in
// buf (one of the two `dropped` buffers, zero on entry: zero_grads cleared it).
static const float *through_dropout(mt_bert *m, const float *dout, int64_t n, int layer, uint32_t kind, float *buf) {
    if (!dropout_active(m)) return dout;
    mt_dropout_key k = site_key(m, layer, kind);
    m->be->dropout_backward(buf, dout, n, &k);
    return buf;
}

// Clears the gradient buffers a backward step accumulates into, in one call: from `from` (out,
// when it is dxa) or else the dropout copies (without dropout: g2) up to end. layout_grad_arena
// lays them end to end; they accumulate with +=, and nothing else writes them before their own
// op, so each holds zero there as when each was cleared just before its op (one call a layer
// where there were eight: launches on a GPU).
static void zero_grads(mt_bert *m, float *from, const float *end) {
    if (!from) from = dropout_active(m) ? m->grad_acts.dropped : m->grad_acts.g2;
    m->be->zero(from, (size_t)((const char *)end - (const char *)from));
}

// dx: d loss / d layer output [N, C] (read only); out: d loss / d layer input, dxa or dxb (not dx).
static void layer_backward(mt_bert *m, int l, const float *dx, float *out, float *grads) {
    const mt_backend *be = m->be;
    const mt_bert_config *c = &m->cfg;
    const mt_bert_layer *w = &m->layers[l];
    const mt_bert_grad_acts *g = &m->grad_acts;
    int N = m->last_N, B = m->last_B, C = c->hidden_size, F = c->intermediate_size;
    size_t NC = (size_t)N * C, NF = (size_t)N * F;
    layer_view v = view_layer(m, l, N);
    mt_dropout_key probs = site_key(m, l, MT_BERT_DROP_ATTENTION_PROBS);

    // dxa, dropped, dropped2 (with or without dropout), g2 .. dfch; or (dropped, dropped2,) g2 .. dxb
    if (out == g->dxa) zero_grads(m, out, g->dfch + NF);
    else zero_grads(m, NULL, out + NC);
    // out = LN2(res2), res2 = dropout(fch_gelu @ W2^T + b2) + ln1: g2 = d res2
    be->layernorm_backward(g->g2, GRAD(w->ln2_w), GRAD(w->ln2_b), dx, v.res2, w->ln2_w, v.ln2_mean, v.ln2_rstd, N, C);
    const float *ddense = through_dropout(m, g->g2, (int64_t)NC, l, MT_BERT_DROP_FFN_OUTPUT, g->dropped);
    be->matmul_backward(g->dgelu, GRAD(w->fc_out_w), GRAD(w->fc_out_b), ddense, v.fch_gelu, w->fc_out_w, N, F, C);
    be->gelu_backward(g->dfch, v.fch, v.fch_gelu, g->dgelu, (int64_t)NF);
    // d ln1 = the residual's g2 + the FFN input's gradient, accumulated in place
    be->matmul_backward(g->g2, GRAD(w->fc_w), GRAD(w->fc_b), g->dfch, v.ln1, w->fc_w, N, C, F);

    // ln1 = LN1(res1), res1 = dropout(atty @ Wo^T + bo) + x: out = d res1
    be->layernorm_backward(out, GRAD(w->ln1_w), GRAD(w->ln1_b), g->g2, v.res1, w->ln1_w, v.ln1_mean, v.ln1_rstd, N, C);
    ddense = through_dropout(m, out, (int64_t)NC, l, MT_BERT_DROP_ATTENTION_OUTPUT, g->dropped2);
    be->matmul_backward(g->datty, GRAD(w->attn_out_w), GRAD(w->attn_out_b), ddense, v.atty, w->attn_out_w, N, C, C);
    be->attention_backward(g->dqkv, g->datty, v.qkv, v.att, m->acts.offsets, m->acts.att_offsets, B,
                           m->last_max_len, C, c->num_attention_heads, dropout_active(m) ? &probs : NULL);
    // d x = the residual's d res1 + the projections' input gradient
    be->matmul_backward(out, GRAD(w->qkv_w), GRAD(w->qkv_b), g->dqkv, v.x, w->qkv_w, N, C, 3 * C);
}

// dx: d loss / d (dropped-out) embedding LayerNorm output.
static void embeddings_backward(mt_bert *m, const float *dx, float *grads) {
    const mt_backend *be = m->be;
    const mt_bert_acts *a = &m->acts;
    int N = m->last_N, C = m->cfg.hidden_size;
    float *demb = m->grad_acts.g2;
    zero_grads(m, NULL, demb + (size_t)N * C);  // (dropped, dropped2 unused here,) g2
    const float *dln = through_dropout(m, dx, (int64_t)N * C, 0, MT_BERT_DROP_EMBEDDINGS, m->grad_acts.dropped);
    be->layernorm_backward(demb, GRAD(m->emb_ln_w), GRAD(m->emb_ln_b), dln, a->emb, m->emb_ln_w, a->emb_mean,
                           a->emb_rstd, N, C);
    be->embeddings_backward(GRAD(m->wte), GRAD(m->wpe), GRAD(m->wtt), demb, a->ids, a->types, a->pos, N, C);
}

float *mt_bert_dhidden(mt_bert *m) {
    reserve_grad_arena(m);
    return m->dhidden;
}

void mt_bert_backward(mt_bert *m, float *dhidden, float *grads) {
    if (!m->trained_forward) mt_die("mt_bert_backward: the last forward was not mt_bert_forward_train");
    reserve_grad_arena(m);
    // the buffers packed for this batch's rows: zero_grads' spans are no longer than the batch's
    layout_grad_arena(m, m->grad_arena, (size_t)m->last_N);
    // each layer's input gradient into dxa or dxb in turn: the one the layer reads stays intact
    const float *dx = dhidden;
    float *out = m->grad_acts.dxa;
    for (int l = m->cfg.num_hidden_layers - 1; l >= 0; l--) {
        layer_backward(m, l, dx, out, grads);
        dx = out, out = out == m->grad_acts.dxa ? m->grad_acts.dxb : m->grad_acts.dxa;
    }
    embeddings_backward(m, dx, grads);
}

#undef GRAD

// ---- checkpoints and optimizer information -------------------------------------------------

// Writes text as path atomically: path.tmp.PID, fsync, rename.
static int write_text_atomic(const char *path, const char *text, char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return mt_fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return 0;
    int e = errno;
    remove(tmp);
    return mt_fail(err, errlen, "cannot write %s: %s", path, strerror(e));
}

int mt_bert_save(const mt_bert *m, const char *dir, char *err, size_t errlen) {
    if (mt_mkdirs(dir, err, errlen)) return -1;
    const float *host = m->params;
    float *copy = NULL;
    if (!m->be->host_memory) {
        copy = mt_malloc(m->num_params * sizeof(float));
        m->be->copy_to_host(copy, m->params, m->num_params * sizeof(float));
        host = copy;
    }
    mt_st_write_tensor *ts = mt_calloc(m->num_param_tensors, sizeof *ts);
    for (int i = 0; i < m->num_param_tensors; i++) {  // the table's names are Hugging Face's
        const mt_bert_param *p = &m->param_table[i];
        ts[i] = (mt_st_write_tensor){p->name, p->ndim, {p->shape[0], p->shape[1]}, host + p->offset};
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = mt_safetensors_write(path, ts, m->num_param_tensors, err, errlen);
    free(ts);
    free(copy);
    if (rc) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    return write_text_atomic(path, m->config_json, err, errlen);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int mt_bert_tensor_info(const mt_bert *m, struct mt_bert_tensor_info *out, int max) {
    for (int i = 0; out && i < m->num_param_tensors && i < max; i++) {
        const mt_bert_param *p = &m->param_table[i];
        int layer = -1;
        if (strncmp(p->name, "pooler.", 7) == 0) layer = m->cfg.num_hidden_layers;
        else if (sscanf(p->name, "encoder.layer.%d.", &layer) != 1) layer = -1;
        // as transformers' examples and the paper: no decay on biases and LayerNorm weights
        int decay = !ends_with(p->name, ".bias") && !ends_with(p->name, "LayerNorm.weight");
        out[i] = (struct mt_bert_tensor_info){p->offset, p->numel, decay, layer, p->name};
    }
    return m->num_param_tensors;
}

void mt_bert_adamw_init(mt_adamw *o, const mt_bert *m, const mt_adamw_hparams *hp, double llrd) {
    int n = mt_bert_tensor_info(m, NULL, 0), L = m->cfg.num_hidden_layers;
    struct mt_bert_tensor_info *info = mt_malloc((size_t)n * sizeof *info);
    mt_adamw_tensor *tab = mt_malloc((size_t)n * sizeof *tab);
    mt_bert_tensor_info(m, info, n);
    for (int i = 0; i < n; i++) {
        int pooler = info[i].layer >= L;
        double scale = llrd > 0 ? mt_llrd_scale(llrd, pooler ? L + 1 : info[i].layer + 1, L) : 1.0;
        tab[i] = (mt_adamw_tensor){info[i].offset, info[i].size, scale, info[i].decay && !pooler};
    }
    mt_adamw_init(o, m->be, hp, tab, n, m->num_params);
    free(tab), free(info);
}
