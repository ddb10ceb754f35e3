// trainer.c — see trainer.h. The encoder and the sentence model (parameters, gradients, AdamW
// moments) live in the memory of the selected backend (be: the GPU's with --device cuda); the
// heads on the host. Gradient buffers:
//   Genc, Gsent  [n_enc], [n_sent] (be memory)   the step's encoder and sentence-model gradients
//   Gheads       [n_heads] (host)                the heads'
//   Penc[t], Psent[t]  [n_enc], [n_sent] (be memory)   task t's gradient of the shared
//              parameters (PCGrad), combined by PCGrad into Genc and Gsent: two segments.
// Genc and Gsent are one allocation, and so are all tasks' Penc and Psent (grad_pair_floats
// apart): one zero call clears a step's buffers.
// Per task pass: encoder forward on be -> sentence model on be over its packed hidden states ->
// the [2B, D] embeddings to the host -> heads and loss, forward and backward -> their gradient
// back to be -> sentence model backward into dhidden (be) -> encoder backward.
#include "trainer.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adamw.h"
#include "bert.h"
#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "device.h"
#include "lossscale.h"
#include "memplan.h"
#include "metrics.h"
#include "pcgrad.h"
#include "rng.h"
#include "safetensors.h"
#include "taskdata.h"

enum { K = MT_N_TASKS };

typedef struct { long pass, batch; } cursor;

typedef struct {
    mt_train_options o;
    mt_bert *m;
    mt_taskmodel tm;
    char vocab_fp[17];
    mt_taskdata data[K], dev[K];
    int has_data[K], has_dev[K];
    mt_batches bt[K];
    long bt_pass[K];
    cursor cur[K];
    int n_phases, phase_task[K][K], phase_k[K];
    long phase_spe[K], total_steps;
    // progress of the run (saved in the state file)
    long step, step_in_epoch;
    int phase, epoch;
    double best;
    long best_step;
    // optimisation
    const mt_backend *be;  // the encoder's backend
    size_t n_enc, n_sent, n_shared, n_total;
    float *Genc, *Gsent, *Gheads, *Penc[K], *Psent[K];
    mt_pcgrad pc;
    int pc_on;
    mt_adamw opt_enc, opt_sent, opt_heads;
    mt_lr_schedule sched;
    mt_loss_scaler ls;
    // scratch
    mt_packed pk;
    mt_tm_acts acts;
    int32_t *ex_buf;
    int ex_cap;
    // reporting
    FILE *log, *devlog;
    double t0, last_print;
    long ex_done, tok_done, steps_done;
    double loss_sum[K];
    long loss_n[K];
    double last_loss[K], last_norm;
    int loss_skipped;  // the last step was skipped for a non-finite loss (no PCGrad statistics)
} trainer;

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

void mt_train_defaults(mt_train_options *o) {
    memset(o, 0, sizeof *o);
    o->epochs = 3, o->batch_size = 16, o->partial_batch = 4, o->batch_tokens = 8192, o->window = 1024;
    o->lr = 1e-5, o->weight_decay = 0.01, o->clip = 0, o->llrd = 0, o->dropout = 0.1f, o->seed = 0;
    o->pair_model = MT_PAIR_ENSEMBLE, o->sentence_model = MT_SENT_MEAN, o->cnn_filters = 128, o->lstm_hidden = 128;
    o->device = "auto";
}

void mt_train_options_free(mt_train_options *o) {
    free(o->model_dir), free(o->init_dir), free(o->out_dir);
    for (int t = 0; t < K; t++) free(o->task_path[t]), free(o->dev_path[t]);
    o->model_dir = o->init_dir = o->out_dir = NULL;
    memset(o->task_path, 0, sizeof o->task_path), memset(o->dev_path, 0, sizeof o->dev_path);
}

// ---- the run's options in the state file ---------------------------------------------------------

typedef enum { OPT_STR, OPT_INT, OPT_LONG, OPT_DOUBLE, OPT_FLOAT } opt_type;
typedef struct { const char *name; opt_type type; size_t off; } opt_field;
#define F(name, type, field) {name, type, offsetof(mt_train_options, field)}
static const opt_field FIELDS[] = {
    F("model", OPT_STR, model_dir), F("init", OPT_STR, init_dir),
    F("task.sst", OPT_STR, task_path[0]), F("task.qqp", OPT_STR, task_path[1]), F("task.sts", OPT_STR, task_path[2]),
    F("dev.sst", OPT_STR, dev_path[0]), F("dev.qqp", OPT_STR, dev_path[1]), F("dev.sts", OPT_STR, dev_path[2]),
    F("epochs", OPT_INT, epochs), F("batch_size", OPT_INT, batch_size), F("partial_batch", OPT_INT, partial_batch),
    F("batch_tokens", OPT_INT, batch_tokens), F("window", OPT_INT, window), F("lr", OPT_DOUBLE, lr),
    F("weight_decay", OPT_DOUBLE, weight_decay), F("warmup", OPT_DOUBLE, warmup), F("clip", OPT_DOUBLE, clip),
    F("llrd", OPT_DOUBLE, llrd), F("lr_linear", OPT_INT, lr_linear), F("dropout", OPT_FLOAT, dropout),
    F("seed", OPT_LONG, seed), F("pcgrad", OPT_INT, pcgrad), F("pcgrad_sum", OPT_INT, pcgrad_sum),
    F("schedule.0", OPT_INT, schedule[0]), F("schedule.1", OPT_INT, schedule[1]), F("schedule.2", OPT_INT, schedule[2]),
    F("n_schedule", OPT_INT, n_schedule), F("pair_model", OPT_INT, pair_model),
    F("sentence_model", OPT_INT, sentence_model), F("cnn_filters", OPT_INT, cnn_filters),
    F("lstm_hidden", OPT_INT, lstm_hidden), F("max_steps", OPT_LONG, max_steps), F("limit", OPT_LONG, limit),
};
#undef F
#define N_FIELDS (int)(sizeof FIELDS / sizeof FIELDS[0])

static char *options_text(const mt_train_options *o) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (int i = 0; i < N_FIELDS; i++) {
        const void *p = (const char *)o + FIELDS[i].off;
        fprintf(f, "%s=", FIELDS[i].name);
        switch (FIELDS[i].type) {
        case OPT_STR: fputs(*(char *const *)p ? *(char *const *)p : "", f); break;
        case OPT_INT: fprintf(f, "%d", *(const int *)p); break;
        case OPT_LONG: fprintf(f, "%ld", *(const long *)p); break;
        case OPT_DOUBLE: fprintf(f, "%.17g", *(const double *)p); break;
        case OPT_FLOAT: fprintf(f, "%.9g", (double)*(const float *)p); break;
        }
        fputc('\n', f);
    }
    fclose(f);
    return buf;
}

static void options_parse(mt_train_options *o, const char *text, const char *what) {
    for (int i = 0; i < N_FIELDS; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s=", FIELDS[i].name);
        const char *s = text;
        while (s && strncmp(s, key, strlen(key)) != 0) s = (s = strchr(s, '\n')) ? s + 1 : NULL;
        if (!s) mt_die("%s: the run's options lack '%s'", what, FIELDS[i].name);
        s += strlen(key);
        size_t n = strcspn(s, "\n");
        char val[4096];
        snprintf(val, sizeof val, "%.*s", (int)n, s);
        void *p = (char *)o + FIELDS[i].off;
        switch (FIELDS[i].type) {
        case OPT_STR: *(char **)p = n ? mt_strdup(val) : NULL; break;
        case OPT_INT: *(int *)p = atoi(val); break;
        case OPT_LONG: *(long *)p = atol(val); break;
        case OPT_DOUBLE: *(double *)p = strtod(val, NULL); break;
        case OPT_FLOAT: *(float *)p = strtof(val, NULL); break;
        }
    }
}

// ---- set-up ------------------------------------------------------------------------------------

static void check_init_dir(const trainer *T, const char *init) {
    char err[512], p1[4096], p2[4096];
    mt_bert_config a, b;
    snprintf(p1, sizeof p1, "%s/config.json", T->o.model_dir);
    snprintf(p2, sizeof p2, "%s/config.json", init);
    if (mt_config_load(&a, p1, err, sizeof err) || mt_config_load(&b, p2, err, sizeof err)) mt_die("%s", err);
    if (a.hidden_size != b.hidden_size || a.vocab_size != b.vocab_size || a.num_hidden_layers != b.num_hidden_layers)
        mt_die("--init %s: a checkpoint of another model (hidden %d, %d layers, vocabulary %d; --model %s has hidden %d, "
               "%d layers, vocabulary %d)", init, b.hidden_size, b.num_hidden_layers, b.vocab_size, T->o.model_dir,
               a.hidden_size, a.num_hidden_layers, a.vocab_size);
    snprintf(p2, sizeof p2, "%s/vocab.txt", init);
    char fp[17];
    if (access(p2, R_OK) == 0 && (mt_file_fingerprint(p2, fp), strcmp(fp, T->vocab_fp) != 0))
        mt_die("--init %s: its vocab.txt differs from --model %s's", init, T->o.model_dir);
}

// The task model: from heads_path when it exists (its architecture wins, with a note), else new.
static void setup_taskmodel(trainer *T, const char *heads_path) {
    int C = T->m->cfg.hidden_size;
    char err[512];
    if (heads_path && access(heads_path, R_OK) == 0) {
        if (mt_taskmodel_load(&T->tm, heads_path, err, sizeof err)) mt_die("%s", err);
        if (T->tm.C != C) mt_die("%s: heads for hidden size %d, the encoder has %d", heads_path, T->tm.C, C);
        if ((int)T->tm.pair != T->o.pair_model || (int)T->tm.sent.cfg.kind != T->o.sentence_model)
            mt_log("note: %s sets the architecture: --sentence-model %s --pair-model %s", heads_path,
                   mt_sentence_kind_name(T->tm.sent.cfg.kind), mt_pair_model_name(T->tm.pair));
        T->o.pair_model = T->tm.pair, T->o.sentence_model = T->tm.sent.cfg.kind;
        T->tm.sent.cfg.cnn_dropout = T->o.dropout;
    } else {
        mt_sentence_config sc = mt_sentence_default_config((mt_sentence_kind)T->o.sentence_model, C, T->o.cnn_filters,
                                                           T->o.lstm_hidden);
        sc.cnn_dropout = T->o.dropout;
        mt_taskmodel_init(&T->tm, &sc, (mt_pair_model)T->o.pair_model, (uint64_t)T->o.seed);
    }
    mt_taskmodel_to_backend(&T->tm, T->be);
}

static void load_data(trainer *T) {
    int any = 0;
    for (int t = 0; t < K; t++) {
        if (T->o.task_path[t]) {
            mt_taskdata_load(&T->data[t], t, T->o.task_path[t], T->vocab_fp, T->o.limit);
            mt_taskdata_set_cost(&T->data[t], &T->tm);
            T->has_data[t] = any = 1;
            T->bt_pass[t] = -1;
        }
        if (T->o.dev_path[t]) {
            mt_taskdata_load(&T->dev[t], t, T->o.dev_path[t], T->vocab_fp, T->o.limit);
            mt_taskdata_set_cost(&T->dev[t], &T->tm);
            T->has_dev[t] = 1;
        }
    }
    if (!any) mt_die("no training shards: give --task sst=FILE (qqp=, sts=)");
}

static int slots_per_step(const trainer *T, int k) {
    int s = T->o.batch_size / T->o.partial_batch;
    return s > k ? s : k;
}

static void ensure_batches(trainer *T, int t) {
    if (T->bt_pass[t] == T->cur[t].pass) return;
    mt_batches_free(&T->bt[t]);
    int bs = T->pc_on ? T->o.partial_batch : T->o.batch_size;
    mt_batches_make(&T->bt[t], &T->data[t], (uint64_t)T->o.seed, (uint32_t)T->cur[t].pass, bs, T->o.batch_tokens, T->o.window);
    T->bt_pass[t] = T->cur[t].pass;
}

// Phases, steps per epoch of each, the total and the lr schedule.
static void plan(trainer *T) {
    if (T->o.n_schedule) {
        T->n_phases = T->o.n_schedule;
        for (int p = 0; p < T->n_phases; p++) {
            int t = T->o.schedule[p];
            if (!T->has_data[t]) mt_die("--schedule names %s but there is no --task %s=FILE", mt_task_name(t), mt_task_name(t));
            T->phase_task[p][0] = t, T->phase_k[p] = 1;
        }
    } else {
        T->n_phases = 1;
        for (int t = 0; t < K; t++)
            if (T->has_data[t]) T->phase_task[0][T->phase_k[0]++] = t;
    }
    T->pc_on = T->o.pcgrad && T->n_phases == 1 && T->phase_k[0] > 1;
    if (T->o.pcgrad && !T->pc_on) mt_log("note: --pcgrad needs two or more tasks trained together: plain gradients");
    T->total_steps = 0;
    for (int p = 0; p < T->n_phases; p++) {
        long most = 0;
        for (int i = 0; i < T->phase_k[p]; i++) {
            int t = T->phase_task[p][i];
            ensure_batches(T, t);
            most = T->bt[t].n_batches > most ? T->bt[t].n_batches : most;
        }
        int k = T->phase_k[p];
        T->phase_spe[p] = T->pc_on ? (most * k + slots_per_step(T, k) - 1) / slots_per_step(T, k) : most;
        T->total_steps += T->phase_spe[p] * T->o.epochs;
    }
    if (T->o.max_steps > 0 && T->o.max_steps < T->total_steps) T->total_steps = T->o.max_steps;
    long warm = T->o.warmup < 1 ? (long)(T->o.warmup * T->total_steps) : (long)T->o.warmup;
    T->sched = (mt_lr_schedule){T->o.lr_linear ? MT_LR_LINEAR : MT_LR_CONSTANT, T->o.lr, warm, T->total_steps};
}

// Floats from one encoder gradient to the next in the one-allocation gradient buffers: the
// encoder's, then the sentence model's at a 64-byte boundary (as a buffer of its own would be).
static size_t padded16(size_t n) { return (n + 15) / 16 * 16; }
static size_t grad_pair_floats(const trainer *T) { return padded16(T->n_enc) + padded16(T->n_sent); }

static void setup_optimizers(trainer *T) {
    mt_adamw_hparams hp = mt_adamw_defaults();
    hp.weight_decay = T->o.weight_decay;
    mt_bert_adamw_init(&T->opt_enc, T->m, &hp, T->o.llrd);
    T->n_enc = T->m->num_params, T->n_sent = T->tm.n_sent;
    T->n_shared = T->n_enc + T->n_sent, T->n_total = T->n_shared + T->tm.n_heads;
    // The sentence model's tensors come first (offsets from 0), then the heads' (from n_sent).
    int ns = T->tm.sent.n_tensors;
    mt_adamw_tensor *at = mt_malloc((size_t)T->tm.n_tensors * sizeof *at);
    for (int i = 0; i < T->tm.n_tensors; i++)
        at[i] = (mt_adamw_tensor){.offset = T->tm.tensors[i].offset - (i < ns ? 0 : T->n_sent),
                                  .size = T->tm.tensors[i].size, .lr_scale = 1.0, .decay = T->tm.tensors[i].decay};
    if (ns) mt_adamw_init(&T->opt_sent, T->be, &hp, at, ns, T->n_sent);  // cls, mean: none (its step is a no-op)
    mt_adamw_init(&T->opt_heads, mt_backend_cpu(), &hp, at + ns, T->tm.n_tensors - ns, T->tm.n_heads);
    free(at);
    size_t pair = grad_pair_floats(T);
    T->Genc = T->be->alloc(pair * sizeof(float));
    T->Gsent = T->Genc + padded16(T->n_enc);
    T->Gheads = mt_calloc(T->tm.n_heads, sizeof(float));
    if (T->pc_on) {
        float *P = T->be->alloc((size_t)T->phase_k[0] * pair * sizeof(float));
        for (int i = 0; i < T->phase_k[0]; i++)
            T->Penc[i] = P + i * pair, T->Psent[i] = T->Penc[i] + padded16(T->n_enc);
        mt_pcgrad_init(&T->pc, T->phase_k[0], T->n_shared, T->o.pcgrad_sum ? MT_PCGRAD_SUM : MT_PCGRAD_MEAN);
    }
}

// The most tokens of one example of d, and its longest sequence, folded into *cost, *len.
static void data_bounds(const mt_taskdata *d, int *cost, int *len) {
    for (int i = 0; i < d->n; i++) *cost = d->cost[i] > *cost ? d->cost[i] : *cost;
    *len = d->max_len > *len ? d->max_len : *len;
}

// Bounds of every encoder batch of the run. Training: a step packs one task's batches together
// (with PCGrad up to slots - k + 1 partial batches, pcgrad_counts), each at most batch_tokens
// real tokens unless one example alone is longer (mt_batches_make); evaluation: batches of 64
// dev examples. An example is at most three sequences (sentence a, b and the joint one).
static void batch_bounds(const trainer *T, int *max_tokens, int *max_examples, int *max_seqs, int *max_len) {
    int k = T->phase_k[0], slots = T->pc_on ? slots_per_step(T, k) - k + 1 : 1;
    int per = T->pc_on ? T->o.partial_batch : T->o.batch_size, cost = 0, dev_cost = 0;
    *max_len = 0;
    for (int t = 0; t < K; t++) {
        if (T->has_data[t]) data_bounds(&T->data[t], &cost, max_len);
        if (T->has_dev[t]) data_bounds(&T->dev[t], &dev_cost, max_len);
    }
    // slots (<= 4096) x --batch-tokens (<= 2^24) can pass INT_MAX: in long, then refused
    long train = (long)slots * (cost > T->o.batch_tokens ? cost : T->o.batch_tokens);
    int eval = dev_cost > T->o.batch_tokens ? dev_cost : T->o.batch_tokens;
    if (train > INT_MAX)
        mt_die("a step packs up to %ld tokens (%d partial batches of --batch-tokens %d): beyond what a pass can "
               "hold (INT_MAX); lower --batch-tokens or --batch-size", train, slots, T->o.batch_tokens);
    *max_tokens = train > eval ? (int)train : eval;
    *max_examples = slots * per > 64 ? slots * per : 64;
    *max_seqs = 3 * *max_examples;
}

// The run's memory plan against the device and --max-memory, before the optimizer's and the
// activations' allocations (the parameters are loaded already: counted as available).
static void check_memory(trainer *T, int max_tokens, int max_examples, int max_seqs, int max_len) {
    mt_mem_plan p;
    int tasks = T->pc_on ? T->phase_k[0] : 0;
    // the sentence model's activations hold 2 sequences per example (mt_tm_acts_reserve)
    size_t operands = mt_sentence_operand_floats(&T->tm.sent, max_tokens, 2 * max_examples);
    mt_mem_run r = {max_tokens, max_seqs, max_len, 1, 1, tasks, operands, 0, T->tm.n_sent};
    mt_mem_plan_encoder(&p, &T->m->cfg, T->be, &r);
    mt_mem_plan_taskmodel(&p, &T->tm, T->be, &r, max_examples);
    char lower[256];
    snprintf(lower, sizeof lower, "lower --batch-tokens (now %d), --batch-size (now %d)%s or the longest sequence "
             "(now %d tokens: tokenize with a smaller --max-len)", T->o.batch_tokens, T->o.batch_size,
             T->pc_on ? ", --partial-batch" : "", max_len);
    mt_mem_plan_check(&p, T->be, mt_max_memory(T->o.max_memory), 0, lower,
                      (T->m->num_params + T->tm.n_sent) * sizeof(float));
}

// Everything but the run's progress counters: encoder from enc_dir, heads from heads_path.
static void setup(trainer *T, const char *enc_dir, const char *heads_path) {
    char err[512], path[4096];
    snprintf(path, sizeof path, "%s/vocab.txt", T->o.model_dir);
    if (access(path, R_OK) != 0) mt_die("--model %s: no vocab.txt", T->o.model_dir);
    mt_file_fingerprint(path, T->vocab_fp);
    if (strcmp(enc_dir, T->o.model_dir) != 0) check_init_dir(T, enc_dir);
    T->be = mt_backend_select(T->o.device);
    mt_backend_require_training(T->be, "pcgrad-train");
    mt_backend_set_precision(T->be, T->o.precision);
    if (mt_loss_scaler_init(&T->ls, T->o.loss_scale, T->o.loss_scale_init, mt_backend_precision(T->be), err, sizeof err))
        mt_die("%s", err);
    T->m = mt_bert_load(enc_dir, T->be, err, sizeof err);
    if (!T->m) mt_die("%s", err);
    if (T->o.threads > 0) mt_bert_set_threads(T->m, T->o.threads);
    setup_taskmodel(T, heads_path);
    load_data(T);
    plan(T);
    int max_tokens, max_examples, max_seqs, max_len;
    batch_bounds(T, &max_tokens, &max_examples, &max_seqs, &max_len);
    check_memory(T, max_tokens, max_examples, max_seqs, max_len);
    setup_optimizers(T);
    mt_bert_reserve(T->m, max_tokens, max_seqs, max_len, 1, 0);
    // PCGrad and clipping take grams of the sentence model's segment too, which may be the
    // larger (a big --lstm-hidden): the scratch grows to it (max_tokens: CUDA sizes its sort
    // storage by it, as for the encoder's shape)
    T->be->reserve(&(mt_workspace_shape){.max_tokens = max_tokens, .training = 1, .gram_n = T->tm.n_sent});
    mt_tm_acts_reserve(&T->tm, &T->acts, max_examples, max_tokens);
}

// ---- one step ------------------------------------------------------------------------------------

// The next batch of task t (advancing its cursor), appended to ex_buf at *B.
static void take_batch(trainer *T, int t, int *B) {
    ensure_batches(T, t);
    if (T->cur[t].batch >= T->bt[t].n_batches) {
        T->cur[t].pass++, T->cur[t].batch = 0;
        ensure_batches(T, t);
    }
    const mt_batches *bt = &T->bt[t];
    long b = T->cur[t].batch++;
    int n = bt->first[b + 1] - bt->first[b];
    if (*B + n > T->ex_cap) T->ex_cap = 2 * (*B + n), T->ex_buf = mt_realloc(T->ex_buf, (size_t)T->ex_cap * sizeof(int32_t));
    memcpy(T->ex_buf + *B, bt->order + bt->first[b], (size_t)n * sizeof(int32_t));
    *B += n;
}

// Forward and backward of task t on ex_buf[0..B): encoder gradient into enc, the sentence
// model's into sent, the head's into heads. Returns the loss.
static double run_task(trainer *T, int t, int B, float *enc, float *sent, float *heads) {
    mt_pack(&T->pk, &T->data[t], &T->tm, T->ex_buf, B);
    mt_bert_dropout bd = {T->o.dropout, (uint64_t)T->o.seed, (uint32_t)T->step, (uint32_t)t};
    const float *h = mt_bert_forward_train(T->m, T->pk.ids, T->pk.types, T->pk.offsets, T->pk.nseq, &bd);  // be memory
    if (!h) mt_die("%s: %s", T->data[t].path, mt_bert_error(T->m));
    mt_tm_dropout td = {T->o.dropout, (uint64_t)T->o.seed, (uint32_t)T->step, (uint32_t)t};
    double loss = mt_taskmodel_forward(&T->tm, &T->acts, t, h, T->pk.offsets, B, T->pk.labels, &td);
    if (T->o.fail_at_step && T->step + 1 == T->o.fail_at_step) loss = NAN;
    if (!isfinite(loss)) return loss;
    float *dhidden = mt_bert_dhidden(T->m);  // [N, C] be memory, reserved with the encoder
    mt_taskmodel_backward(&T->tm, &T->acts, dhidden, sent, heads, T->ls.scale);
    mt_bert_backward(T->m, dhidden, enc);
    T->ex_done += B, T->tok_done += T->pk.N;
    return loss;
}

_Noreturn static void die_nan(trainer *T, int t) {
    char last[4200], where[4300];
    snprintf(last, sizeof last, "%s/last", T->o.out_dir);
    if (access(last, F_OK) == 0) snprintf(where, sizeof where, "the last good checkpoint is %s", last);
    else snprintf(where, sizeof where, "no checkpoint was written yet");
    mt_die("%s loss is not finite (NaN/inf) at step %ld: stopping; %s (try a lower --lr or --clip 1)",
           mt_task_name(t), T->step + 1, where);
}

// Partial batches of each task this step: one each, the rest drawn with replacement.
static void pcgrad_counts(const trainer *T, int k, int *count) {
    for (int i = 0; i < k; i++) count[i] = 1;
    mt_rng r;
    mt_rng_init(&r, (uint64_t)T->o.seed, (uint32_t)T->step, MT_SITE_TASK_SAMPLE);
    for (int s = k; s < slots_per_step(T, k); s++) count[mt_rng_below(&r, (uint32_t)k)]++;
}

// The step's gradient; returns 1 when a task's loss was not finite and loss scaling skips the
// step (lossscale.h; the other tasks still take their batches, as torch's loop would).
static int compute_gradient(trainer *T) {
    int p = T->phase, k = T->phase_k[p], count[K], skip = 0;
    // With PCGrad the shared parts (encoder, sentence model) are written whole by its combine
    // pass; only what the tasks accumulate into directly needs clearing.
    // (every task's Penc, Psent at once: each is written by its own task's pass alone)
    T->be->zero(T->pc_on ? T->Penc[0] : T->Genc, (size_t)(T->pc_on ? k : 1) * grad_pair_floats(T) * sizeof(float));
    memset(T->Gheads, 0, T->tm.n_heads * sizeof(float));
    if (T->pc_on) pcgrad_counts(T, k, count);
    for (int i = 0; i < k; i++) {
        int t = T->phase_task[p][i], B = 0;
        for (int c = 0; c < (T->pc_on ? count[i] : 1); c++) take_batch(T, t, &B);
        float *enc = T->pc_on ? T->Penc[i] : T->Genc, *sent = T->pc_on ? T->Psent[i] : T->Gsent;
        double loss = run_task(T, t, B, enc, sent, T->Gheads);
        if (!isfinite(loss)) {
            char what[32];
            snprintf(what, sizeof what, "%s loss", mt_task_name(t));
            if (!skip && mt_loss_scaler_skip_loss(&T->ls, what, loss, T->step + 1)) die_nan(T, t);
            skip = 1;
            continue;
        }
        T->last_loss[t] = loss, T->loss_sum[t] += loss, T->loss_n[t]++;
    }
    if (T->pc_on && !skip) {
        mt_rng r;
        mt_rng_init(&r, (uint64_t)T->o.seed, (uint32_t)T->step, MT_SITE_PCGRAD);
        T->pc.grad_scale = T->ls.scale;
        mt_pcgrad_segment seg[2] = {{T->be, (const float *const *)T->Penc, T->Genc, T->n_enc},
                                    {T->be, (const float *const *)T->Psent, T->Gsent, T->n_sent}};
        mt_pcgrad_step_segments(&T->pc, seg, 2, &r);
    }
    return skip;
}

static void train_step(trainer *T) {
    for (int t = 0; t < K; t++) T->last_loss[t] = NAN;
    T->loss_skipped = compute_gradient(T);
    mt_grad_segment seg[3] = {{T->be, T->Genc, T->n_enc}, {T->be, T->Gsent, T->n_sent},
                              {mt_backend_cpu(), T->Gheads, T->tm.n_heads}};
    double norm = NAN;  // a step skipped for its loss has no gradient to measure
    if (!T->loss_skipped) {
        norm = mt_loss_scaler_unscale_clip(&T->ls, seg, 3, T->o.clip);
        if (mt_loss_scaler_update(&T->ls, norm, T->step + 1)) {  // else skipped: lossscale.h
            double lr = mt_lr_at(&T->sched, T->step);
            mt_adamw_step(&T->opt_enc, T->m->params, T->Genc, lr);
            mt_adamw_step(&T->opt_sent, T->tm.sent_params, T->Gsent, lr);
            mt_adamw_step(&T->opt_heads, T->tm.params + T->n_sent, T->Gheads, lr);
        } else if (T->ls.mode == MT_LOSS_SCALE_NONE) {
            die_nan(T, T->phase_task[T->phase][0]);
        }
    }
    T->last_norm = norm;
    T->step++, T->steps_done++;
}

// ---- evaluation ------------------------------------------------------------------------------------

// Dev metric of task t: sst / qqp accuracy, sts Pearson r.
static double evaluate_task(trainer *T, int t) {
    mt_taskdata *d = &T->dev[t];
    mt_batches bt;
    mt_batches_make(&bt, d, 0, 0, 64, T->o.batch_tokens, 1 << 30);
    double *pred = mt_malloc((size_t)d->n * sizeof(double)), *gold = mt_malloc((size_t)d->n * sizeof(double));
    long correct = 0;
    for (int b = 0; b < bt.n_batches; b++) {
        const int32_t *ex = bt.order + bt.first[b];
        int B = bt.first[b + 1] - bt.first[b];
        mt_pack(&T->pk, d, &T->tm, ex, B);
        const float *h = mt_bert_forward_train(T->m, T->pk.ids, T->pk.types, T->pk.offsets, T->pk.nseq, NULL);
        if (!h) mt_die("%s: %s", d->path, mt_bert_error(T->m));
        mt_taskmodel_forward(&T->tm, &T->acts, t, h, T->pk.offsets, B, NULL, NULL);
        for (int i = 0; i < B; i++) {
            const float *o = T->acts.out + (t == MT_TASK_SST ? i * MT_SST_CLASSES : i);
            int arg = 0;
            for (int k = 1; t == MT_TASK_SST && k < MT_SST_CLASSES; k++) arg = o[k] > o[arg] ? k : arg;
            double y = d->label[ex[i]];
            correct += t == MT_TASK_SST ? arg == (int)y : t == MT_TASK_QQP ? (o[0] > 0.5f) == (y > 0.5) : 0;
            pred[bt.first[b] + i] = o[0], gold[bt.first[b] + i] = y;
        }
    }
    double r = t == MT_TASK_STS ? mt_pearson(pred, gold, d->n) : 0.0;  // NAN when constant: scored 0
    double score = t == MT_TASK_STS ? (isnan(r) ? 0.0 : r) : (double)correct / d->n;
    free(pred), free(gold);
    mt_batches_free(&bt);
    return score;
}

// Overall = mean over the dev tasks of sst acc, qqp acc, (sts r + 1) / 2 (DESIGN.md §1 when all
// three are there). NaN without dev shards.
static double evaluate(trainer *T, double score[K]) {
    double sum = 0;
    int n = 0;
    for (int t = 0; t < K; t++) {
        score[t] = NAN;
        if (!T->has_dev[t]) continue;
        score[t] = evaluate_task(T, t);
        sum += t == MT_TASK_STS ? (score[t] + 1) / 2 : score[t], n++;
    }
    return n ? sum / n : NAN;
}

// ---- checkpoints ---------------------------------------------------------------------------------

// x[n] (be memory) readable on the host: x itself for host memory, else a malloc'ed copy.
static float *host_view(const mt_backend *be, float *x, size_t n) {
    if (be->host_memory) return x;
    float *h = mt_malloc(n * sizeof(float));
    be->copy_to_host(h, x, n * sizeof(float));
    return h;
}

// The task model's moments [n_params] as the state file keeps them (one tensor in the task
// model's layout): the sentence model's (be memory), then the heads' (host). Malloc'ed.
static float *tm_moments(const trainer *T, const float *sent, const float *heads) {
    float *h = mt_malloc(T->tm.n_params * sizeof(float));
    if (T->n_sent) T->be->copy_to_host(h, sent, T->n_sent * sizeof(float));
    memcpy(h + T->n_sent, heads, T->tm.n_heads * sizeof(float));
    return h;
}

static void write_state(trainer *T, const char *path) {
    char *opts = options_text(&T->o), nums[8][64], cur[K][48], ls[96];
    snprintf(nums[0], 64, "%ld", T->step);
    snprintf(nums[1], 64, "%d", T->phase);
    snprintf(nums[2], 64, "%d", T->epoch);
    snprintf(nums[3], 64, "%ld", T->step_in_epoch);
    snprintf(nums[4], 64, "%.17g", T->best);
    snprintf(nums[5], 64, "%ld", T->best_step);
    snprintf(nums[6], 64, "%ld", T->opt_enc.step);
    for (int t = 0; t < K; t++) snprintf(cur[t], 48, "%ld,%ld", T->cur[t].pass, T->cur[t].batch);
    mt_loss_scaler_format(&T->ls, ls, sizeof ls);
    const char *meta[] = {"options", opts, "step", nums[0], "phase", nums[1], "epoch", nums[2], "step_in_epoch", nums[3],
                          "best", nums[4], "best_step", nums[5], "adamw_step", nums[6], "cursor.sst", cur[0],
                          "cursor.qqp", cur[1], "cursor.sts", cur[2], "loss_scale", ls, NULL};
    int64_t ne = (int64_t)T->n_enc, nt = (int64_t)T->tm.n_params;
    float *em = host_view(T->be, T->opt_enc.m, T->n_enc), *ev = host_view(T->be, T->opt_enc.v, T->n_enc);
    float *tm_m = tm_moments(T, T->opt_sent.m, T->opt_heads.m), *tm_v = tm_moments(T, T->opt_sent.v, T->opt_heads.v);
    mt_st_write_tensor ts[4] = {{"adamw.encoder.m", 1, {ne}, em}, {"adamw.encoder.v", 1, {ne}, ev},
                                {"adamw.heads.m", 1, {nt}, tm_m}, {"adamw.heads.v", 1, {nt}, tm_v}};
    char err[512];
    if (mt_safetensors_write_meta(path, ts, 4, meta, err, sizeof err)) mt_die("%s", err);
    if (em != T->opt_enc.m) free(em), free(ev);
    free(tm_m), free(tm_v), free(opts);
}

// OUTDIR/name: model.safetensors, config.json, heads.safetensors, vocab.txt (+ state.safetensors).
static void save_checkpoint(trainer *T, const char *name, int with_state) {
    char final[4096], path[4200], src[4096], err[512];
    snprintf(final, sizeof final, "%s/%s", T->o.out_dir, name);
    char *tmp = mt_ckpt_tmpdir(final);
    if (mt_bert_save(T->m, tmp, err, sizeof err)) mt_die("%s", err);
    mt_taskmodel_sync_host(&T->tm);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    mt_file_fingerprint(path, T->tm.model_fp);
    snprintf(path, sizeof path, "%s/heads.safetensors", tmp);
    if (mt_taskmodel_save(&T->tm, path, err, sizeof err)) mt_die("%s", err);
    snprintf(src, sizeof src, "%s/vocab.txt", T->o.model_dir);
    snprintf(path, sizeof path, "%s/vocab.txt", tmp);
    if (mt_copy_file(src, path, err, sizeof err)) mt_die("%s", err);
    if (with_state) {
        snprintf(path, sizeof path, "%s/state.safetensors", tmp);
        write_state(T, path);
    }
    if (mt_ckpt_commit(tmp, final, err, sizeof err)) mt_die("%s", err);
    free(tmp);
}

static long meta_long(const mt_safetensors *st, const char *key) {
    char v[64];
    if (!mt_safetensors_meta(st, key, v, sizeof v)) mt_die("%s: no '%s' in the training state", st->path, key);
    return atol(v);
}

// The state's tensor `name` of n floats (host memory, in the file's mapping: maybe unaligned).
static const unsigned char *state_tensor(const mt_safetensors *st, const char *name, size_t n) {
    const mt_st_tensor *t = mt_safetensors_find(st, name);
    if (!t || t->dtype != MT_ST_F32 || (size_t)t->numel != n)
        mt_die("%s: '%s' missing or not %zu floats (state of another model?)", st->path, name, n);
    return t->data;
}

// dst[n]: be memory (state files are host format, so a run resumes on any device).
static void restore_moments(const mt_safetensors *st, const char *name, const mt_backend *be, float *dst, size_t n) {
    be->copy_to_device(dst, state_tensor(st, name, n), n * sizeof(float));
}

// The task model's moments (tm_moments' layout) into the sentence model's (be) and the heads'.
static void restore_tm_moments(trainer *T, const mt_safetensors *st, const char *name, float *sent, float *heads) {
    const unsigned char *src = state_tensor(st, name, T->tm.n_params);
    if (T->n_sent) T->be->copy_to_device(sent, src, T->n_sent * sizeof(float));
    memcpy(heads, src + T->n_sent * sizeof(float), T->tm.n_heads * sizeof(float));
}

static void restore_state(trainer *T, const mt_safetensors *st) {
    char v[64];
    T->step = meta_long(st, "step"), T->phase = (int)meta_long(st, "phase"), T->epoch = (int)meta_long(st, "epoch");
    T->step_in_epoch = meta_long(st, "step_in_epoch"), T->best_step = meta_long(st, "best_step");
    T->best = mt_safetensors_meta(st, "best", v, sizeof v) ? strtod(v, NULL) : -INFINITY;
    T->opt_enc.step = T->opt_sent.step = T->opt_heads.step = meta_long(st, "adamw_step");
    for (int t = 0; t < K; t++) {
        char key[32];
        snprintf(key, sizeof key, "cursor.%s", mt_task_name(t));
        if (!mt_safetensors_meta(st, key, v, sizeof v) || sscanf(v, "%ld,%ld", &T->cur[t].pass, &T->cur[t].batch) != 2)
            mt_die("%s: bad %s", st->path, key);
    }
    // the run's scaler, unless this process was given --loss-scale (a state from before loss
    // scaling has none: setup's default for the precision stays)
    if (!T->o.loss_scale && mt_safetensors_meta(st, "loss_scale", v, sizeof v) && mt_loss_scaler_parse(&T->ls, v))
        mt_die("%s: bad loss_scale '%s'", st->path, v);
    restore_moments(st, "adamw.encoder.m", T->be, T->opt_enc.m, T->n_enc);
    restore_moments(st, "adamw.encoder.v", T->be, T->opt_enc.v, T->n_enc);
    restore_tm_moments(T, st, "adamw.heads.m", T->opt_sent.m, T->opt_heads.m);
    restore_tm_moments(T, st, "adamw.heads.v", T->opt_sent.v, T->opt_heads.v);
}

// ---- logs and progress ------------------------------------------------------------------------------

// Keeps the header and the rows whose first field (the step) is <= step: a resumed run
// rewrites what the killed one logged after its last checkpoint.
static void truncate_log(const char *path, long step) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *buf = NULL, *line = NULL;
    size_t len = 0, cap = 0;
    FILE *out = open_memstream(&buf, &len);
    int first = 1;
    while (getline(&line, &cap, f) > 0) {
        if (first || atol(line) <= step) fputs(line, out);
        first = 0;
    }
    fclose(f), fclose(out), free(line);
    f = fopen(path, "w");
    if (f) fwrite(buf, 1, len, f), fclose(f);
    free(buf);
}

static FILE *open_log(const char *dir, const char *name, const char *header) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int exists = access(path, F_OK) == 0;
    FILE *f = fopen(path, "a");
    if (!f) mt_die("cannot write %s: %s", path, strerror(errno));
    if (!exists) fputs(header, f), fflush(f);
    return f;
}

static void fmt_value(FILE *f, double v) {
    if (isnan(v)) fputs("\tNA", f);
    else fprintf(f, "\t%.6g", v);
}

static void log_step(trainer *T) {
    FILE *f = T->log;
    fprintf(f, "%ld\t%d\t%d\t%.6g", T->step, T->phase, T->epoch + 1, mt_lr_at(&T->sched, T->step - 1));
    for (int t = 0; t < K; t++) fmt_value(f, T->last_loss[t]);
    fmt_value(f, T->last_norm);
    const mt_pcgrad *pc = &T->pc;
    int pc_on = T->pc_on && !T->loss_skipped;
    for (int i = 0; i < K; i++)
        for (int j = i + 1; j < K; j++) fmt_value(f, pc_on && j < pc->k ? pc->cosine[i * pc->k + j] : NAN);
    int conflicts = 0;
    double removed = 0;
    for (int i = 0; pc_on && i < pc->k; i++) {
        removed += pc->removed[i];
        for (int j = i + 1; j < pc->k; j++) conflicts += pc->conflict[i * pc->k + j];
    }
    fmt_value(f, pc_on ? conflicts : NAN);
    fmt_value(f, pc_on ? removed : NAN);
    fputc('\n', f);
    fflush(f);
}

static void print_progress(trainer *T, int force) {
    double now = mt_now();
    long pending = 0;
    for (int t = 0; t < K; t++) pending += T->loss_n[t];
    if (mt_quiet || !pending || (!force && now - T->last_print < 5.0)) return;
    T->last_print = now;
    double el = now - T->t0, rate = T->steps_done / (el > 0 ? el : 1e-9);
    long left = T->total_steps - T->step;
    double eta = rate > 0 ? left / rate : 0;
    fprintf(stderr, "%s: step %ld/%ld phase %d epoch %d/%d | loss", mt_prog, T->step, T->total_steps, T->phase + 1,
            T->epoch + 1, T->o.epochs);
    for (int t = 0; t < K; t++)
        if (T->loss_n[t]) fprintf(stderr, " %s %.4f", mt_task_name(t), T->loss_sum[t] / T->loss_n[t]);
    fprintf(stderr, " | %.1f ex/s %.0f tok/s | ETA %ld:%02ld:%02ld\n", T->ex_done / el, T->tok_done / el,
            (long)eta / 3600, (long)eta / 60 % 60, (long)eta % 60);
    for (int t = 0; t < K; t++) T->loss_sum[t] = 0, T->loss_n[t] = 0;
}


// After the last step of an epoch (or of the run): dev scores, best checkpoint, telemetry.
static void end_epoch(trainer *T) {
    print_progress(T, 1);
    double score[K], overall = evaluate(T, score);
    const char *names[K];
    for (int i = 0; i < T->phase_k[0]; i++) names[i] = mt_task_name(T->phase_task[0][i]);
    if (T->pc_on && !mt_quiet) mt_pcgrad_print_summary(&T->pc, names, stderr);
    fprintf(T->devlog, "%ld\t%d\t%d", T->step, T->phase + 1, T->epoch + 1);
    for (int t = 0; t < K; t++) fmt_value(T->devlog, score[t]);
    fmt_value(T->devlog, overall);
    fputc('\n', T->devlog), fflush(T->devlog);
    int better = !isnan(overall) && overall > T->best;
    if (!isnan(overall))
        mt_log("dev after step %ld (phase %d epoch %d): sst %.4f qqp %.4f sts %.4f overall %.4f%s", T->step, T->phase + 1,
               T->epoch + 1, score[0], score[1], score[2], overall, better ? " (best so far)" : "");
    if (better) {
        T->best = overall, T->best_step = T->step;
        save_checkpoint(T, "best", 0);
    }
}

// ---- the loop -----------------------------------------------------------------------------------------

static void advance_epoch(trainer *T) {
    T->step_in_epoch = 0;
    if (++T->epoch == T->o.epochs) T->epoch = 0, T->phase++;
}

static int run(trainer *T) {
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    T->log = open_log(T->o.out_dir, "train.log",
                      "step\tphase\tepoch\tlr\tloss_sst\tloss_qqp\tloss_sts\tgrad_norm\tcos_sst_qqp\tcos_sst_sts\t"
                      "cos_qqp_sts\tconflicts\tnorm_removed\n");
    T->devlog = open_log(T->o.out_dir, "dev.tsv", "step\tphase\tepoch\tsst_acc\tqqp_acc\tsts_r\toverall\n");
    T->t0 = T->last_print = mt_now();
    mt_log("%ld steps (%d phase%s, %d epochs), %s, %zu encoder + %zu task-model parameters%s", T->total_steps, T->n_phases,
           T->n_phases > 1 ? "s" : "", T->o.epochs, T->pc_on ? "PCGrad" : "summed task gradients", T->n_enc,
           T->tm.n_params, T->step ? " (resumed)" : "");
    if (T->ls.mode != MT_LOSS_SCALE_NONE)
        mt_log("loss scaling: %s, scale %g", mt_loss_scale_mode_name(T->ls.mode), (double)T->ls.scale);
    int status = 0;
    while (T->phase < T->n_phases && T->step < T->total_steps) {
        train_step(T);
        T->step_in_epoch++;
        log_step(T);
        print_progress(T, 0);
        int epoch_end = T->step_in_epoch >= T->phase_spe[T->phase], done = T->step >= T->total_steps;
        if (epoch_end || done) end_epoch(T);
        if (epoch_end) advance_epoch(T);
        int stop = T->o.stop_after_steps && T->step >= T->o.stop_after_steps && !done;
        if (epoch_end || done || stop || stop_signal) save_checkpoint(T, "last", 1);
        if (stop) { mt_log("stopped after step %ld as asked; continue with --resume %s", T->step, T->o.out_dir); break; }
        if (stop_signal) { mt_log("signal %d: saved %s/last at step %ld", (int)stop_signal, T->o.out_dir, T->step); status = 128 + stop_signal; break; }
    }
    if (T->ls.mode != MT_LOSS_SCALE_NONE && !stop_signal)
        mt_log("loss scaling: %s, scale %g after step %ld; %ld steps skipped (loss or gradient not finite)",
               mt_loss_scale_mode_name(T->ls.mode), (double)T->ls.scale, T->step, T->ls.skipped);
    if (T->step >= T->total_steps && T->best_step)
        mt_log("done: %ld steps; best dev overall %.4f at step %ld (%s/best)", T->step, T->best, T->best_step, T->o.out_dir);
    else if (T->step >= T->total_steps)
        mt_log("done: %ld steps; no dev shards, so no best/: the weights are in %s/last", T->step, T->o.out_dir);
    fclose(T->log), fclose(T->devlog);
    return status;
}

static void trainer_free(trainer *T) {
    mt_taskmodel_free(&T->tm);
    for (int t = 0; t < K; t++) {
        if (T->has_data[t]) mt_taskdata_free(&T->data[t]);
        if (T->has_dev[t]) mt_taskdata_free(&T->dev[t]);
        mt_batches_free(&T->bt[t]);
    }
    if (T->Penc[0]) T->be->free(T->Penc[0]);  // every task's, one allocation
    if (T->pc_on) mt_pcgrad_free(&T->pc);
    mt_adamw_free(&T->opt_enc), mt_adamw_free(&T->opt_sent), mt_adamw_free(&T->opt_heads);
    mt_packed_free(&T->pk);
    mt_tm_acts_free(&T->acts);
    if (T->Genc) T->be->free(T->Genc);  // and Gsent
    free(T->Gheads), free(T->ex_buf);
    mt_bert_free(T->m);
}

int mt_train(mt_train_options *o) {
    if (!o->model_dir || !o->out_dir) mt_die("--model DIR and -o OUTDIR are required");
    if (o->batch_size % o->partial_batch) mt_log("note: --batch-size %d is not a multiple of --partial-batch %d", o->batch_size, o->partial_batch);
    char path[4096];
    snprintf(path, sizeof path, "%s/last", o->out_dir);
    if (access(path, F_OK) == 0) mt_die("%s already holds a run: continue it with --resume %s, or use another -o", o->out_dir, o->out_dir);
    trainer *T = mt_calloc(1, sizeof *T);
    T->o = *o;
    T->best = -INFINITY;
    char heads[4096];
    snprintf(heads, sizeof heads, "%s/heads.safetensors", o->init_dir ? o->init_dir : "");
    setup(T, o->init_dir ? o->init_dir : o->model_dir, o->init_dir ? heads : NULL);
    char mkerr[4300];  // after setup: a run refused there (e.g. by the memory plan) leaves nothing
    if (mt_mkdirs(o->out_dir, mkerr, sizeof mkerr) != 0) mt_die("%s", mkerr);
    int rc = run(T);
    trainer_free(T);
    free(T);
    return rc;
}

int mt_train_resume(const char *dir, mt_train_options *o) {
    char path[4096], err[512], heads[4096], last[4096];
    snprintf(last, sizeof last, "%s/last", dir);
    snprintf(path, sizeof path, "%.4000s/state.safetensors", last);
    mt_safetensors st;
    if (mt_safetensors_open(&st, path, err, sizeof err))
        mt_die("--resume %s: not a pcgrad-train run to continue (%s)", dir, err);
    char *opts = mt_malloc(1 << 16);
    if (!mt_safetensors_meta(&st, "options", opts, 1 << 16)) mt_die("%s: no options in the training state", path);
    trainer *T = mt_calloc(1, sizeof *T);
    mt_train_defaults(&T->o);
    options_parse(&T->o, opts, path);
    T->o.out_dir = mt_strdup(dir);
    T->o.stop_after_steps = o->stop_after_steps, T->o.fail_at_step = o->fail_at_step;
    T->o.threads = o->threads, T->o.device = o->device, T->o.precision = o->precision;
    T->o.loss_scale = o->loss_scale, T->o.loss_scale_init = o->loss_scale_init;
    T->o.max_memory = o->max_memory;
    snprintf(heads, sizeof heads, "%.4000s/heads.safetensors", last);
    setup(T, last, heads);
    restore_state(T, &st);
    mt_safetensors_close(&st);
    free(opts);
    snprintf(path, sizeof path, "%s/train.log", dir);
    truncate_log(path, T->step);
    snprintf(path, sizeof path, "%s/dev.tsv", dir);
    truncate_log(path, T->step);
    int rc = run(T);
    trainer_free(T);
    mt_train_options_free(&T->o);
    free(T);
    return rc;
}
