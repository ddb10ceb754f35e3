// embed — token stream → sentence embeddings (or token states) with a BERT encoder.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "device.h"
#include "memplan.h"
#include "embedder.h"

static const char *USAGE =
    "usage: embed --model DIR [options] [TOKENS]\n"
    "\n"
    "Reads a token stream from `tokenize` (default: stdin) and writes, keyed by the same ids\n"
    "with labels carried through, one embedding record per input record:\n"
    "  single sentences: emb_a [H]\n"
    "  pairs:            emb_a [H], emb_b [H] (each sentence alone, bi-encoder) and\n"
    "                    cls_ab [H] (last-layer [CLS] of the joint sequence, cross-encoder)\n"
    "With --tokens: states_a [n,H] (states_b, states_ab) instead, for sentence models.\n"
    "With --pool sbert-cnn-bilstm and a pcgrad-train checkpoint: emb_a, emb_b [D] from its\n"
    "trained sentence model (mean | CNN max-pool | BiLSTM finals; header emb_dim = D).\n"
    "Sequences are sorted by length inside a window and batched under a token budget, so\n"
    "padding costs nothing; output order is the input order.\n"
    "\n"
    "options:\n"
    "  -m, --model DIR         Hugging Face BERT directory (config.json, vocab.txt,\n"
    "                          model.safetensors); the stream's vocab_fp must match its vocab\n"
    "  -p, --pool MODE         cls | mean | max (default mean, over real tokens, as SBERT),\n"
    "                          or sbert-cnn-bilstm: the sentence model that pcgrad-train\n"
    "                          --sentence-model sbert-cnn-bilstm trained (DIR/heads.safetensors)\n"
    "  -n, --normalize         L2-normalise pooled embeddings\n"
    "  -t, --tokens            write last-layer token states instead of pooled vectors\n"
    "  -x, --no-cross          pairs: skip the joint sequence (no cls_ab), a third faster\n"
    "  -b, --batch-tokens N    real tokens per batch (default 4096)\n"
    "  -B, --batch-size N      sequences per batch at most (default 64; 1 = no batching)\n"
    "  -w, --window N          records sorted by length together (default 1024)\n"
    "  -j, --threads N         CPU threads (default: all cores)\n"
    "  -d, --device DEV        auto | cpu | cuda (default auto: CUDA when a GPU is present)\n"
    "  -P, --precision P       CUDA matrix products: fp32 (default, matches the CPU), tf32,\n"
    "                          bf16 or fp16 (16-bit operands, fp32 accumulation, as autocast)\n"
    "  -M, --max-memory SIZE   fail up front when the run's memory (planned once from the\n"
    "                          batch bounds) exceeds SIZE (e.g. 20G, 512M; default\n"
    "                          $MTBERT_MAX_MEMORY, else the device's free memory)\n"
    "  -o, --output FILE       write FILE (atomically) instead of stdout\n"
    "  -q, --quiet             no progress on stderr\n"
    "  -h, --help              this text\n"
    "\n"
    MT_DEVICE_ENV_HELP
    "\n"
    "examples:\n"
    "  M=models/all-MiniLM-L6-v2\n"
    "  bin/tokenize --model $M --pair sentence1,sentence2 --label similarity data/sts-train.tsv \\\n"
    "    | bin/embed --model $M | bin/heads --task sts --zero-shot | bin/evaluate\n"
    "  bin/tokenize --model $M --text sentence data/sst-train.tsv -o sst.tok\n"
    "  bin/embed --model $M --pool cls --normalize sst.tok | bin/dump | head -1\n"
    "  bin/embed --model $M --device cuda --precision bf16 sst.tok -o sst.emb\n"
    "  bin/embed --model runs/sbert/best --pool sbert-cnn-bilstm sst.tok \\\n"
    "    | bin/heads --model runs/sbert/best --task sst | bin/evaluate\n";

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    mt_embed_options o = mt_embed_defaults();
    const char *model_dir = NULL, *device = "auto", *out_path = "-", *precision = NULL, *max_memory = NULL;
    int threads = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},        {"pool", required_argument, 0, 'p'},
        {"normalize", no_argument, 0, 'n'},          {"tokens", no_argument, 0, 't'},
        {"no-cross", no_argument, 0, 'x'},
        {"batch-tokens", required_argument, 0, 'b'}, {"batch-size", required_argument, 0, 'B'},
        {"window", required_argument, 0, 'w'},       {"threads", required_argument, 0, 'j'},
        {"device", required_argument, 0, 'd'},       {"output", required_argument, 0, 'o'},
        {"precision", required_argument, 0, 'P'},   {"max-memory", required_argument, 0, 'M'},
        {"quiet", no_argument, 0, 'q'},              {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:p:ntxb:B:w:j:d:P:M:o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': o.pool = mt_embed_parse_pool(optarg); break;
        case 'n': o.normalize = 1; break;
        case 't': o.tokens = 1; break;
        case 'x': o.no_cross = 1; break;
        case 'b': o.batch_tokens = (int)mt_parse_long("--batch-tokens", optarg, 1, 1 << 24); break;
        case 'B': o.batch_size = (int)mt_parse_long("--batch-size", optarg, 1, 1 << 16); break;
        case 'w': o.window = (int)mt_parse_long("--window", optarg, 1, 1 << 20); break;
        case 'j': threads = (int)mt_parse_long("--threads", optarg, 1, 1024); break;
        case 'd': device = optarg; break;
        case 'P': precision = optarg; break;
        case 'M': max_memory = optarg; break;
        case 'o': out_path = optarg; break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (!model_dir) mt_die("--model DIR is required (see --help)");
    if (argc - optind > 1) mt_die("expected at most one input stream (see --help)");
    o.max_memory = mt_max_memory(max_memory);
    const mt_backend *be = mt_backend_select(device);
    mt_backend_set_precision(be, precision);
    mt_embedder *e = mt_embedder_open(model_dir, be, threads, &o);
    mt_embed_stream(e, optind < argc ? argv[optind] : "-", out_path);
    mt_embedder_close(e);
    return 0;
}
