// embedder.c — see embedder.h.
//
// A window of records is read; every sequence in it (ids_a, ids_b, ids_ab) becomes one item;
// items are sorted by length and cut into batches of at most batch_tokens real tokens and
// batch_size sequences; each batch runs through the encoder once; results go back to their
// record's slot, and the window is written in input order. Memory is bounded by the window.
//
// The sbert-cnn-bilstm pool runs the checkpoint's trained sentence model (lib/sentence.h) over
// the batch's packed token states instead of a fixed pooling; the joint sequences of pairs
// still give their [CLS] state (cls_ab, width C), the single sentences the model's D values.
#include "embedder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "common.h"
#include "memplan.h"
#include "stream.h"
#include "taskmodel.h"

enum { SLOT_A, SLOT_B, SLOT_AB, N_SLOTS };
static const char *IDS_NAME[N_SLOTS] = {"ids_a", "ids_b", "ids_ab"};
static const char *POOLED_NAME[N_SLOTS] = {"emb_a", "emb_b", "cls_ab"};
static const char *STATES_NAME[N_SLOTS] = {"states_a", "states_b", "states_ab"};

typedef struct {
    int rec, slot, len;
    const int32_t *ids, *types;  // types NULL: all zero
    size_t out;                  // float offset of this item's output in the window buffer
} item;

struct mt_embedder {
    mt_bert *m;
    mt_embed_options o;
    char vocab_fp[17];
    int C, E;  // encoder width; pooled sentence width (C, or the sentence model's D)
    // the trained sentence model (sbert-cnn-bilstm pool only), on the encoder's backend
    mt_taskmodel *tm;
    mt_sentence_acts sacts;
    float *sin, *d_semb; // backend memory: gathered token states [budget, C]; embeddings [batch_size, D]
    int32_t *d_rows;     // backend memory [budget]: the packed row of each gathered state
    int32_t *d_zeros;    // backend memory [budget] zeros, and zrow [C]: the gather's zero tables
    float *zrow;
    int32_t *rows;       // [budget] host: d_rows' upload
    float *semb;         // the embeddings on the host
    int32_t *soffsets;   // [batch_size + 1]
    int *sidx;           // [batch_size] batch position of each sentence-model sequence
    // window state, reused
    mt_record *recs;
    item *items;
    float *out;  // pooled [C] or states [len, C] per item
    size_t out_cap;
    mt_record outrec;
    // batch staging
    int32_t *ids, *types, *lengths;
    float *pooled, *cls;
    int stage_tokens;  // B*T capacity of ids/types
};

mt_embed_options mt_embed_defaults(void) {
    mt_embed_options o = {MT_POOL_MEAN, 0, 0, 4096, 64, 1024, 0, 0};
    return o;
}

int mt_embed_parse_pool(const char *s) {
    if (!strcmp(s, "cls")) return MT_POOL_CLS;
    if (!strcmp(s, "mean")) return MT_POOL_MEAN;
    if (!strcmp(s, "max")) return MT_POOL_MAX;
    if (!strcmp(s, "sbert-cnn-bilstm")) return MT_EMBED_POOL_SBERT_CNN_BILSTM;
    mt_die("--pool: unknown mode '%s' (cls, mean, max or sbert-cnn-bilstm)", s);
}

const char *mt_embed_pool_name(int pool) {
    return pool == MT_POOL_CLS ? "cls" : pool == MT_POOL_MAX ? "max"
         : pool == MT_EMBED_POOL_SBERT_CNN_BILSTM ? "sbert-cnn-bilstm" : "mean";
}

// The sentence model's backend buffers besides its activations for batches of up to budget
// tokens: the gathered token states and the embeddings, allocated (s->be) or only sized.
static void sentence_buffers_take(mt_mem_sizer *s, mt_embedder *e, int D, int budget) {
    e->sin = mt_mem_take(s, (size_t)budget * e->C * sizeof(float));
    e->d_semb = mt_mem_take(s, (size_t)e->o.batch_size * D * sizeof(float));
    e->d_rows = mt_mem_take(s, (size_t)budget * sizeof(int32_t));
    e->d_zeros = mt_mem_take(s, (size_t)budget * sizeof(int32_t));  // alloc zero-fills
    e->zrow = mt_mem_take(s, (size_t)e->C * sizeof(float));
}

// Loads the sentence model of the checkpoint dir (its heads.safetensors), sized for batches of
// up to budget tokens and o->batch_size sequences.
static void open_sentence_model(mt_embedder *e, const char *dir, int budget) {
    const char *want = mt_embed_pool_name(e->o.pool);
    if (e->o.tokens) mt_die("--tokens writes token states: it does not take --pool %s", want);
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/heads.safetensors", dir);
    e->tm = mt_calloc(1, sizeof *e->tm);
    if (mt_taskmodel_load(e->tm, path, err, sizeof err))
        mt_die("--pool %s needs the sentence model trained with the encoder (pcgrad-train "
               "--sentence-model %s writes it to CKPT/heads.safetensors; give --model CKPT): %s",
               want, want, err);
    const mt_sentence_layout *L = &e->tm->sent;
    if (L->cfg.kind != MT_SENT_SBERT_CNN_BILSTM)
        mt_die("%s: its sentence model is %s, not %s: embed --pool %s", path,
               mt_sentence_kind_name(L->cfg.kind), want, mt_sentence_kind_name(L->cfg.kind));
    if (e->tm->C != e->C || L->cfg.C != e->C)
        mt_die("%s: sentence model for hidden size %d, but the encoder in %s has %d", path, e->tm->C, dir, e->C);
    if (e->tm->model_fp[0] && strcmp(e->tm->model_fp, e->m->fingerprint))
        mt_die("%s belongs to the encoder with model_fp=%s, but %s/model.safetensors has model_fp=%s", path,
               e->tm->model_fp, dir, e->m->fingerprint);
    e->E = L->D;
    const mt_backend *be = e->m->be;
    mt_taskmodel_to_backend(e->tm, be);
    mt_sentence_acts_alloc(be, &e->sacts, L, budget, e->o.batch_size);
    sentence_buffers_take(&(mt_mem_sizer){be, 0}, e, L->D, budget);
    e->semb = mt_malloc((size_t)e->o.batch_size * L->D * sizeof(float));
    e->soffsets = mt_malloc(((size_t)e->o.batch_size + 1) * sizeof(int32_t));
    e->sidx = mt_malloc((size_t)e->o.batch_size * sizeof(int));
    e->rows = mt_malloc((size_t)budget * sizeof(int32_t));
}

// The encoder's batches: at most max(batch_tokens, one longest sequence) real tokens (the
// batcher keeps B x the longest within batch_tokens, a lone sequence may exceed it). The same
// number bounds B x the longest: the padded attention buffers are planned by it.
static int token_budget(const mt_embed_options *o, int max_pos) {
    return o->batch_tokens > max_pos ? o->batch_tokens : max_pos;
}

// The run's memory against the backend and the cap, from config.json alone: before any allocation.
static void check_memory(const char *dir, const mt_backend *be, const mt_embed_options *o) {
    char err[512], path[4096], lower[160];
    mt_bert_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (mt_config_load(&cfg, path, err, sizeof err)) mt_die("%s", err);
    int max_pos = cfg.max_position_embeddings;
    mt_mem_plan p;
    int budget = token_budget(o, max_pos);
    mt_taskmodel tm;
    snprintf(path, sizeof path, "%s/heads.safetensors", dir);
    // (a heads file that does not load is open_sentence_model's to refuse, with its reasons)
    int sent = o->pool == MT_EMBED_POOL_SBERT_CNN_BILSTM && !o->tokens && !mt_taskmodel_load(&tm, path, err, sizeof err);
    size_t operands = sent ? mt_sentence_operand_floats(&tm.sent, budget, o->batch_size) : 0;
    mt_mem_plan_encoder(&p, &cfg, be, &(mt_mem_run){budget, o->batch_size, max_pos, 0, 0, 0, operands, budget, 0});
    if (sent) {
        mt_embedder sizing = {.o = *o, .C = cfg.hidden_size};
        mt_mem_sizer s = {NULL, mt_sentence_acts_bytes(&tm.sent, budget, o->batch_size)};
        sentence_buffers_take(&s, &sizing, tm.sent.D, budget);
        mt_mem_plan_add(&p, "sentence model parameters", tm.n_sent * sizeof(float));
        mt_mem_plan_add(&p, "sentence model activations", s.bytes);
        mt_taskmodel_free(&tm);
    }
    snprintf(lower, sizeof lower, "lower --batch-tokens (now %d, at least the model's %d positions count) or "
             "--batch-size (now %d)", o->batch_tokens, max_pos, o->batch_size);
    mt_mem_plan_check(&p, be, o->max_memory, 0, lower, 0);
}

mt_embedder *mt_embedder_open(const char *dir, const mt_backend *be, int threads,
                              const mt_embed_options *o) {
    check_memory(dir, be, o);
    mt_embedder *e = mt_calloc(1, sizeof *e);
    char err[512];
    e->m = mt_bert_load(dir, be, err, sizeof err);
    if (!e->m) mt_die("%s", err);
    if (threads > 0) mt_bert_set_threads(e->m, threads);
    e->o = *o;
    e->C = e->E = e->m->cfg.hidden_size;
    char vocab[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", dir);
    mt_file_fingerprint(vocab, e->vocab_fp);
    e->recs = mt_calloc((size_t)o->window, sizeof *e->recs);
    e->items = mt_malloc((size_t)o->window * N_SLOTS * sizeof *e->items);
    e->lengths = mt_malloc((size_t)o->batch_size * sizeof *e->lengths);
    e->pooled = mt_malloc((size_t)o->batch_size * e->C * sizeof(float));
    e->cls = mt_malloc((size_t)o->batch_size * e->C * sizeof(float));
    int max_pos = e->m->cfg.max_position_embeddings;
    int budget = token_budget(o, max_pos);
    mt_bert_reserve(e->m, budget, o->batch_size, max_pos, 0, budget);
    if (o->pool == MT_EMBED_POOL_SBERT_CNN_BILSTM) open_sentence_model(e, dir, budget);
    return e;
}

void mt_embedder_close(mt_embedder *e) {
    for (int i = 0; i < e->o.window; i++) mt_record_free(&e->recs[i]);
    free(e->recs);
    free(e->items);
    free(e->out);
    free(e->ids);
    free(e->types);
    free(e->lengths);
    free(e->pooled);
    free(e->cls);
    mt_record_free(&e->outrec);
    if (e->tm) {
        const mt_backend *be = e->m->be;
        mt_sentence_acts_free(be, &e->sacts);
        mt_taskmodel_free(e->tm);
        free(e->tm);
        be->free(e->sin), be->free(e->d_semb), be->free(e->d_rows), be->free(e->d_zeros), be->free(e->zrow);
        free(e->semb), free(e->soffsets), free(e->sidx), free(e->rows);
    }
    mt_bert_free(e->m);
    free(e);
}

static int by_length(const void *a, const void *b) {
    const item *x = a, *y = b;
    if (x->len != y->len) return x->len - y->len;
    return (x->rec * N_SLOTS + x->slot) - (y->rec * N_SLOTS + y->slot);  // stable
}

// Collects the sequences of the window's records into e->items; returns their number and
// reserves the output buffer. Every id and length is checked here, naming the record.
static int collect_items(mt_embedder *e, int n_recs, const char *src) {
    const mt_bert_config *cfg = &e->m->cfg;
    int n = 0;
    size_t out = 0;
    for (int r = 0; r < n_recs; r++) {
        const mt_record *rec = &e->recs[r];
        int found = 0;
        for (int s = 0; s < N_SLOTS; s++) {
            const mt_tensor *t = mt_record_get(rec, IDS_NAME[s]);
            if (!t || (s == SLOT_AB && e->o.no_cross)) continue;
            if (t->dtype != MT_I32 || t->ndim != 1)
                mt_die("%s: record '%s': %s must be a 1-D i32 tensor", src, rec->id, IDS_NAME[s]);
            int len = t->dims[0];
            if (len < 1) mt_die("%s: record '%s': %s is empty", src, rec->id, IDS_NAME[s]);
            if (len > cfg->max_position_embeddings)
                mt_die("%s: record '%s': %s has %d tokens, the model takes at most %d "
                       "(max_position_embeddings); tokenize with --max-len %d",
                       src, rec->id, IDS_NAME[s], len, cfg->max_position_embeddings,
                       cfg->max_position_embeddings);
            const int32_t *ids = t->data;
            for (int i = 0; i < len; i++)
                if (ids[i] < 0 || ids[i] >= cfg->vocab_size)
                    mt_die("%s: record '%s': token id %d outside the vocabulary (%d)", src,
                           rec->id, ids[i], cfg->vocab_size);
            const mt_tensor *ty = s == SLOT_AB ? mt_record_get(rec, "types_ab") : NULL;
            if (ty && (ty->dtype != MT_I32 || ty->dims[0] != len))
                mt_die("%s: record '%s': types_ab does not match ids_ab", src, rec->id);
            if (ty)
                for (int i = 0; i < len; i++)
                    if (((const int32_t *)ty->data)[i] < 0 || ((const int32_t *)ty->data)[i] >= cfg->type_vocab_size)
                        mt_die("%s: record '%s': token type outside 0..%d", src, rec->id, cfg->type_vocab_size - 1);
            e->items[n] = (item){r, s, len, ids, ty ? ty->data : NULL, out};
            out += e->o.tokens ? (size_t)len * e->C : (size_t)(s == SLOT_AB ? e->C : e->E);
            n++;
            found = 1;
        }
        if (!found) mt_die("%s: record '%s' has no ids_a/ids_b/ids_ab tensor (is it a token stream?)", src, rec->id);
    }
    if (out > e->out_cap) {
        e->out_cap = out + out / 2;
        e->out = mt_realloc(e->out, e->out_cap * sizeof(float));
    }
    return n;
}

static void l2_normalize(float *v, int C) {
    double s = 0;
    for (int i = 0; i < C; i++) s += (double)v[i] * v[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.f;
    for (int i = 0; i < C; i++) v[i] *= inv;
}

// The sentence model over the single sentences of the last forward (items it[0..B)), without
// dropout; their embeddings go to their output slots. The joint sequences of pairs are left
// out (they give cls_ab), so their states are gathered away when the batch has any: in one
// launch, embeddings_forward with all-zero position and type tables as heads fit's row gather
// (row i of sin is (h[rows[i]] + 0) + 0, the state itself: only a -0 would turn +0, and a
// LayerNorm output a + bias is -0 only where the bias is).
static void sentence_model(mt_embedder *e, const item *it, int B) {
    int C = e->C, D = e->E, nb = 0, n = 0;
    const int32_t *off;
    const mt_backend *be = e->m->be;
    const float *h = mt_bert_packed_hidden_be(e->m, &off, NULL, NULL);  // be memory: no copy
    for (int b = 0; b < B; b++) {
        if (it[b].slot == SLOT_AB) continue;
        e->soffsets[nb] = n;
        e->sidx[nb++] = b;
        n += it[b].len;
    }
    if (nb == 0) return;
    e->soffsets[nb] = n;
    const float *inp = h;
    if (nb < B) {  // gather the rows of the single sentences (each a block of rows)
        for (int j = 0; j < nb; j++)
            for (int t = 0; t < it[e->sidx[j]].len; t++) e->rows[e->soffsets[j] + t] = off[e->sidx[j]] + t;
        be->copy_to_device(e->d_rows, e->rows, (size_t)n * sizeof(int32_t));
        be->embeddings_forward(e->sin, e->d_rows, e->d_zeros, e->d_zeros, h, e->zrow, e->zrow, n, C);
        inp = e->sin;
    }
    mt_sentence_forward(be, e->d_semb, &e->sacts, &e->tm->sent, &e->tm->w.sent, inp, nb < B ? e->soffsets : off, nb, n,
                        NULL);
    be->copy_to_host(e->semb, e->d_semb, (size_t)nb * D * sizeof(float));
    for (int j = 0; j < nb; j++)
        memcpy(e->out + it[e->sidx[j]].out, e->semb + (size_t)j * D, (size_t)D * sizeof(float));
}

// Runs items[0..B) (sorted by length, so the last is the longest) through the encoder.
static void run_batch(mt_embedder *e, item *it, int B) {
    int T = it[B - 1].len, C = e->C;
    if ((size_t)B * T > (size_t)e->stage_tokens) {
        e->stage_tokens = B * T;
        e->ids = mt_realloc(e->ids, (size_t)B * T * sizeof(int32_t));
        e->types = mt_realloc(e->types, (size_t)B * T * sizeof(int32_t));
    }
    for (int b = 0; b < B; b++) {
        int32_t *ids = e->ids + (size_t)b * T, *types = e->types + (size_t)b * T;
        memcpy(ids, it[b].ids, it[b].len * sizeof(int32_t));
        memset(ids + it[b].len, 0, (size_t)(T - it[b].len) * sizeof(int32_t));
        if (it[b].types) memcpy(types, it[b].types, it[b].len * sizeof(int32_t));
        else memset(types, 0, it[b].len * sizeof(int32_t));
        memset(types + it[b].len, 0, (size_t)(T - it[b].len) * sizeof(int32_t));
        e->lengths[b] = it[b].len;
    }
    if (mt_bert_forward(e->m, e->ids, e->types, e->lengths, B, T, NULL, NULL))
        mt_die("encoder: %s", mt_bert_error(e->m));
    if (e->o.tokens) {  // straight from the packed states: no padded [B, T, C] copy in between
        const int32_t *off;
        const float *h = mt_bert_packed_hidden(e->m, &off, NULL, NULL);
        for (int b = 0; b < B; b++)
            memcpy(e->out + it[b].out, h + (size_t)off[b] * C, (size_t)it[b].len * C * sizeof(float));
        return;
    }
    int need_cls = 0;
    for (int b = 0; b < B; b++) need_cls |= it[b].slot == SLOT_AB;
    if (need_cls) mt_bert_pool(e->m, MT_POOL_CLS, e->cls);
    if (e->tm) {
        sentence_model(e, it, B);
    } else {
        mt_bert_pool(e->m, e->o.pool, e->pooled);
        for (int b = 0; b < B; b++)
            if (it[b].slot != SLOT_AB) memcpy(e->out + it[b].out, e->pooled + (size_t)b * C, C * sizeof(float));
    }
    for (int b = 0; b < B; b++) {
        // The cross-encoder output is always the [CLS] state, whatever the pooling.
        float *dst = e->out + it[b].out;
        if (it[b].slot == SLOT_AB) memcpy(dst, e->cls + (size_t)b * C, C * sizeof(float));
        else if (e->o.normalize) l2_normalize(dst, e->E);
    }
}

// Replaces each record's token tensors by its outputs, in place, and writes it.
static void write_window(mt_embedder *e, mt_writer *w, int n_recs, int n_items) {
    mt_record *o = &e->outrec;
    int k = 0;
    for (int r = 0; r < n_recs; r++) {
        const mt_record *rec = &e->recs[r];
        mt_record_clear(o);
        mt_record_set_id(o, rec->id);
        for (int l = 0; l < rec->n_labels; l++) mt_record_add_label(o, rec->label_name[l], rec->label[l]);
        for (; k < n_items && e->items[k].rec == r; k++) {
            const item *it = &e->items[k];
            mt_tensor *t = e->o.tokens ? mt_record_add2(o, STATES_NAME[it->slot], MT_F32, it->len, e->C)
                                       : mt_record_add1(o, POOLED_NAME[it->slot], MT_F32,
                                                        it->slot == SLOT_AB ? e->C : e->E);
            memcpy(t->data, e->out + it->out, mt_tensor_numel(t) * sizeof(float));
        }
        mt_writer_put(w, o);
    }
}

static void process_window(mt_embedder *e, mt_writer *w, int n_recs, const char *src) {
    int n = collect_items(e, n_recs, src);
    item *sorted = mt_malloc((size_t)n * sizeof *sorted);
    memcpy(sorted, e->items, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, by_length);
    for (int i = 0; i < n;) {
        int B = 1;
        // Grow the batch while the padded size stays within budget (sorted: the new item is
        // the longest so far, so B*len is the padded cost).
        while (i + B < n && B < e->o.batch_size && (long)(B + 1) * sorted[i + B].len <= e->o.batch_tokens) B++;
        run_batch(e, sorted + i, B);
        i += B;
    }
    free(sorted);
    write_window(e, w, n_recs, n);
}

void mt_embed_stream(mt_embedder *e, const char *in, const char *out) {
    mt_reader *r = mt_reader_open(in, 1);
    const mt_meta *im = mt_reader_meta(r);
    const char *kind = mt_meta_get(im, "kind");
    if (!kind || strcmp(kind, "tokens") != 0)
        mt_die("%s: expected a token stream from tokenize (kind=tokens), got kind=%s",
               mt_reader_path(r), kind ? kind : "(none)");
    mt_reader_expect(r, "vocab_fp", e->vocab_fp, "vocabulary (tokenize with the same --model)");
    mt_meta meta = {0};
    mt_meta_copy(&meta, im);
    char hidden[32], emb_dim[32];
    snprintf(hidden, sizeof hidden, "%d", e->C);
    snprintf(emb_dim, sizeof emb_dim, "%d", e->E);
    mt_meta_set(&meta, "kind", "embeddings");
    mt_meta_set(&meta, "producer", "embed 0.1");
    mt_meta_set(&meta, "model_fp", e->m->fingerprint);
    mt_meta_set(&meta, "hidden", hidden);
    mt_meta_set(&meta, "pool", e->o.tokens ? "tokens" : mt_embed_pool_name(e->o.pool));
    mt_meta_set(&meta, "normalize", e->o.normalize ? "1" : "0");
    if (!e->o.tokens) mt_meta_set(&meta, "emb_dim", emb_dim);
    mt_writer *w = mt_writer_open(out, &meta);
    mt_progress p;
    mt_progress_start(&p, "embedded", 0);
    for (;;) {
        int n = 0;
        while (n < e->o.window && mt_reader_next(r, &e->recs[n]) == 1) n++;
        if (n == 0) break;
        process_window(e, w, n, mt_reader_path(r));
        mt_progress_add(&p, n);
        if (n < e->o.window) break;
    }
    mt_progress_done(&p);
    mt_writer_close(w);
    mt_meta_free(&meta);
    mt_reader_close(r);
}
