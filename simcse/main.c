// simcse — supervised SimCSE (contrastive) pre-training of the encoder over token shards.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "checkpoint.h"
#include "common.h"
#include "contrastive.h"
#include "device.h"
#include "json.h"
#include "lossscale.h"
#include "memplan.h"

static const char *USAGE =
    "usage: simcse --model DIR (--pairs NAME=FILE ... | --nli FILE) -o OUTDIR [options]\n"
    "\n"
    "Supervised SimCSE: trains the encoder so that the mean-pooled embeddings of positive\n"
    "pairs are close and those of the other pairs in the batch are far (cosine similarity,\n"
    "temperature tau, in-batch negatives), and writes OUTDIR as a Hugging Face checkpoint\n"
    "(model.safetensors, config.json, vocab.txt) plus simcse.json (options, final loss) and\n"
    "simcse.log (TSV: step, loss, accuracy, lr). OUTDIR appears whole or not at all.\n"
    "Inputs are token streams from tokenize:\n"
    "  --pairs qqp=FILE   pair stream, label is_duplicate: duplicates are positives\n"
    "  --pairs sts=FILE   pair stream, label similarity: pairs above --min-score are positives\n"
    "  --pairs sst=FILE   sentence stream, label: two different sentences of one label\n"
    "                     (paired at random under --seed) are a positive\n"
    "  --nli FILE         pair stream premise,hypothesis with label entailment=0,\n"
    "                     contradiction=2: (premise, entailment) positives with the\n"
    "                     contradiction hypothesis of the same premise as a hard negative;\n"
    "                     premises without both are skipped (counted on stderr)\n"
    "Each step packs the batch's anchors, positives (and negatives) into one encoder forward.\n"
    "The encoder trains where --device says; the loss is computed on the host.\n"
    "\n"
    "options:\n"
    "  -m, --model DIR          BERT checkpoint to start from (the shards' vocab_fp must match)\n"
    "  -p, --pairs NAME=FILE    a positive-pair shard (qqp, sts, sst; repeatable)\n"
    "      --nli FILE           NLI mode (not combined with --pairs; repeatable)\n"
    "  -o, --output OUTDIR      the checkpoint directory to write\n"
    "  -f, --force              replace OUTDIR if it exists\n"
    "      --min-score X        STS positives: similarity > X (default 4)\n"
    "      --tau X              temperature (default 0.05)\n"
    "      --symmetric          also score positives against the anchors (symmetric loss)\n"
    "      --pool MODE          mean | cls (default mean)\n"
    "      --dropout P          encoder dropout (default 0.1)\n"
    "  -B, --batch-size N       examples per step (default 32)\n"
    "      --batch-tokens N     real tokens per step at most (default 16384)\n"
    "      --epochs N           (default 1)\n"
    "      --lr X               peak learning rate (default 3e-5)\n"
    "      --weight-decay X     AdamW decay, not on biases/LayerNorm (default 0.01)\n"
    "      --warmup X           fraction of steps of linear warm-up, then linear decay (0.1)\n"
    "      --clip X             gradient-norm clipping (default 1; 0 = off)\n"
    "  -s, --seed N             shuffling, SST pairing, dropout (default 0)\n"
    "      --max-steps N        stop after N steps (default: all batches of all epochs)\n"
    "      --limit N            read at most N records of each shard\n"
    "  -j, --threads N          CPU threads (default: all cores)\n"
    "  -d, --device DEV         auto | cpu | cuda (default auto: the GPU when one is usable,\n"
    "                           said on stderr; cuda without a GPU is an error)\n"
    "      --precision P        on CUDA: fp32 (default), tf32, bf16 or fp16 matrix products\n"
    "      --loss-scale S       dynamic | none | VALUE (fixed): scale the loss for the backward,\n"
    "                           skip steps whose loss or gradient is not finite (default\n"
    "                           dynamic with --precision fp16, else none; dynamic as torch's\n"
    "                           GradScaler; without scaling a non-finite loss stops the run)\n"
    "      --loss-scale-init X  dynamic: the first scale (default 65536)\n"
    "      --max-memory SIZE    fail up front when the run's planned memory (sized once from\n"
    "                           the batches) exceeds SIZE (e.g. 20G, 512M; default\n"
    "                           $MTBERT_MAX_MEMORY, else the device's free memory)\n"
    "      --log-every N        progress line every N steps (default: every 2 s)\n"
    "      --fail-at-step N     testing: a NaN loss at step N\n"
    "  -q, --quiet              no progress on stderr\n"
    "  -h, --help               this text\n"
    "\n"
    MT_DEVICE_ENV_HELP
    "\n"
    "examples:\n"
    "  M=models/all-MiniLM-L6-v2\n"
    "  bin/tokenize --model $M --pair sentence1,sentence2 --label is_duplicate data/qqp-train.tsv -o qqp.tok\n"
    "  bin/tokenize --model $M --pair sentence1,sentence2 --label similarity data/sts-train.tsv -o sts.tok\n"
    "  bin/simcse --model $M --pairs qqp=qqp.tok --pairs sts=sts.tok --max-steps 200 -o runs/simcse\n"
    "  bin/tokenize --model $M --pair premise,hypothesis --label label \\\n"
    "    --label-map entailment=0,neutral=1,contradiction=2 data/nli-sick.tsv -o nli.tok\n"
    "  bin/simcse --model $M --nli nli.tok -o runs/nli && bin/simcse --model runs/nli \\\n"
    "    --pairs qqp=qqp.tok --pairs sts=sts.tok -o runs/nli-simcse\n"
    "  bin/tokenize --model $M --pair sentence1,sentence2 --label similarity data/sts-train.tsv \\\n"
    "    | bin/embed --model runs/simcse --no-cross | bin/heads --task sts --zero-shot | bin/evaluate\n";

#define MAX_SHARDS 32

typedef struct {
    const char *model, *out, *device, *precision, *max_memory;
    int force, threads, n_shards;
    long limit;
    mt_cl_source src[MAX_SHARDS];
    const char *path[MAX_SHARDS];
    mt_cl_mine_options mine;
    mt_cl_train_options train;
} options;

static void add_shard(options *o, mt_cl_source src, const char *path) {
    if (o->n_shards == MAX_SHARDS) mt_die("at most %d shards", MAX_SHARDS);
    o->src[o->n_shards] = src, o->path[o->n_shards++] = path;
}

static void add_pairs(options *o, const char *arg) {
    const char *eq = strchr(arg, '=');
    char name[16] = "";
    if (eq && eq - arg < (long)sizeof name) memcpy(name, arg, (size_t)(eq - arg));
    int src = eq ? mt_cl_source_parse(name) : -1;
    if (src < 0 || src == MT_CL_NLI || !eq[1]) mt_die("--pairs: expected qqp=FILE, sts=FILE or sst=FILE, got '%s'", arg);
    add_shard(o, (mt_cl_source)src, eq + 1);
}

static int parse_pool(const char *s) {
    if (!strcmp(s, "mean")) return MT_POOL_MEAN;
    if (!strcmp(s, "cls")) return MT_POOL_CLS;
    mt_die("--pool: expected mean or cls, got '%s'", s);
}

enum { O_NLI = 256, O_MIN_SCORE, O_TAU, O_SYM, O_POOL, O_DROPOUT, O_BATCH_TOKENS, O_EPOCHS, O_LR, O_WD,
       O_WARMUP, O_CLIP, O_MAX_STEPS, O_LIMIT, O_LOG_EVERY, O_PRECISION, O_LOSS_SCALE, O_LOSS_SCALE_INIT, O_MAX_MEMORY,
       O_FAIL };

static void parse_args(options *o, int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"pairs", required_argument, 0, 'p'},
        {"nli", required_argument, 0, O_NLI}, {"output", required_argument, 0, 'o'},
        {"force", no_argument, 0, 'f'}, {"min-score", required_argument, 0, O_MIN_SCORE},
        {"tau", required_argument, 0, O_TAU}, {"symmetric", no_argument, 0, O_SYM},
        {"pool", required_argument, 0, O_POOL}, {"dropout", required_argument, 0, O_DROPOUT},
        {"batch-size", required_argument, 0, 'B'}, {"batch-tokens", required_argument, 0, O_BATCH_TOKENS},
        {"epochs", required_argument, 0, O_EPOCHS}, {"lr", required_argument, 0, O_LR},
        {"weight-decay", required_argument, 0, O_WD}, {"warmup", required_argument, 0, O_WARMUP},
        {"clip", required_argument, 0, O_CLIP}, {"seed", required_argument, 0, 's'},
        {"max-steps", required_argument, 0, O_MAX_STEPS}, {"limit", required_argument, 0, O_LIMIT},
        {"threads", required_argument, 0, 'j'}, {"device", required_argument, 0, 'd'}, {"log-every", required_argument, 0, O_LOG_EVERY},
        {"precision", required_argument, 0, O_PRECISION}, {"loss-scale", required_argument, 0, O_LOSS_SCALE},
        {"loss-scale-init", required_argument, 0, O_LOSS_SCALE_INIT}, {"max-memory", required_argument, 0, O_MAX_MEMORY},
        {"fail-at-step", required_argument, 0, O_FAIL},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    mt_cl_train_options *t = &o->train;
    int c, nli = 0, pairs = 0;
    while ((c = getopt_long(argc, argv, "m:p:o:fB:s:j:d:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': add_pairs(o, optarg), pairs++; break;
        case O_NLI: add_shard(o, MT_CL_NLI, optarg), nli++; break;
        case 'o': o->out = optarg; break;
        case 'f': o->force = 1; break;
        case O_MIN_SCORE: o->mine.min_score = mt_parse_double("--min-score", optarg); break;
        case O_TAU: t->tau = mt_parse_double("--tau", optarg); break;
        case O_SYM: t->symmetric = 1; break;
        case O_POOL: t->pool = parse_pool(optarg); break;
        case O_DROPOUT: t->dropout = (float)mt_parse_double("--dropout", optarg); break;
        case 'B': t->batch_size = (int)mt_parse_long("--batch-size", optarg, 2, 1 << 16); break;
        case O_BATCH_TOKENS: t->batch_tokens = (int)mt_parse_long("--batch-tokens", optarg, 2, 1 << 24); break;
        case O_EPOCHS: t->epochs = (int)mt_parse_long("--epochs", optarg, 1, 1000); break;
        case O_LR: t->lr = mt_parse_double("--lr", optarg); break;
        case O_WD: t->weight_decay = mt_parse_double("--weight-decay", optarg); break;
        case O_WARMUP: t->warmup = mt_parse_double("--warmup", optarg); break;
        case O_CLIP: t->clip = mt_parse_double("--clip", optarg); break;
        case 's': t->seed = (uint64_t)mt_parse_long("--seed", optarg, 0, (1L << 62)); break;
        case O_MAX_STEPS: t->max_steps = mt_parse_long("--max-steps", optarg, 1, 1L << 40); break;
        case O_LIMIT: o->limit = mt_parse_long("--limit", optarg, 1, 1L << 40); break;
        case 'j': o->threads = (int)mt_parse_long("--threads", optarg, 1, 1024); break;
        case 'd': o->device = optarg; break;
        case O_PRECISION: o->precision = optarg; break;
        case O_LOSS_SCALE: t->loss_scale = optarg; break;
        case O_LOSS_SCALE_INIT: t->loss_scale_init = mt_loss_scale_init_parse(optarg); break;
        case O_MAX_MEMORY: o->max_memory = optarg; break;
        case O_FAIL: t->fail_at_step = mt_parse_long("--fail-at-step", optarg, 1, 1L << 40); break;
        case O_LOG_EVERY: t->log_every = (int)mt_parse_long("--log-every", optarg, 1, 1 << 30); break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); exit(0);
        default: fputs(USAGE, stderr); exit(2);
        }
    }
    if (optind < argc) mt_die("unexpected argument '%s' (see --help)", argv[optind]);
    if (!o->model || !o->out) mt_die("--model DIR and -o OUTDIR are required (see --help)");
    if (!nli && !pairs) mt_die("give --pairs NAME=FILE (qqp, sts, sst) or --nli FILE (see --help)");
    if (nli && pairs) mt_die("--nli and --pairs train separate stages: run simcse --nli first, then --pairs "
                             "with --model set to its output");
    if (!(t->tau > 0)) mt_die("--tau must be > 0");
    if (!(t->dropout >= 0 && t->dropout < 1)) mt_die("--dropout must be in [0, 1)");
    if (!(t->lr > 0) || !(t->weight_decay >= 0) || !(t->warmup >= 0 && t->warmup <= 1) || !(t->clip >= 0))
        mt_die("--lr must be > 0, --weight-decay and --clip >= 0, --warmup in [0, 1]");
    o->mine.seed = t->seed;
}

static void report_shard(mt_cl_source src, const char *path, const mt_cl_mine_stats *s) {
    if (src == MT_CL_NLI)
        mt_log("nli %s: %ld records (%ld entailment, %ld contradiction), %ld premises: %ld skipped without both, "
               "%ld examples with a hard negative", path, s->records, s->entailments, s->contradictions,
               s->premises, s->skipped_premises, s->positives);
    else if (src == MT_CL_SST)
        mt_log("sst %s: %ld records, %ld same-label pairs, %ld sentences unpaired", path, s->records, s->positives,
               s->unpaired);
    else
        mt_log("%s %s: %ld records, %ld positive pairs", mt_cl_source_name(src), path, s->records, s->positives);
}

static void write_summary(const options *o, const mt_cl_data *d, const mt_cl_result *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) mt_die("cannot create %s", path);
    const mt_cl_train_options *t = &o->train;
    fprintf(f, "{\n  \"producer\": \"simcse 0.1\",\n  \"init\": ");
    mt_json_write_string(f, o->model);
    fprintf(f, ",\n  \"shards\": [");
    for (int i = 0; i < o->n_shards; i++) {
        fprintf(f, "%s{\"source\": \"%s\", \"path\": ", i ? ", " : "", mt_cl_source_name(o->src[i]));
        mt_json_write_string(f, o->path[i]);
        fputc('}', f);
    }
    fprintf(f, "],\n  \"examples\": %d, \"hard_negatives\": %s,\n", d->n_ex, d->n_ex && d->ex[0].negative >= 0 ? "true" : "false");
    fprintf(f, "  \"options\": {\"tau\": %g, \"symmetric\": %s, \"pool\": \"%s\", \"dropout\": %g, \"batch_size\": %d, "
               "\"batch_tokens\": %d, \"epochs\": %d, \"lr\": %g, \"weight_decay\": %g, \"warmup\": %g, \"clip\": %g, "
               "\"seed\": %llu, \"max_steps\": %ld, \"limit\": %ld, \"min_score\": %g},\n",
            t->tau, t->symmetric ? "true" : "false", t->pool == MT_POOL_CLS ? "cls" : "mean", t->dropout, t->batch_size,
            t->batch_tokens, t->epochs, t->lr, t->weight_decay, t->warmup, t->clip, (unsigned long long)t->seed,
            t->max_steps, o->limit, o->mine.min_score);
    fprintf(f, "  \"steps\": %ld, \"examples_seen\": %ld, \"tokens_seen\": %ld,\n", r->steps, r->examples, r->tokens);
    fprintf(f, "  \"loss_scale\": %g, \"skipped_steps\": %ld,\n", r->loss_scale, r->skipped);  // lossscale.h; 1, 0 without
    fputs("  \"final_loss\": ", f), mt_json_write_number(f, "%.6f", r->loss);
    fputs(", \"final_accuracy\": ", f), mt_json_write_number(f, "%.4f", r->accuracy);
    fputs(", \"mean_loss_last_20\": ", f), mt_json_write_number(f, "%.6f", r->mean_loss);
    fputs("\n}\n", f);
    if (fclose(f) != 0) mt_die("cannot write %s", path);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    options o = {0};
    o.mine = mt_cl_mine_defaults();
    o.train = mt_cl_train_defaults();
    parse_args(&o, argc, argv);
    o.train.max_memory = mt_max_memory(o.max_memory);

    char err[512], path[4096], vocab[4096], vocab_fp[17];
    const mt_backend *be = mt_backend_select(o.device);
    mt_backend_set_precision(be, o.precision);
    mt_bert *m = mt_bert_load(o.model, be, err, sizeof err);
    if (!m) mt_die("%s", err);
    if (o.threads > 0) mt_bert_set_threads(m, o.threads);
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", o.model);
    mt_file_fingerprint(vocab, vocab_fp);

    mt_cl_data d = {0};
    for (int i = 0; i < o.n_shards; i++) {
        mt_cl_mine_stats st;
        mt_cl_load_shard(&d, o.src[i], o.path[i], vocab_fp, &o.mine, o.limit, &st);
        report_shard(o.src[i], o.path[i], &st);
    }
    mt_cl_outdir out;  // checked before training, so a taken OUTDIR costs nothing
    mt_cl_outdir_begin(&out, o.out, o.force);
    mt_cl_outdir_path(&out, "simcse.log", path, sizeof path);
    FILE *log = fopen(path, "w");
    if (!log) mt_die("cannot create %s", path);
    mt_cl_result r;
    mt_cl_train(m, &d, &o.train, log, &r);
    if (fclose(log) != 0) mt_die("cannot write %s", path);

    if (mt_bert_save(m, out.tmp, err, sizeof err)) mt_die("%s", err);
    mt_cl_outdir_path(&out, "vocab.txt", path, sizeof path);
    if (mt_copy_file(vocab, path, err, sizeof err)) mt_die("%s", err);
    mt_cl_outdir_path(&out, "simcse.json", path, sizeof path);
    write_summary(&o, &d, &r, path);
    mt_log("%ld steps, %ld examples in %.1f s; final loss %.4f (mean of last 20: %.4f); wrote %s", r.steps, r.examples,
           r.seconds, r.loss, r.mean_loss, o.out);
    mt_cl_outdir_commit(&out);
    mt_cl_data_free(&d);
    mt_bert_free(m);
    return 0;
}
