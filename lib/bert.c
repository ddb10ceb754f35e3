// bert.c — see bert.h. Forward as transformers' BertModel (eval mode): embeddings
// (word + token type + position) → LayerNorm → L × [self-attention → dense + residual →
// LayerNorm → dense → GELU → dense + residual → LayerNorm] → optional tanh pooler on [CLS].
#include "bert.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "safetensors.h"

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

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
            rc = fail(err, errlen, "%s: missing tensor '%s'", st->path, full);
        } else if (t->dtype == MT_ST_I64) {
            rc = fail(err, errlen, "%s: tensor '%s' has dtype I64, expected a float type", st->path, full);
        } else if (t->ndim != p->ndim || t->shape[0] != wshape[0] || (p->ndim == 2 && t->shape[1] != wshape[1])) {
            shape_str(got, sizeof got, t->ndim, t->shape);
            shape_str(want, sizeof want, p->ndim, wshape);
            rc = fail(err, errlen, "%s: tensor '%s' has shape %s, config.json implies %s", st->path, full, got, want);
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

mt_bert *mt_bert_load(const char *dir, const mt_backend *be, char *err, size_t errlen) {
    mt_bert *m = mt_calloc(1, sizeof *m);
    m->be = be;
    m->dir = mt_strdup(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (mt_config_load(&m->cfg, path, err, errlen)) { mt_bert_free(m); return NULL; }
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

void mt_bert_reserve(mt_bert *m, int max_tokens, int max_batch, int max_len, int training) {
    if (m->arena && max_tokens <= m->max_tokens && max_batch <= m->max_batch && max_len <= m->max_len &&
        training == m->training)
        return;
    if (m->arena) m->be->free(m->arena);
    m->max_tokens = max_tokens > m->max_tokens ? max_tokens : m->max_tokens;
    m->max_batch = max_batch > m->max_batch ? max_batch : m->max_batch;
    m->max_len = max_len > m->max_len ? max_len : m->max_len;
    m->training = training;
    m->arena = m->be->alloc(layout_arena(m, NULL));
    layout_arena(m, m->arena);
    m->h_ids = mt_realloc(m->h_ids, m->max_tokens * sizeof(int32_t));
    m->h_types = mt_realloc(m->h_types, m->max_tokens * sizeof(int32_t));
    m->h_pos = mt_realloc(m->h_pos, m->max_tokens * sizeof(int32_t));
    m->h_offsets = mt_realloc(m->h_offsets, (m->max_batch + 1) * sizeof(int32_t));
    m->h_att_offsets = mt_realloc(m->h_att_offsets, m->max_batch * sizeof(int64_t));
    if (!m->be->host_memory)
        m->h_hidden = mt_realloc(m->h_hidden, (size_t)m->max_tokens * m->cfg.hidden_size * sizeof(float));
}

// ---- forward ---------------------------------------------------------------------------

// Checks the batch and packs its real tokens into the host staging arrays; returns N or -1.
static int pack_batch(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *lengths, int B, int T) {
    const mt_bert_config *c = &m->cfg;
    if (B < 1 || T < 1) return fail(m->err, sizeof m->err, "empty batch (B = %d, T = %d)", B, T);
    int64_t N = 0;
    int max_len = 0;
    for (int b = 0; b < B; b++) {
        if (lengths[b] < 1 || lengths[b] > T)
            return fail(m->err, sizeof m->err, "sequence %d has length %d, outside 1..%d", b, lengths[b], T);
        if (lengths[b] > c->max_position_embeddings)
            return fail(m->err, sizeof m->err, "sequence %d has %d tokens; the model accepts at most %d "
                        "(max_position_embeddings)", b, lengths[b], c->max_position_embeddings);
        N += lengths[b];
        if (lengths[b] > max_len) max_len = lengths[b];
    }
    if (N > INT32_MAX / 4) return fail(m->err, sizeof m->err, "batch of %lld tokens is too large", (long long)N);
    mt_bert_reserve(m, (int)N, B, max_len, m->training);
    int n = 0;
    int64_t att = 0;
    for (int b = 0; b < B; b++) {
        m->h_offsets[b] = n;
        m->h_att_offsets[b] = att;
        att += (int64_t)c->num_attention_heads * lengths[b] * lengths[b];
        for (int t = 0; t < lengths[b]; t++, n++) {
            int32_t id = ids[(size_t)b * T + t], ty = types ? types[(size_t)b * T + t] : 0;
            if (id < 0 || id >= c->vocab_size)
                return fail(m->err, sizeof m->err, "sequence %d, position %d: token id %d outside the vocabulary "
                            "(0..%d)", b, t, id, c->vocab_size - 1);
            if (ty < 0 || ty >= c->type_vocab_size)
                return fail(m->err, sizeof m->err, "sequence %d, position %d: token type %d outside 0..%d", b, t, ty,
                            c->type_vocab_size - 1);
            m->h_ids[n] = id;
            m->h_types[n] = ty;
            m->h_pos[n] = t;
        }
    }
    m->h_offsets[B] = n;
    return n;
}

static void encoder_layer(mt_bert *m, int l, int N, int B) {
    const mt_backend *be = m->be;
    const mt_bert_config *c = &m->cfg;
    const mt_bert_layer *w = &m->layers[l];
    mt_bert_acts *a = &m->acts;
    size_t C = c->hidden_size, F = c->intermediate_size, k = m->training ? (size_t)l : 0, NN = (size_t)N;
    size_t xin = m->training ? (size_t)l : 0, xout = m->training ? (size_t)l + 1 : 0;
    float *x = a->x + xin * NN * C, *qkv = a->qkv + k * NN * 3 * C, *atty = a->atty + k * NN * C;
    float *res1 = a->res1 + k * NN * C, *ln1 = a->ln1 + k * NN * C, *fch = a->fch + k * NN * F;
    float *fch_gelu = a->fch_gelu + k * NN * F, *res2 = a->res2 + k * NN * C;
    float *att = a->att ? a->att + k * c->num_attention_heads * NN * m->max_len : NULL;

    be->matmul_forward(qkv, x, w->qkv_w, w->qkv_b, NULL, N, C, 3 * C);
    be->attention_forward(atty, att, qkv, a->offsets, a->att_offsets, B, C, c->num_attention_heads);
    be->matmul_forward(res1, atty, w->attn_out_w, w->attn_out_b, x, N, C, C);
    be->layernorm_forward(ln1, a->ln1_mean + k * NN, a->ln1_rstd + k * NN, res1, w->ln1_w, w->ln1_b, N, C,
                          c->layer_norm_eps);
    be->matmul_forward(fch, ln1, w->fc_w, w->fc_b, NULL, N, C, F);
    be->gelu_forward(fch_gelu, fch, (int64_t)NN * F);
    be->matmul_forward(res2, fch_gelu, w->fc_out_w, w->fc_out_b, ln1, N, F, C);
    be->layernorm_forward(a->x + xout * NN * C, a->ln2_mean + k * NN, a->ln2_rstd + k * NN, res2, w->ln2_w, w->ln2_b,
                          N, C, c->layer_norm_eps);
}

static const float *last_hidden(const mt_bert *m) {
    size_t last = m->training ? (size_t)m->cfg.num_hidden_layers : 0;
    return m->acts.x + last * (size_t)m->last_N * m->cfg.hidden_size;  // layer stride is this batch's N
}

int mt_bert_forward(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *lengths, int B, int T,
                    float *out_hidden, float *out_pooled) {
    const mt_backend *be = m->be;
    int C = m->cfg.hidden_size;
    m->err[0] = 0;
    if (out_pooled && !m->has_pooler)
        return fail(m->err, sizeof m->err, "%s has no pooler weights; use a pooling mode instead", m->dir);
    int N = pack_batch(m, ids, types, lengths, B, T);
    if (N < 0) return -1;
    mt_bert_acts *a = &m->acts;
    be->copy_to_device(a->ids, m->h_ids, N * sizeof(int32_t));
    be->copy_to_device(a->types, m->h_types, N * sizeof(int32_t));
    be->copy_to_device(a->pos, m->h_pos, N * sizeof(int32_t));
    be->copy_to_device(a->offsets, m->h_offsets, (B + 1) * sizeof(int32_t));
    be->copy_to_device(a->att_offsets, m->h_att_offsets, B * sizeof(int64_t));
    be->embeddings_forward(a->emb, a->ids, a->types, a->pos, m->wte, m->wpe, m->wtt, N, C);
    be->layernorm_forward(a->x, a->emb_mean, a->emb_rstd, a->emb, m->emb_ln_w, m->emb_ln_b, N, C,
                          m->cfg.layer_norm_eps);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) encoder_layer(m, l, N, B);
    m->last_B = B;
    m->last_N = N;
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
