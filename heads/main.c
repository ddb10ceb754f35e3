// heads — task predictions from sentence embeddings, and fitting heads on frozen embeddings.
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "device.h"
#include "heads.h"
#include "taskmodel.h"
#include "stream.h"

#define PRODUCER "heads 0.1"

static const char *USAGE =
    "usage: heads [--task sst|qqp|sts] (--head FILE | --zero-shot) [-o OUT] [STREAM]\n"
    "       heads --task sst|qqp|sts --model CKPT [-o OUT] [STREAM]\n"
    "       heads fit --task sst|qqp|sts -o HEAD.safetensors [fit options] [STREAM]\n"
    "\n"
    "Reads an embedding stream (from 'embed'; default stdin) and writes a prediction stream\n"
    "keyed by the same ids, labels carried through: sst 'probs' f32[5] + 'pred' (argmax);\n"
    "qqp 'prob' f32[1] + 'pred' (0/1); sts 'score' f32[1] in 0..5 + 'pred' (the same).\n"
    "'heads fit' (or --fit) trains a head on the stream's embeddings and gold labels:\n"
    "softmax regression (sst), logistic regression (qqp) or linear regression (sts), with\n"
    "standardised features, L2 penalty, minibatch Adam, and early stopping on a held-out\n"
    "part of the input; it logs train and held-out metrics and writes the head (safetensors).\n"
    "\n"
    "predict options:\n"
    "  --head FILE        a head written by 'heads fit'; its task, features and the encoder\n"
    "                     fingerprint (model_fp) and pooling must match the stream\n"
    "  --zero-shot        sts without a head: score = 5 * clamp(cos(emb_a, emb_b), 0, 1)\n"
    "  --model CKPT       the task heads trained with the encoder by pcgrad-train\n"
    "                     (CKPT/heads.safetensors); the stream must come from\n"
    "                     'embed --model CKPT' with the pooling the heads were trained on\n"
    "  --task T           sst, qqp or sts (with --head: checked against the head's task)\n"
    "  -o, --output FILE  prediction stream (default stdout; written atomically)\n"
    "  --batch N          records per matrix product (default 4096)\n"
    "\n"
    "fit options:\n"
    "  --task T           required\n"
    "  -o, --output FILE  the head file (required; written atomically)\n"
    "  --features SPEC    comma list of emb, pair, cos, cls: emb = emb_a; pair = [u; v; |u-v|;\n"
    "                     u*v] of emb_a, emb_b; cos = cos(u, v); cls = cls_ab (cross-encoder).\n"
    "                     default: sst emb, qqp pair, sts pair,cos\n"
    "  --holdout F        fraction held out for early stopping (default 0.1; 0: none)\n"
    "  --seed S           held-out split and shuffling (default 1)\n"
    "  --l2 X             L2 penalty on the (standardised) weights (default 0.1)\n"
    "  --lr X             Adam learning rate (default 1e-3)\n"
    "  --epochs N         at most N epochs (default 100)\n"
    "  --patience N       stop after N epochs without a better held-out loss (default 5)\n"
    "  --batch N          minibatch size (default 64)\n"
    "\n"
    "both:\n"
    "  -d, --device DEV   cpu | cuda | auto (default cpu): where the matrix products run, the\n"
    "                     logits of many records at once; in fit each minibatch's logits and\n"
    "                     gradient and each epoch's held-out loss (losses and Adam stay on the\n"
    "                     host). A head is small (SST, 8,544 x 384 features: 10 ms an epoch on\n"
    "                     one CPU core), too little for a GPU to repay its start-up and the\n"
    "                     copies of every minibatch, and cpu gives the same head on every\n"
    "                     machine. auto takes a GPU when present and says so on stderr; cuda\n"
    "                     without one is an error. Products are fp32 on every device\n"
    "  -v, --verbose      log every epoch;  -q, --quiet  no log lines;  -h, --help  this text\n"
    "\n"
    MT_DEVICE_ENV_HELP
    "\n"
    "examples:\n"
    "  set -o pipefail; mkdir -p runs\n"
    "  bin/tokenize --model models/all-MiniLM-L6-v2 --pair sentence1,sentence2 --label similarity \\\n"
    "      data/sts-train.tsv | bin/embed --model models/all-MiniLM-L6-v2 --pool mean \\\n"
    "      | bin/heads --task sts --zero-shot | bin/evaluate\n"
    "  bin/heads fit --task sst -o runs/sst.head.safetensors runs/sst-train.emb\n"
    "  bin/heads --head runs/sst.head.safetensors runs/sst-val.emb > runs/sst-val.pred\n"
    "  bin/heads fit --device cuda --task qqp -o runs/qqp.head.safetensors runs/qqp-train.emb\n"
    "  bin/evaluate runs/sst-val.pred runs/qqp-val.pred runs/sts-val.pred\n";

typedef struct {
    int fit, zero_shot, have_task;
    mt_task task;
    const char *head_path, *out_path, *in_path, *features, *model_dir, *device;
    int batch, have_batch;  // --batch: minibatch (fit) or records per product (predict)
    mt_fit_opts fit_opts;
} options;

static mt_task parse_task(const char *s) {
    mt_task t;
    if (mt_task_parse(s, &t)) mt_die("option --task: '%s' is not sst, qqp or sts", s);
    return t;
}

static void parse_args(int argc, char **argv, options *o) {
    enum { O_TASK = 256, O_HEAD, O_MODEL, O_ZERO, O_FIT, O_FEAT, O_HOLD, O_SEED, O_L2, O_LR, O_EP, O_PAT, O_BATCH };
    static const struct option opts[] = {
        {"task", required_argument, 0, O_TASK}, {"head", required_argument, 0, O_HEAD},
        {"model", required_argument, 0, O_MODEL},
        {"zero-shot", no_argument, 0, O_ZERO},  {"fit", no_argument, 0, O_FIT},
        {"features", required_argument, 0, O_FEAT}, {"holdout", required_argument, 0, O_HOLD},
        {"seed", required_argument, 0, O_SEED}, {"l2", required_argument, 0, O_L2},
        {"lr", required_argument, 0, O_LR},     {"epochs", required_argument, 0, O_EP},
        {"patience", required_argument, 0, O_PAT}, {"batch", required_argument, 0, O_BATCH},
        {"output", required_argument, 0, 'o'},  {"verbose", no_argument, 0, 'v'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {"device", required_argument, 0, 'd'},
        {0, 0, 0, 0}};
    mt_fit_opts *f = &o->fit_opts;
    mt_fit_opts_default(f);
    o->device = "cpu";
    o->batch = 4096;
    if (argc > 1 && strcmp(argv[1], "fit") == 0) o->fit = 1, argv[1] = argv[0], argv++, argc--;
    int c;
    while ((c = getopt_long(argc, argv, "o:d:vqh", opts, NULL)) != -1) {
        switch (c) {
        case O_TASK: o->task = parse_task(optarg), o->have_task = 1; break;
        case O_HEAD: o->head_path = optarg; break;
        case O_MODEL: o->model_dir = optarg; break;
        case O_ZERO: o->zero_shot = 1; break;
        case O_FIT: o->fit = 1; break;
        case O_FEAT: o->features = optarg; break;
        case O_HOLD: f->holdout = mt_parse_double("--holdout", optarg); break;
        case O_SEED: f->seed = (uint64_t)mt_parse_long("--seed", optarg, 0, 1L << 62); break;
        case O_L2: f->l2 = mt_parse_double("--l2", optarg); break;
        case O_LR: f->lr = mt_parse_double("--lr", optarg); break;
        case O_EP: f->epochs = (int)mt_parse_long("--epochs", optarg, 1, 1000000); break;
        case O_PAT: f->patience = (int)mt_parse_long("--patience", optarg, 1, 1000000); break;
        case O_BATCH: o->batch = (int)mt_parse_long("--batch", optarg, 1, 1 << 20), o->have_batch = 1; break;
        case 'd': o->device = optarg; break;
        case 'o': o->out_path = optarg; break;
        case 'v': f->verbose = 1; break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); exit(0);
        default: fputs(USAGE, stderr); exit(2);
        }
    }
    if (argc - optind > 1) mt_die("expected at most one stream argument (see --help)");
    if (o->fit && o->have_batch) f->batch = o->batch;
    o->in_path = optind < argc ? argv[optind] : "-";
    if (f->holdout < 0 || f->holdout >= 1) mt_die("option --holdout: must be in [0, 1)");
    if (f->l2 < 0 || !(f->lr > 0)) mt_die("options --l2 and --lr: need l2 >= 0 and lr > 0");
}

// Dies unless the stream is an embedding stream; returns the width of its sentence embeddings
// (emb_dim, else hidden; 0 if not stated). With a trained sentence model (pool
// sbert-cnn-bilstm) emb_a / emb_b are emb_dim wide but cls_ab is hidden wide, so a head that
// reads both (feature cls with emb, pair or cos) is refused: one width per head.
static int check_embedding_stream(const mt_reader *r, unsigned features) {
    const mt_meta *m = mt_reader_meta(r);
    const char *kind = mt_meta_get(m, "kind");
    if (!kind || strcmp(kind, "embeddings") != 0)
        mt_die("%s: expected an embedding stream (kind=embeddings, from 'embed'), got kind=%s",
               mt_reader_path(r), kind ? kind : "(none)");
    const char *h = mt_meta_get(m, "hidden"), *e = mt_meta_get(m, "emb_dim");
    int hidden = h ? (int)mt_parse_long("stream header 'hidden'", h, 1, 1 << 16) : 0;
    int emb = e ? (int)mt_parse_long("stream header 'emb_dim'", e, 1, 1 << 20) : hidden;
    if (emb != hidden && (features & MT_FEAT_CLS)) {
        if (features & ~MT_FEAT_CLS)
            mt_die("%s: emb_a/emb_b have %d values (emb_dim) but cls_ab %d (hidden): a head cannot "
                   "combine feature cls with emb, pair or cos on these embeddings", mt_reader_path(r), emb, hidden);
        return hidden;
    }
    return emb;
}

// Hidden size from the header, or else from the first record's emb_a.
static int hidden_of(int from_header, const mt_record *first) {
    if (from_header) return from_header;
    const mt_tensor *t = mt_record_get(first, "emb_a");
    if (!t || t->ndim != 1) mt_die("record '%s' has no 1-d tensor 'emb_a'", first->id);
    return t->dims[0];
}

static void features_or_die(unsigned feat, int hidden, const mt_record *rec, long n, mt_task task,
                            float *out) {
    const char *err;
    if (mt_features_from_record(feat, hidden, rec, out, &err))
        mt_die("record %ld (id %s): %s%s", n, rec->id, err,
               mt_task_is_pair(task) && !mt_record_get(rec, "emb_b")
                   ? " (is this a single-sentence stream? --task qqp/sts need sentence pairs)"
                   : "");
}

// The gold value of rec for task, validated (class 0..4, 0/1, or score 0..5).
static float gold_or_die(mt_task task, const mt_record *rec, long n) {
    float y;
    const char *name = mt_task_label(task);
    if (!mt_record_label(rec, name, &y))
        mt_die("record %ld (id %s) has no label '%s': fitting a %s head needs labelled "
               "embeddings (tokenize --label %s)", n, rec->id, name, mt_task_name(task), name);
    int ok = task == MT_TASK_STS ? y >= 0 && y <= 5
             : task == MT_TASK_QQP ? (y == 0 || y == 1)
                                   : (y >= 0 && y <= 4 && y == floorf(y));
    if (!ok) mt_die("record %ld (id %s): label %s = %g is not valid for task %s", n, rec->id, name,
                    y, mt_task_name(task));
    return y;
}

// ---- fit ------------------------------------------------------------------------------

// Heads compute in fp32 on every device: a head is a few thousand weights, so 16-bit products
// would buy nothing but rounding (and MTBERT_PRECISION, meant for the encoder, is ignored here).
static const mt_backend *select_device(const char *device) {
    const mt_backend *be = mt_backend_select(device);
    mt_backend_set_precision(be, "fp32");
    return be;
}

static void run_fit(const options *o) {
    if (!o->have_task) mt_die("heads fit: --task is required");
    if (!o->out_path) mt_die("heads fit: -o HEAD.safetensors is required");
    if (o->head_path || o->zero_shot) mt_die("heads fit: --head and --zero-shot are for prediction");
    unsigned feat = mt_features_default(o->task);
    if (o->features && mt_features_parse(o->features, &feat))
        mt_die("option --features: '%s' is not a comma list of emb, pair, cos, cls", o->features);
    const mt_backend *be = select_device(o->device);
    mt_reader *r = mt_reader_open(o->in_path, 1);
    int hidden = check_embedding_stream(r, feat), dim = 0;
    mt_record rec = {0};
    float *x = NULL, *y = NULL;
    long n = 0, cap = 0;
    mt_progress pr;
    mt_progress_start(&pr, "read", 0);
    while (mt_reader_next(r, &rec) == 1) {
        if (n == 0) hidden = hidden_of(hidden, &rec), dim = mt_features_dim(feat, hidden);
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            x = mt_realloc(x, (size_t)cap * dim * sizeof *x);
            y = mt_realloc(y, (size_t)cap * sizeof *y);
        }
        features_or_die(feat, hidden, &rec, n + 1, o->task, x + (size_t)n * dim);
        y[n] = gold_or_die(o->task, &rec, n + 1);
        n++;
        mt_progress_add(&pr, 1);
    }
    mt_progress_done(&pr);
    if (n < 2) mt_die("%s: %ld records: too few to fit a head", mt_reader_path(r), n);
    if (n > 1L << 30) mt_die("too many records");
    mt_head *h = mt_head_new(o->task, feat, hidden);
    const mt_meta *m = mt_reader_meta(r);
    snprintf(h->model_fp, sizeof h->model_fp, "%s", mt_meta_get(m, "model_fp") ? mt_meta_get(m, "model_fp") : "");
    snprintf(h->pool, sizeof h->pool, "%s", mt_meta_get(m, "pool") ? mt_meta_get(m, "pool") : "");
    mt_fit_report rep;
    double t0 = mt_now();
    mt_head_fit(h, be, x, y, (int)n, &o->fit_opts, &rep);
    const char *metric = o->task == MT_TASK_STS ? "pearson" : "accuracy";
    mt_log("fit %s: %d train / %d held-out rows, %d features, best epoch %d of %d (%.1f s)",
           mt_task_name(o->task), rep.n_train, rep.n_held, h->dim, rep.best_epoch, rep.epochs_run,
           mt_now() - t0);
    mt_log("train:    loss %.4f  %s %.4f", rep.train_loss, metric, rep.train_metric);
    if (rep.n_held) mt_log("held-out: loss %.4f  %s %.4f", rep.held_loss, metric, rep.held_metric);
    mt_head_save(o->out_path, h);
    mt_log("wrote %s", o->out_path);
    mt_head_free(h);
    free(x), free(y);
    mt_record_free(&rec);
    mt_reader_close(r);
}

// ---- predict --------------------------------------------------------------------------

// Dies unless the head was fitted on embeddings like these (encoder, pooling, size, task).
static void check_head_matches(const mt_head *h, const options *o, const mt_reader *r, int hidden) {
    const mt_meta *m = mt_reader_meta(r);
    const char *fp = mt_meta_get(m, "model_fp"), *pool = mt_meta_get(m, "pool");
    if (o->have_task && o->task != h->task)
        mt_die("%s is a %s head, but --task is %s", o->head_path, mt_task_name(h->task), mt_task_name(o->task));
    if (h->model_fp[0] && (!fp || strcmp(fp, h->model_fp) != 0))
        mt_die("%s was fitted on embeddings of model_fp=%s, but %s has model_fp=%s: embed with "
               "the same model, or fit a head for this one", o->head_path, h->model_fp,
               mt_reader_path(r), fp ? fp : "(none)");
    if (h->pool[0] && pool && strcmp(pool, h->pool) != 0)
        mt_die("%s was fitted on pool=%s embeddings, but %s has pool=%s", o->head_path, h->pool,
               mt_reader_path(r), pool);
    if (hidden && hidden != h->hidden)
        mt_die("%s expects hidden size %d, but %s has hidden=%d", o->head_path, h->hidden,
               mt_reader_path(r), hidden);
}

// Copies id and labels of in to out and adds the task's output tensors.
static void write_prediction(mt_task task, const mt_record *in, const float *outv, float pred,
                             mt_record *out) {
    mt_record_clear(out);
    mt_record_set_id(out, in->id);
    for (int i = 0; i < in->n_labels; i++) mt_record_add_label(out, in->label_name[i], in->label[i]);
    const char *name = task == MT_TASK_SST ? "probs" : task == MT_TASK_QQP ? "prob" : "score";
    int k = mt_task_outputs(task);
    memcpy(mt_record_add1(out, name, MT_F32, k)->data, outv, (size_t)k * sizeof *outv);
    *(float *)mt_record_add1(out, "pred", MT_F32, 1)->data = pred;
}

// The trained heads of a pcgrad-train checkpoint, on embed's pooled vectors of that checkpoint.
static void check_trained_heads(const mt_taskmodel *tm, const char *path, const mt_reader *r) {
    const mt_meta *m = mt_reader_meta(r);
    const char *fp = mt_meta_get(m, "model_fp"), *pool = mt_meta_get(m, "pool"), *hid = mt_meta_get(m, "hidden");
    const char *emb = mt_meta_get(m, "emb_dim"), *norm = mt_meta_get(m, "normalize");
    const char *kind = mt_sentence_kind_name(tm->sent.cfg.kind);
    if (tm->model_fp[0] && (!fp || strcmp(fp, tm->model_fp)))
        mt_die("%s belongs to the encoder with model_fp=%s, but %s has model_fp=%s: embed with "
               "--model set to the same checkpoint", path, tm->model_fp, mt_reader_path(r), fp ? fp : "(none)");
    if (!pool || strcmp(pool, kind))
        mt_die("%s was trained on %s sentence embeddings, but %s has pool=%s: run embed --pool %s",
               path, kind, mt_reader_path(r), pool ? pool : "(none)", kind);
    if (!hid || atoi(hid) != tm->C) mt_die("%s expects hidden size %d, but %s has hidden=%s", path, tm->C,
                                           mt_reader_path(r), hid ? hid : "(none)");
    // emb_dim: absent in streams of embed before it was written (then emb_a is hidden wide)
    if (atoi(emb ? emb : hid) != tm->D)
        mt_die("%s expects %s sentence embeddings of %d values, but %s has emb_dim=%s", path, kind, tm->D,
               mt_reader_path(r), emb ? emb : "(none)");
    if (norm && strcmp(norm, "0"))
        mt_die("%s was trained on unnormalised sentence embeddings, but %s has normalize=%s: embed "
               "without --normalize", path, mt_reader_path(r), norm);
}

static const float *tensor_or_die(const mt_record *rec, const char *name, int n, const mt_reader *r, int need) {
    const mt_tensor *t = mt_record_get(rec, name);
    if (!t && !need) return NULL;
    if (!t || t->dtype != MT_F32 || (int)mt_tensor_numel(t) != n)
        mt_die("%s: record '%s' needs %s as f32[%d] (pairs: embed without --no-cross for the "
               "cross-encoder heads)", mt_reader_path(r), rec->id, name, n);
    return t->data;
}

static void run_predict_trained(const options *o) {
    if (!o->have_task) mt_die("--model needs --task sst, qqp or sts");
    if (o->head_path || o->zero_shot) mt_die("give one of --model, --head or --zero-shot");
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/heads.safetensors", o->model_dir);
    mt_taskmodel tm;
    if (mt_taskmodel_load(&tm, path, err, sizeof err)) mt_die("%s", err);
    const mt_backend *be = select_device(o->device);
    mt_reader *r = mt_reader_open(o->in_path, 1);
    check_embedding_stream(r, 0);
    check_trained_heads(&tm, path, r);
    mt_meta meta = {0};
    mt_meta_copy(&meta, mt_reader_meta(r));
    mt_meta_set(&meta, "kind", "predictions");
    mt_meta_set(&meta, "task", mt_task_name(o->task));
    mt_meta_set(&meta, "producer", PRODUCER);
    mt_meta_set(&meta, "head", path);
    mt_writer *w = mt_writer_open(o->out_path ? o->out_path : "-", &meta);
    int pair = mt_task_is_pair(o->task), bi = tm.pair != MT_PAIR_CROSS, cross = tm.pair != MT_PAIR_BI;
    int need_a = !pair || bi, need_b = pair && bi, need_c = pair && cross;
    int K = mt_task_outputs(o->task), cap = o->batch, D = tm.D, C = tm.C;
    mt_record *recs = mt_calloc((size_t)cap, sizeof *recs), out = {0};
    float *ea = need_a ? mt_malloc((size_t)cap * D * sizeof *ea) : NULL;
    float *eb = need_b ? mt_malloc((size_t)cap * D * sizeof *eb) : NULL;
    float *ec = need_c ? mt_malloc((size_t)cap * C * sizeof *ec) : NULL;
    float *outv = mt_malloc((size_t)cap * K * sizeof *outv);
    mt_tm_predictor pred;
    mt_tm_predictor_init(&pred, &tm, be);
    mt_progress pr;
    mt_progress_start(&pr, "predict", 0);
    for (int more = 1; more;) {  // chunks of up to cap records: one product per head
        int m = 0;
        while (m < cap && (more = mt_reader_next(r, &recs[m]) == 1)) m++;
        if (!m) break;
        for (int i = 0; i < m; i++) {
            const float *a = tensor_or_die(&recs[i], "emb_a", D, r, need_a);
            const float *b = pair ? tensor_or_die(&recs[i], "emb_b", D, r, need_b) : NULL;
            const float *c = pair ? tensor_or_die(&recs[i], "cls_ab", C, r, need_c) : NULL;
            if (need_a) memcpy(ea + (size_t)i * D, a, (size_t)D * sizeof *ea);
            if (need_b) memcpy(eb + (size_t)i * D, b, (size_t)D * sizeof *eb);
            if (need_c) memcpy(ec + (size_t)i * C, c, (size_t)C * sizeof *ec);
        }
        mt_taskmodel_predict(&tm, &pred, o->task, m, ea, eb, ec, outv);
        for (int i = 0; i < m; i++) {
            const float *ov = outv + (size_t)i * K;
            write_prediction(o->task, &recs[i], ov, mt_task_pred(o->task, ov), &out);
            mt_writer_put(w, &out);
        }
        mt_progress_add(&pr, m);
    }
    mt_progress_done(&pr);
    mt_writer_close(w);
    mt_reader_close(r);
    for (int i = 0; i < cap; i++) mt_record_free(&recs[i]);
    free(recs), free(ea), free(eb), free(ec), free(outv);
    mt_tm_predictor_free(&pred);
    mt_record_free(&out), mt_meta_free(&meta), mt_taskmodel_free(&tm);
}

static void run_predict(const options *o) {
    if (o->model_dir) {
        run_predict_trained(o);
        return;
    }
    if (o->head_path && o->zero_shot) mt_die("give either --head or --zero-shot, not both");
    if (!o->head_path && !o->zero_shot)
        mt_die("give --head FILE (written by 'heads fit') or, for sts, --zero-shot (see --help)");
    if (o->zero_shot && o->have_task && o->task != MT_TASK_STS)
        mt_die("--zero-shot is cosine similarity: it is only for --task sts");
    mt_head *h = o->head_path ? mt_head_load(o->head_path) : NULL;
    mt_task task = h ? h->task : MT_TASK_STS;
    const mt_backend *be = select_device(o->device);  // zero-shot has no product: the host
    mt_reader *r = mt_reader_open(o->in_path, 1);
    int hidden = check_embedding_stream(r, h ? h->features : MT_FEAT_COS);
    if (h) check_head_matches(h, o, r, hidden);
    mt_meta meta = {0};
    mt_meta_copy(&meta, mt_reader_meta(r));
    mt_meta_set(&meta, "kind", "predictions");
    mt_meta_set(&meta, "task", mt_task_name(task));
    mt_meta_set(&meta, "producer", PRODUCER);
    mt_meta_set(&meta, "head", h ? o->head_path : "zero-shot");
    mt_writer *w = mt_writer_open(o->out_path ? o->out_path : "-", &meta);
    unsigned feat = h ? h->features : MT_FEAT_COS;
    int K = mt_task_outputs(task), cap = o->batch;
    mt_record *recs = mt_calloc((size_t)cap, sizeof *recs), out = {0};
    float *x = NULL, *outv = mt_malloc((size_t)cap * K * sizeof *outv), *pred = mt_malloc((size_t)cap * sizeof *pred);
    mt_head_dev dev;
    mt_progress pr;
    mt_progress_start(&pr, "predict", 0);
    for (int more = 1; more;) {  // chunks of up to cap records: one product each
        int m = 0;
        while (m < cap && (more = mt_reader_next(r, &recs[m]) == 1)) m++;
        if (!m) break;
        if (!x) {
            hidden = hidden_of(hidden, &recs[0]);
            if (h) check_head_matches(h, o, r, hidden), mt_head_dev_init(&dev, h, be, cap);
            x = mt_malloc((size_t)cap * mt_features_dim(feat, hidden) * sizeof *x);
        }
        int dim = mt_features_dim(feat, hidden);
        long first = mt_reader_count(r) - m + 1;
        for (int i = 0; i < m; i++) features_or_die(feat, hidden, &recs[i], first + i, task, x + (size_t)i * dim);
        if (h) mt_head_predict(h, &dev, x, m, outv, pred);
        else
            for (int i = 0; i < m; i++) pred[i] = outv[i] = mt_zero_shot_score(x[i]);
        for (int i = 0; i < m; i++) {
            write_prediction(task, &recs[i], outv + (size_t)i * K, pred[i], &out);
            mt_writer_put(w, &out);
        }
        mt_progress_add(&pr, m);
    }
    mt_progress_done(&pr);
    mt_writer_close(w);
    mt_reader_close(r);
    if (h && x) mt_head_dev_free(&dev);
    for (int i = 0; i < cap; i++) mt_record_free(&recs[i]);
    free(recs), mt_record_free(&out), mt_meta_free(&meta), mt_head_free(h), free(x), free(outv), free(pred);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    options o = {0};
    parse_args(argc, argv, &o);
    if (o.fit) run_fit(&o);
    else run_predict(&o);
    return 0;
}
