// pcgrad-train — multi-task fine-tuning of a BERT encoder + task heads over token shards.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "device.h"
#include "lossscale.h"
#include "sentence.h"
#include "trainer.h"

static const char *USAGE =
    "usage: pcgrad-train --model DIR --task T=SHARD [--task T=SHARD ...] [--dev T=SHARD ...] -o OUTDIR\n"
    "       pcgrad-train --resume OUTDIR\n"
    "\n"
    "Fine-tunes the encoder and the task heads (T = sst, qqp, sts) on token shards from\n"
    "`tokenize` (sst: --text sentence --label label; qqp: --pair sentence1,sentence2 --label\n"
    "is_duplicate; sts: ... --label similarity). Every task is in every step: without --pcgrad\n"
    "each task's batch gradient is summed; with --pcgrad the per-task gradients of the shared\n"
    "parameters are combined by PCGrad (partial batches, tasks sampled with replacement).\n"
    "After each epoch the dev shards are scored (sst acc, qqp acc, sts Pearson r, overall =\n"
    "mean of acc, acc, (r+1)/2) and the best epoch is kept in OUTDIR/best; OUTDIR/last holds\n"
    "the latest weights and the training state (--resume continues exactly). Both are\n"
    "Hugging Face model directories plus heads.safetensors; OUTDIR/train.log (per step) and\n"
    "OUTDIR/dev.tsv (per epoch) are TSV. Progress and PCGrad telemetry go to stderr.\n"
    "\n"
    "data and model:\n"
    "  -m, --model DIR           base model (config.json, vocab.txt, model.safetensors)\n"
    "      --init DIR            start from this checkpoint (encoder, and heads if present)\n"
    "      --task T=SHARD        training shard of task T (repeat per task)\n"
    "      --dev T=SHARD         dev shard of task T, for model selection\n"
    "  -o, --output OUTDIR       run directory (must not hold a run)\n"
    "      --resume OUTDIR       continue the run in OUTDIR from OUTDIR/last\n"
    "      --sentence-model M    cls | mean | sbert-cnn-bilstm (default mean)\n"
    "      --pair-model M        bi | cross | ensemble (default ensemble)\n"
    "      --cnn-filters N       sbert-cnn-bilstm: filters per width 1..4 (default 128)\n"
    "      --lstm-hidden N       sbert-cnn-bilstm: BiLSTM width per direction (default 128)\n"
    "recipe (the paper's defaults):\n"
    "      --epochs N            epochs per phase (default 3)\n"
    "      --batch-size N        examples per task per step (default 16)\n"
    "      --batch-tokens N      at most N encoder tokens per batch (default 8192)\n"
    "      --window N            examples sorted by length together (default 1024)\n"
    "      --lr X                peak learning rate (default 1e-5)\n"
    "      --weight-decay X      AdamW decoupled weight decay (default 0.01; none on biases, LayerNorm)\n"
    "      --dropout P           dropout in encoder and before each head (default 0.1)\n"
    "      --warmup X            warm-up steps (X >= 1) or share of all steps (X < 1) (default 0)\n"
    "      --lr-schedule S       constant | linear (decay to 0 at the end; default constant)\n"
    "      --clip X              clip the global gradient norm at X (default 0: off)\n"
    "      --llrd X              layer-wise lr decay factor, e.g. 0.9 (default off)\n"
    "      --seed S              seed of data order, dropout, head init, PCGrad (default 0)\n"
    "      --pcgrad              PCGrad over the tasks' gradients of the shared parameters\n"
    "      --partial-batch N     PCGrad: examples per partial batch (default 4)\n"
    "      --pcgrad-reduce R     mean | sum of the projected gradients (default mean)\n"
    "      --schedule T,T,...    sequential phases, one task each, in this order\n"
    "quick runs and control:\n"
    "      --max-steps N         stop after N steps in all\n"
    "      --limit N             use only the first N records of every shard (data/sst-train.tsv\n"
    "                            is ordered: shuffle a TSV before tokenizing for a fair sample)\n"
    "      --stop-after-steps N  save OUTDIR/last after step N and exit 0 (resume later)\n"
    "      --fail-at-step N      testing: a NaN loss at step N\n"
    "  -j, --threads N           CPU threads (default: all cores)\n"
    "  -d, --device DEV          auto | cpu | cuda: where the encoder trains (default auto: the\n"
    "                            GPU when one is usable, said on stderr; cuda without a GPU is\n"
    "                            an error). The sentence model trains there too, the heads on\n"
    "                            the CPU. A run resumes on any device\n"
    "      --precision P         on CUDA: fp32 (default), tf32, bf16 or fp16 matrix products\n"
    "                            (16-bit operands, fp32 accumulation and master weights, as\n"
    "                            autocast); like --device, give it again to --resume\n"
    "      --loss-scale S        dynamic | none | VALUE: the loss is multiplied by the scale\n"
    "                            before the backward and the gradient divided by it after\n"
    "                            (default dynamic with --precision fp16, else none). dynamic\n"
    "                            (torch's GradScaler): from 65536, a non-finite loss or\n"
    "                            gradient skips the step and halves the scale, 2000 good steps\n"
    "                            double it; VALUE: fixed, such steps skipped. Without scaling a\n"
    "                            non-finite loss stops the run. Kept\n"
    "                            in the run's state; given to --resume, it starts afresh\n"
    "      --loss-scale-init X   dynamic: the first scale (default 65536)\n"
    "      --max-memory SIZE     fail up front when the run's planned memory (the encoder's and\n"
    "                            the sentence model's parameters, gradients, AdamW, PCGrad\n"
    "                            copies, activations; workspaces: sized once from the batch\n"
    "                            bounds) exceeds SIZE (e.g. 20G, 512M; default\n"
    "                            $MTBERT_MAX_MEMORY, else the device's free memory); like\n"
    "                            --device, give it again to --resume\n"
    "  -q, --quiet               no progress on stderr\n"
    "  -h, --help                this text\n"
    "\n"
    MT_DEVICE_ENV_HELP
    "\n"
    "examples:\n"
    "  M=models/all-MiniLM-L6-v2\n"
    "  for t in sst qqp sts; do bin/split-tsv --seed 0 --train-out $t-tr.tsv --val-out $t-val.tsv data/$t-train.tsv; done\n"
    "  bin/tokenize --model $M --text sentence --label label sst-tr.tsv -o sst-tr.tok\n"
    "  bin/tokenize --model $M --text sentence --label label sst-val.tsv -o sst-val.tok\n"
    "  bin/tokenize --model $M --pair sentence1,sentence2 --label similarity sts-tr.tsv -o sts-tr.tok\n"
    "  bin/tokenize --model $M --pair sentence1,sentence2 --label similarity sts-val.tsv -o sts-val.tok\n"
    "  bin/pcgrad-train --model $M --task sst=sst-tr.tok --task sts=sts-tr.tok \\\n"
    "    --dev sst=sst-val.tok --dev sts=sts-val.tok --pcgrad --max-steps 50 -o runs/demo\n"
    "  bin/pcgrad-train --resume runs/demo\n"
    "  bin/pcgrad-train --model $M --task sst=sst-tr.tok --task sts=sts-tr.tok --schedule sst,sts \\\n"
    "    --limit 64 --epochs 1 -o runs/seq\n";

static int task_of(const char *opt, const char *arg, const char **path) {
    const char *eq = strchr(arg, '=');
    char name[16];
    snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - arg) : 0, arg);
    mt_task t;
    if (!eq || mt_task_parse(name, &t) || !eq[1]) mt_die("%s %s: expected TASK=SHARD with TASK sst, qqp or sts", opt, arg);
    *path = eq + 1;
    return (int)t;
}

static void parse_schedule(mt_train_options *o, const char *arg) {
    char *s = mt_strdup(arg), *save = NULL;
    o->n_schedule = 0;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        mt_task t;
        if (mt_task_parse(tok, &t) || o->n_schedule == MT_N_TASKS) mt_die("--schedule %s: a comma-separated list of sst, qqp, sts", arg);
        o->schedule[o->n_schedule++] = t;
    }
    free(s);
}

enum { O_INIT = 256, O_PRECISION, O_TASK, O_DEV, O_RESUME, O_SENT, O_PAIR, O_FILTERS, O_LSTM, O_EPOCHS, O_BATCH, O_BTOK, O_WINDOW,
       O_LR, O_WD, O_DROP, O_WARM, O_SCHED_LR, O_CLIP, O_LLRD, O_SEED, O_PCGRAD, O_PARTIAL, O_REDUCE, O_SCHEDULE,
       O_MAXSTEPS, O_LIMIT, O_STOP, O_FAIL, O_LOSS_SCALE, O_LOSS_SCALE_INIT, O_MAXMEM };

static const struct option OPTS[] = {
    {"model", required_argument, 0, 'm'}, {"init", required_argument, 0, O_INIT}, {"task", required_argument, 0, O_TASK},
    {"dev", required_argument, 0, O_DEV}, {"output", required_argument, 0, 'o'}, {"resume", required_argument, 0, O_RESUME},
    {"sentence-model", required_argument, 0, O_SENT}, {"pair-model", required_argument, 0, O_PAIR},
    {"cnn-filters", required_argument, 0, O_FILTERS}, {"lstm-hidden", required_argument, 0, O_LSTM},
    {"epochs", required_argument, 0, O_EPOCHS}, {"batch-size", required_argument, 0, O_BATCH},
    {"batch-tokens", required_argument, 0, O_BTOK}, {"window", required_argument, 0, O_WINDOW},
    {"lr", required_argument, 0, O_LR}, {"weight-decay", required_argument, 0, O_WD},
    {"dropout", required_argument, 0, O_DROP}, {"warmup", required_argument, 0, O_WARM},
    {"lr-schedule", required_argument, 0, O_SCHED_LR}, {"clip", required_argument, 0, O_CLIP},
    {"llrd", required_argument, 0, O_LLRD}, {"seed", required_argument, 0, O_SEED}, {"pcgrad", no_argument, 0, O_PCGRAD},
    {"partial-batch", required_argument, 0, O_PARTIAL}, {"pcgrad-reduce", required_argument, 0, O_REDUCE},
    {"schedule", required_argument, 0, O_SCHEDULE}, {"max-steps", required_argument, 0, O_MAXSTEPS},
    {"limit", required_argument, 0, O_LIMIT}, {"stop-after-steps", required_argument, 0, O_STOP},
    {"fail-at-step", required_argument, 0, O_FAIL}, {"threads", required_argument, 0, 'j'},
    {"device", required_argument, 0, 'd'}, {"precision", required_argument, 0, O_PRECISION},
    {"loss-scale", required_argument, 0, O_LOSS_SCALE}, {"loss-scale-init", required_argument, 0, O_LOSS_SCALE_INIT},
    {"max-memory", required_argument, 0, O_MAXMEM}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};

static double in_range(const char *opt, const char *s, double lo, double hi) {
    double v = mt_parse_double(opt, s);
    if (!(v >= lo && v <= hi)) mt_die("%s %s: must be in [%g, %g]", opt, s, lo, hi);
    return v;
}

// One option into o (the recipe and data options); returns 0 when c is not one of them.
static int recipe_option(mt_train_options *o, int c, const char *a) {
    const char *path;
    int t;
    switch (c) {
    case 'm': free(o->model_dir), o->model_dir = mt_strdup(a); break;
    case O_INIT: free(o->init_dir), o->init_dir = mt_strdup(a); break;
    case O_TASK: t = task_of("--task", a, &path), free(o->task_path[t]), o->task_path[t] = mt_strdup(path); break;
    case O_DEV: t = task_of("--dev", a, &path), free(o->dev_path[t]), o->dev_path[t] = mt_strdup(path); break;
    case O_SENT:
        if ((o->sentence_model = mt_sentence_kind_parse(a)) < 0) mt_die("--sentence-model %s: cls, mean or sbert-cnn-bilstm", a);
        break;
    case O_PAIR: if ((o->pair_model = mt_pair_model_parse(a)) < 0) mt_die("--pair-model %s: bi, cross or ensemble", a); break;
    case O_FILTERS: o->cnn_filters = (int)mt_parse_long("--cnn-filters", a, 1, 4096); break;
    case O_LSTM: o->lstm_hidden = (int)mt_parse_long("--lstm-hidden", a, 1, 4096); break;
    case O_EPOCHS: o->epochs = (int)mt_parse_long("--epochs", a, 1, 1000); break;
    case O_BATCH: o->batch_size = (int)mt_parse_long("--batch-size", a, 1, 4096); break;
    case O_BTOK: o->batch_tokens = (int)mt_parse_long("--batch-tokens", a, 1, 1 << 24); break;
    case O_WINDOW: o->window = (int)mt_parse_long("--window", a, 1, 1 << 24); break;
    case O_LR: o->lr = in_range("--lr", a, 0, 1); break;
    case O_WD: o->weight_decay = in_range("--weight-decay", a, 0, 1); break;
    case O_DROP: o->dropout = (float)in_range("--dropout", a, 0, 0.99); break;
    case O_WARM: o->warmup = in_range("--warmup", a, 0, 1e9); break;
    case O_SCHED_LR:
        if (strcmp(a, "constant") && strcmp(a, "linear")) mt_die("--lr-schedule %s: constant or linear", a);
        o->lr_linear = !strcmp(a, "linear");
        break;
    case O_CLIP: o->clip = in_range("--clip", a, 0, 1e9); break;
    case O_LLRD: o->llrd = in_range("--llrd", a, 0, 1); break;
    case O_SEED: o->seed = mt_parse_long("--seed", a, 0, 1L << 62); break;
    case O_PCGRAD: o->pcgrad = 1; break;
    case O_PARTIAL: o->partial_batch = (int)mt_parse_long("--partial-batch", a, 1, 4096); break;
    case O_REDUCE:
        if (strcmp(a, "mean") && strcmp(a, "sum")) mt_die("--pcgrad-reduce %s: mean or sum", a);
        o->pcgrad_sum = !strcmp(a, "sum");
        break;
    case O_SCHEDULE: parse_schedule(o, a); break;
    case O_MAXSTEPS: o->max_steps = mt_parse_long("--max-steps", a, 1, 1L << 40); break;
    case O_LIMIT: o->limit = mt_parse_long("--limit", a, 1, 1L << 40); break;
    default: return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    mt_train_options o;
    mt_train_defaults(&o);
    const char *resume = NULL;
    int c, recipe_given = 0;
    while ((c = getopt_long(argc, argv, "m:o:j:d:qh", OPTS, NULL)) != -1) {
        switch (c) {
        case 'o': free(o.out_dir), o.out_dir = mt_strdup(optarg); break;
        case O_RESUME: resume = optarg; break;
        case O_STOP: o.stop_after_steps = mt_parse_long("--stop-after-steps", optarg, 1, 1L << 40); break;
        case O_FAIL: o.fail_at_step = mt_parse_long("--fail-at-step", optarg, 1, 1L << 40); break;
        case 'j': o.threads = (int)mt_parse_long("--threads", optarg, 1, 1024); break;
        case 'd': o.device = optarg; break;
        case O_PRECISION: o.precision = optarg; break;
        case O_LOSS_SCALE: o.loss_scale = optarg; break;
        case O_LOSS_SCALE_INIT: o.loss_scale_init = mt_loss_scale_init_parse(optarg); break;
        case O_MAXMEM: o.max_memory = optarg; break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        default:
            if (!recipe_option(&o, c, optarg)) { fputs(USAGE, stderr); return 2; }
            recipe_given = 1;
        }
    }
    if (optind < argc) mt_die("unexpected argument '%s' (see --help)", argv[optind]);
    if (resume) {
        if (recipe_given || o.out_dir) mt_die("--resume takes the run's own options: give only --resume DIR (and -j, -d, --precision, --loss-scale, "
                   "--loss-scale-init, --max-memory, -q, --stop-after-steps, --fail-at-step)");
        int rc = mt_train_resume(resume, &o);
        mt_train_options_free(&o);
        return rc;
    }
    if (!o.model_dir) mt_die("--model DIR is required (see --help)");
    if (!o.out_dir) mt_die("-o OUTDIR is required (see --help)");
    int rc = mt_train(&o);
    mt_train_options_free(&o);
    return rc;
}
