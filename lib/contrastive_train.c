// contrastive_train.c — the batch plan, the SimCSE training loop and the atomic checkpoint
// directory of `simcse` (see contrastive.h).
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adamw.h"
#include "common.h"
#include "contrastive.h"
#include "checkpoint.h"
#include "device.h"
#include "lossscale.h"
#include "memplan.h"
#include "rng.h"
#include "sentence.h"
#include "simcse.h"

// ---- the batch plan -------------------------------------------------------------------

typedef struct {
    int tokens;
    int32_t pos, ex;  // position in the epoch's permutation (tie-break), example index
} bucket_item;

static int by_tokens(const void *a, const void *b) {
    const bucket_item *x = a, *y = b;
    if (x->tokens != y->tokens) return x->tokens - y->tokens;
    return x->pos - y->pos;
}

static void plan_push_batch(mt_cl_plan *p, const bucket_item *it, int n) {
    if (p->n + (size_t)n > p->cap) {
        p->cap = 2 * (p->n + (size_t)n) + 256;
        p->ex = mt_realloc(p->ex, p->cap * sizeof *p->ex);
    }
    if (p->n_batches + 2 > p->cap_batches) {
        p->cap_batches = 2 * p->cap_batches + 64;
        p->start = mt_realloc(p->start, (size_t)p->cap_batches * sizeof *p->start);
    }
    for (int i = 0; i < n; i++) p->ex[p->n++] = it[i].ex;
    p->start[++p->n_batches] = (int32_t)p->n;
}

// Cuts a sorted window into batches (at most batch_size examples, batch_tokens tokens),
// then appends them to the plan in a shuffled order.
static void plan_window(mt_cl_plan *p, bucket_item *it, int n, int batch_size, int batch_tokens, mt_rng *rng) {
    int32_t *first = mt_malloc((size_t)n * sizeof *first), *count = mt_malloc((size_t)n * sizeof *count), nb = 0;
    for (int i = 0; i < n;) {
        int k = 1, tokens = it[i].tokens;
        while (i + k < n && k < batch_size && tokens + it[i + k].tokens <= batch_tokens) tokens += it[i + k++].tokens;
        if (k >= 2) first[nb] = i, count[nb++] = k;  // one example has no in-batch negative
        i += k;
    }
    uint32_t *order = mt_malloc((size_t)(nb ? nb : 1) * sizeof *order);
    mt_rng_permutation(rng, order, (size_t)nb);
    for (int b = 0; b < nb; b++) plan_push_batch(p, it + first[order[b]], count[order[b]]);
    free(order), free(first), free(count);
}

void mt_cl_plan_epoch(mt_cl_plan *p, const mt_cl_data *d, int epoch, uint64_t seed, int batch_size,
                      int batch_tokens) {
    p->n = 0, p->n_batches = 0;
    if (!p->start) p->start = mt_malloc(64 * sizeof *p->start), p->cap_batches = 64;
    p->start[0] = 0;
    int n = d->n_ex;
    uint32_t *perm = mt_malloc((size_t)(n ? n : 1) * sizeof *perm);
    mt_rng rng;
    mt_rng_init(&rng, seed, (uint32_t)epoch, MT_SITE_SHUFFLE);
    mt_rng_permutation(&rng, perm, (size_t)n);
    int window = MT_CL_BUCKET_BATCHES * batch_size;
    bucket_item *it = mt_malloc((size_t)window * sizeof *it);
    for (int w0 = 0; w0 < n; w0 += window) {
        int m = n - w0 < window ? n - w0 : window;
        for (int i = 0; i < m; i++) {
            int ex = (int)perm[w0 + i];
            it[i] = (bucket_item){mt_cl_example_tokens(d, ex), w0 + i, ex};
        }
        qsort(it, (size_t)m, sizeof *it, by_tokens);
        plan_window(p, it, m, batch_size, batch_tokens, &rng);
    }
    free(it);
    free(perm);
}

void mt_cl_plan_free(mt_cl_plan *p) {
    free(p->ex), free(p->start);
    memset(p, 0, sizeof *p);
}

// ---- training ---------------------------------------------------------------------------

mt_cl_train_options mt_cl_train_defaults(void) {
    mt_cl_train_options o = {0};
    o.batch_size = 32, o.batch_tokens = 16384, o.epochs = 1;
    o.lr = 3e-5, o.weight_decay = 0.01, o.warmup = 0.1, o.tau = MT_SIMCSE_TAU, o.clip = 1.0;
    o.dropout = 0.1f, o.pool = MT_POOL_MEAN;
    return o;
}

#define LOSS_WINDOW 20

typedef struct {
    mt_bert *m;
    const mt_cl_data *d;
    const mt_cl_train_options *o;
    int C, has_neg;
    mt_simcse loss;
    mt_adamw opt;
    mt_lr_schedule sched;
    mt_loss_scaler ls;
    const mt_backend *be;         // the encoder's: parameters, gradients, moments in its memory
    float *grads;                 // [num_params] be memory
    int32_t *ids, *offsets;       // the packed batch: [tokens], [3B + 1] (host)
    float *emb, *demb;            // [3B, C] pooled embeddings and their gradient (host: the loss)
    int32_t *d_offsets;           // be memory: offsets [3B + 1]
    float *d_emb, *d_demb;        // be memory: emb, demb [3B, C]
    size_t cap_tokens;
    double recent[LOSS_WINDOW];   // the last finite losses (skipped steps' are not averaged)
    long n_recent;                // finite losses seen
} trainer;

// AdamW groups from the encoder's tensor table. The pooler gets no gradient here (SimCSE
// pools the token states); torch's AdamW skips parameters without a gradient, so it must not
// be decayed either: decay 0 and zero moments leave it exactly as loaded.
static void trainer_optimizer(trainer *t) {
    mt_adamw_hparams hp = mt_adamw_defaults();
    hp.weight_decay = t->o->weight_decay;
    mt_bert_adamw_init(&t->opt, t->m, &hp, 0);
}

// Views of each example: anchor and positive, and a hard negative when the data has them.
static int views_of(const mt_cl_data *d) { return d->n_ex > 0 && d->ex[0].negative >= 0 ? 3 : 2; }

// The pooled embeddings, their gradient and the offsets in backend memory for V = views x B
// sequences of width C: allocated, or (s->be NULL) only sized for the memory plan.
static void pooled_take(mt_mem_sizer *s, trainer *t, int V, int C) {
    t->d_offsets = mt_mem_take(s, ((size_t)V + 1) * sizeof *t->d_offsets);
    t->d_emb = mt_mem_take(s, (size_t)V * C * sizeof(float));
    t->d_demb = mt_mem_take(s, (size_t)V * C * sizeof(float));
}

static void trainer_init(trainer *t, mt_bert *m, const mt_cl_data *d, const mt_cl_train_options *o, long total) {
    memset(t, 0, sizeof *t);
    t->m = m, t->d = d, t->o = o, t->C = m->cfg.hidden_size, t->be = m->be;
    mt_backend_require_training(t->be, "simcse");
    t->has_neg = d->n_ex > 0 && d->ex[0].negative >= 0;
    for (int i = 0; i < d->n_ex; i++)
        if ((d->ex[i].negative >= 0) != t->has_neg) mt_die("simcse: examples mix with and without hard negatives");
    int views = views_of(d), B = o->batch_size;
    mt_simcse_init(&t->loss, B, t->C, o->tau, o->symmetric);
    trainer_optimizer(t);
    char err[256];
    if (mt_loss_scaler_init(&t->ls, o->loss_scale, o->loss_scale_init, mt_backend_precision(t->be), err, sizeof err))
        mt_die("simcse: %s", err);
    if (t->ls.mode != MT_LOSS_SCALE_NONE)
        mt_log("loss scaling: %s, scale %g", mt_loss_scale_mode_name(t->ls.mode), (double)t->ls.scale);
    long warm = (long)ceil(o->warmup * (double)total);
    t->sched = (mt_lr_schedule){MT_LR_LINEAR, o->lr, warm, total};
    t->grads = t->be->alloc(m->num_params * sizeof(float));
    t->offsets = mt_malloc((size_t)(views * B + 1) * sizeof *t->offsets);
    t->emb = mt_malloc((size_t)views * B * t->C * sizeof(float));
    t->demb = mt_malloc((size_t)views * B * t->C * sizeof(float));
    pooled_take(&(mt_mem_sizer){t->be, 0}, t, views * B, t->C);
}

// The largest batch of an epoch's plan folded into the bounds (tokens, sequences): the
// encoder's memory is sized once for every epoch's batches. Its attention probabilities take
// tokens x longest sequence, so the real lengths, not the model's 512, set the size.
typedef struct { int tokens, seqs, len; } batch_bounds;
static void fold_bounds(batch_bounds *bb, const mt_cl_data *d, const mt_cl_plan *p, int views) {
    for (int b = 0; b < p->n_batches; b++) {
        int tokens = 0, B = p->start[b + 1] - p->start[b];
        for (int i = p->start[b]; i < p->start[b + 1]; i++) tokens += mt_cl_example_tokens(d, p->ex[i]);
        bb->tokens = tokens > bb->tokens ? tokens : bb->tokens;
        bb->seqs = views * B > bb->seqs ? views * B : bb->seqs;
    }
}

// The run's memory plan (parameters loaded already: counted as available), then the arena.
static void reserve_memory(mt_bert *m, const mt_cl_data *d, const mt_cl_train_options *o, batch_bounds bb) {
    bb.len = 1;
    for (int i = 0; i < d->seqs.n; i++) bb.len = d->seqs.len[i] > bb.len ? d->seqs.len[i] : bb.len;
    mt_mem_plan p;
    mt_mem_plan_encoder(&p, &m->cfg, m->be, &(mt_mem_run){bb.tokens, bb.seqs, bb.len, 1, 1, 0, 0, 0, 0});
    trainer sizing;
    mt_mem_sizer s = {NULL, 0};
    pooled_take(&s, &sizing, views_of(d) * o->batch_size, m->cfg.hidden_size);
    mt_mem_plan_add(&p, "pooled embeddings", s.bytes);
    char lower[200];
    snprintf(lower, sizeof lower, "lower --batch-tokens (now %d), --batch-size (now %d) or the longest sequence "
             "(now %d tokens)", o->batch_tokens, o->batch_size, bb.len);
    mt_mem_plan_check(&p, m->be, o->max_memory, 0, lower, m->num_params * sizeof(float));
    mt_bert_reserve(m, bb.tokens, bb.seqs, bb.len, 1, 0);
}

static void trainer_free(trainer *t) {
    mt_simcse_free(&t->loss);
    mt_adamw_free(&t->opt);
    t->be->free(t->grads), t->be->free(t->d_offsets), t->be->free(t->d_emb), t->be->free(t->d_demb);
    free(t->ids), free(t->offsets), free(t->emb), free(t->demb);
}

// Packs the batch's sequences: anchors, then positives, then (NLI) negatives. Returns N.
static int pack_views(trainer *t, const int32_t *ex, int B) {
    const mt_seq_pool *s = &t->d->seqs;
    int views = t->has_neg ? 3 : 2;
    size_t N = 0;
    for (int b = 0; b < B; b++) N += (size_t)mt_cl_example_tokens(t->d, ex[b]);
    if (N > t->cap_tokens) {
        t->cap_tokens = N;
        t->ids = mt_realloc(t->ids, N * sizeof *t->ids);
    }
    int n = 0;
    t->offsets[0] = 0;
    for (int v = 0; v < views; v++)
        for (int b = 0; b < B; b++) {
            const mt_cl_example *e = &t->d->ex[ex[b]];
            int seq = v == 0 ? e->anchor : v == 1 ? e->positive : e->negative;
            memcpy(t->ids + n, s->tok + s->start[seq], (size_t)s->len[seq] * sizeof(int32_t));
            n += s->len[seq];
            t->offsets[v * B + b + 1] = n;
        }
    return n;
}

// One optimizer step on one batch; returns its real tokens.
static int train_step(trainer *t, const int32_t *ex, int B, long step, double lr) {
    const mt_cl_train_options *o = t->o;
    int C = t->C, V = (t->has_neg ? 3 : 2) * B;
    int N = pack_views(t, ex, B);
    // One packed forward for every view: the dropout masks are keyed by the element's row in
    // the packed batch, so anchor, positive and negative views never share a mask.
    mt_bert_dropout drop = {o->dropout, o->seed, (uint32_t)step, 0};
    const float *h = mt_bert_forward_train(t->m, t->ids, NULL, t->offsets, V, &drop);  // be memory
    if (!h) mt_die("simcse: step %ld: %s", step + 1, mt_bert_error(t->m));
    // Pooling where the states are; only the [V, C] embeddings cross to the host for the loss.
    const mt_backend *be = t->be;
    size_t emb_bytes = (size_t)V * C * sizeof(float);
    be->copy_to_device(t->d_offsets, t->offsets, ((size_t)V + 1) * sizeof *t->offsets);
    be->pool_forward(t->d_emb, h, t->d_offsets, V, C, o->pool);
    be->copy_to_host(t->emb, t->d_emb, emb_bytes);
    float *e = t->emb, *de = t->demb;
    double loss = mt_simcse_forward(&t->loss, e, e + (size_t)B * C, t->has_neg ? e + (size_t)2 * B * C : NULL, B);
    if (o->fail_at_step == step + 1) loss = t->loss.loss = NAN;
    if (!isfinite(loss)) {  // loss scaling skips the step as for a non-finite gradient (lossscale.h)
        if (mt_loss_scaler_skip_loss(&t->ls, "loss", loss, step + 1))
            mt_die("simcse: step %ld: loss is %g (lr %g); lower --lr or check the data", step + 1, loss, lr);
        return N;
    }
    memset(de, 0, (size_t)V * C * sizeof(float));
    mt_simcse_backward(&t->loss, de, de + (size_t)B * C, t->has_neg ? de + (size_t)2 * B * C : NULL, t->ls.scale);
    be->copy_to_device(t->d_demb, de, emb_bytes);
    float *dhidden = mt_bert_dhidden(t->m);  // [N, C] be memory
    be->zero(dhidden, (size_t)N * C * sizeof(float));
    be->pool_backward(dhidden, t->d_demb, t->d_offsets, V, C, o->pool);
    be->zero(t->grads, t->m->num_params * sizeof(float));
    mt_bert_backward(t->m, dhidden, t->grads);
    mt_grad_segment seg = {t->be, t->grads, t->m->num_params};
    double norm = mt_loss_scaler_unscale_clip(&t->ls, &seg, 1, o->clip);
    if (mt_loss_scaler_update(&t->ls, norm, step + 1)) mt_adamw_step(&t->opt, t->m->params, t->grads, lr);
    else if (t->ls.mode == MT_LOSS_SCALE_NONE) mt_die("simcse: step %ld: gradient norm is %g; lower --lr", step + 1, norm);
    return N;
}

static void print_progress(const mt_cl_result *r, long total, double lr) {
    if (mt_quiet) return;
    double s = r->seconds > 1e-9 ? r->seconds : 1e-9;
    long eta = (long)((double)(total - r->steps) * s / (double)r->steps + 0.5);
    fprintf(stderr, "%s: step %ld/%ld (%ld%%) loss %.4f (last %d: %.4f) acc %.3f lr %.3g | %.1f ex/s %.0f tok/s | ETA %ld:%02ld\n",
            mt_prog, r->steps, total, 100 * r->steps / (total ? total : 1), r->loss, LOSS_WINDOW, r->mean_loss,
            r->accuracy, lr, (double)r->examples / s, (double)r->tokens / s, eta / 60, eta % 60);
}

// Steps of the run; bb: the bounds of its batches, every epoch's.
static long count_steps(const mt_cl_data *d, const mt_cl_train_options *o, mt_cl_plan *p, batch_bounds *bb) {
    long total = 0;
    for (int e = 0; e < o->epochs; e++) {
        mt_cl_plan_epoch(p, d, e, o->seed, o->batch_size, o->batch_tokens);
        total += p->n_batches;
        fold_bounds(bb, d, p, views_of(d));
    }
    return o->max_steps > 0 && o->max_steps < total ? o->max_steps : total;
}

void mt_cl_train(mt_bert *m, const mt_cl_data *d, const mt_cl_train_options *o, FILE *log, mt_cl_result *res) {
    mt_cl_plan plan = {0};
    batch_bounds bb = {1, 1, 1};
    long total = count_steps(d, o, &plan, &bb);
    if (total < 1) mt_die("simcse: no batch of at least 2 examples (%d examples, --batch-size %d, --batch-tokens %d)",
                          d->n_ex, o->batch_size, o->batch_tokens);
    reserve_memory(m, d, o, bb);
    trainer t;
    trainer_init(&t, m, d, o, total);
    memset(res, 0, sizeof *res);
    if (log) fprintf(log, "step\tloss\taccuracy\tlr\n");
    double t0 = mt_now(), last = t0;
    long step = 0;
    for (int e = 0; e < o->epochs && step < total; e++) {
        mt_cl_plan_epoch(&plan, d, e, o->seed, o->batch_size, o->batch_tokens);
        for (int b = 0; b < plan.n_batches && step < total; b++, step++) {
            int B = plan.start[b + 1] - plan.start[b];
            double lr = mt_lr_at(&t.sched, step);
            res->tokens += train_step(&t, plan.ex + plan.start[b], B, step, lr);
            res->examples += B, res->steps = step + 1;
            res->loss = t.loss.loss, res->accuracy = t.loss.accuracy, res->seconds = mt_now() - t0;
            if (isfinite(res->loss)) t.recent[t.n_recent++ % LOSS_WINDOW] = res->loss;
            int n = t.n_recent < LOSS_WINDOW ? (int)t.n_recent : LOSS_WINDOW;
            res->mean_loss = n ? 0 : NAN;
            for (int i = 0; i < n; i++) res->mean_loss += t.recent[i] / n;
            if (log) fprintf(log, "%ld\t%.6f\t%.4f\t%.6g\n", step + 1, res->loss, res->accuracy, lr);
            int due = o->log_every > 0 ? res->steps % o->log_every == 0 : mt_now() - last >= 2.0;
            if (due || res->steps == total) print_progress(res, total, lr), last = mt_now();
        }
    }
    if (log) fflush(log);
    res->skipped = t.ls.skipped, res->loss_scale = t.ls.scale;
    if (t.ls.mode != MT_LOSS_SCALE_NONE)
        mt_log("loss scale %g at the end; %ld of %ld steps skipped (loss or gradient not finite)", (double)t.ls.scale,
               t.ls.skipped, res->steps);
    trainer_free(&t);
    mt_cl_plan_free(&plan);
}

// ---- the checkpoint directory ------------------------------------------------------------
// Built with checkpoint.h: a temporary directory beside OUT, swapped in by one rename.

static const mt_cl_outdir *pending_outdir;  // removed at exit unless committed

static void remove_pending(void) {
    if (pending_outdir) mt_ckpt_remove(pending_outdir->tmp);
}

void mt_cl_outdir_begin(mt_cl_outdir *o, const char *out, int replace) {
    struct stat st;
    if (stat(out, &st) == 0 && !replace) mt_die("%s exists; remove it or pass --force to replace it", out);
    if (stat(out, &st) == 0 && !S_ISDIR(st.st_mode)) mt_die("%s exists and is not a directory", out);
    o->out = mt_strdup(out);
    o->tmp = mt_ckpt_tmpdir(out);
    o->replace = replace;
    pending_outdir = o;
    static int registered;
    if (!registered) atexit(remove_pending), registered = 1;
}

void mt_cl_outdir_path(const mt_cl_outdir *o, const char *name, char *buf, size_t n) {
    if (snprintf(buf, n, "%s/%s", o->tmp, name) >= (int)n) mt_die("%s/%s: path too long", o->tmp, name);
}

void mt_cl_outdir_commit(mt_cl_outdir *o) {
    char err[512];
    if (mt_ckpt_commit(o->tmp, o->out, err, sizeof err) != 0) mt_die("%s", err);
    pending_outdir = NULL;
    free(o->out), free(o->tmp);
    o->out = o->tmp = NULL;
}
