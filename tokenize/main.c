// tokenize — TSV rows to a stream of BERT WordPiece ids (the first stage of every pipeline).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "stream.h"
#include "tokenizer.h"
#include "tsv.h"

static const char *USAGE =
    "usage: tokenize [options] [FILE.tsv]\n"
    "\n"
    "Reads a TSV file with a header line (default: stdin) and writes an mtbert token stream\n"
    "on stdout: per row, the example id, its labels and the WordPiece ids of its text,\n"
    "identical to Hugging Face's BertTokenizer (uncased vocabulary).\n"
    "  --text COL   ids_a = [CLS] text [SEP]\n"
    "  --pair A,B   ids_a = [CLS] a [SEP], ids_b = [CLS] b [SEP] (each alone, bi-encoder) and\n"
    "               ids_ab = [CLS] a [SEP] b [SEP] with types_ab 0/1 (cross-encoder)\n"
    "\n"
    "options:\n"
    "  --model DIR         model directory; its vocab.txt is used\n"
    "  --vocab FILE        vocab.txt to use (instead of --model)\n"
    "  --text COL          single-sentence mode: column COL\n"
    "  --pair COL1,COL2    sentence-pair mode: columns COL1 and COL2\n"
    "  --label COL[,COL]   label column(s), stored as float32 (repeatable, at most 8)\n"
    "  --label-map MAP     text labels to numbers, e.g. entailment=0,neutral=1,contradiction=2\n"
    "  --id COL            id column (default: 'id' if present, else the data line number)\n"
    "  --max-len N         at most N tokens per sequence, [CLS]/[SEP] included; pairs are\n"
    "                      truncated longest-first (default 512, at least 4)\n"
    "  --skip-bad          skip malformed rows, reporting each and their count on stderr\n"
    "                      (default: the first bad row is an error)\n"
    "  -o, --output FILE   write the stream to FILE (complete or not at all) instead of stdout\n"
    "  -q, --quiet         no progress or log lines on stderr\n"
    "  -h, --help          this text\n"
    "\n"
    "examples:\n"
    "  bin/tokenize --model models/all-MiniLM-L6-v2 --text sentence --label label \\\n"
    "      data/sst-train.tsv | bin/dump | head -2\n"
    "  bin/tokenize --model models/all-MiniLM-L6-v2 --pair sentence1,sentence2 \\\n"
    "      --label similarity --max-len 128 -o sts.tok data/sts-train.tsv\n"
    "  bin/tokenize --model models/all-MiniLM-L6-v2 --pair premise,hypothesis --label label \\\n"
    "      --label-map entailment=0,neutral=1,contradiction=2 data/nli-sick.tsv | bin/dump --check\n";

#define MAX_MAP 64

typedef struct {
    const char *model_dir, *vocab_path, *text_col, *pair_cols, *id_col, *out_path, *in_path;
    const char *label_name[MT_MAX_LABELS];
    int n_labels;
    char *map_key[MAX_MAP];
    float map_val[MAX_MAP];
    int n_map;
    long max_len;
    int skip_bad;
} options;

// The column indexes resolved against the header.
typedef struct {
    int a, b;  // b < 0 in single mode
    int id;    // < 0: use the data line number
    int label[MT_MAX_LABELS];
} columns;

static void add_labels(options *o, char *list) {
    for (char *s = strtok(list, ","); s; s = strtok(NULL, ",")) {
        if (o->n_labels == MT_MAX_LABELS) mt_die("at most %d label columns", MT_MAX_LABELS);
        if (strlen(s) > MT_MAX_NAME) mt_die("--label: name '%s' is too long", s);
        o->label_name[o->n_labels++] = s;
    }
}

static void parse_label_map(options *o, char *list) {
    for (char *s = strtok(list, ","); s; s = strtok(NULL, ",")) {
        char *eq = strchr(s, '=');
        if (!eq || eq == s) mt_die("--label-map: expected NAME=VALUE, got '%s'", s);
        if (o->n_map == MAX_MAP) mt_die("--label-map: at most %d entries", MAX_MAP);
        *eq = '\0';
        o->map_key[o->n_map] = s;
        o->map_val[o->n_map++] = (float)mt_parse_double("--label-map", eq + 1);
    }
}

static void parse_options(int argc, char **argv, options *o) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"vocab", required_argument, 0, 'v'},
        {"text", required_argument, 0, 't'},   {"pair", required_argument, 0, 'p'},
        {"label", required_argument, 0, 'l'},  {"label-map", required_argument, 0, 'L'},
        {"id", required_argument, 0, 'i'},     {"max-len", required_argument, 0, 'n'},
        {"skip-bad", no_argument, 0, 's'},     {"output", required_argument, 0, 'o'},
        {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->max_len = 512;
    int c;
    while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_dir = optarg; break;
        case 'v': o->vocab_path = optarg; break;
        case 't': o->text_col = optarg; break;
        case 'p': o->pair_cols = optarg; break;
        case 'l': add_labels(o, optarg); break;
        case 'L': parse_label_map(o, optarg); break;
        case 'i': o->id_col = optarg; break;
        case 'n': o->max_len = mt_parse_long("--max-len", optarg, 4, MT_MAX_DIM); break;
        case 's': o->skip_bad = 1; break;
        case 'o': o->out_path = optarg; break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); exit(0);
        default: fputs(USAGE, stderr); exit(2);
        }
    }
    if (argc - optind > 1) mt_die("expected at most one input file (see --help)");
    o->in_path = optind < argc ? argv[optind] : "-";
    if (!!o->text_col == !!o->pair_cols) mt_die("give exactly one of --text COL or --pair A,B");
    if (!o->model_dir == !o->vocab_path) mt_die("give exactly one of --model DIR or --vocab FILE");
}

static void resolve_columns(const mt_tsv *tsv, const options *o, columns *c) {
    if (o->text_col) {
        c->a = mt_tsv_require_col(tsv, o->text_col);
        c->b = -1;
    } else {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", o->pair_cols);
        char *comma = strchr(buf, ',');
        if (!comma || comma == buf || !comma[1] || strchr(comma + 1, ','))
            mt_die("--pair: expected two column names as A,B, got '%s'", o->pair_cols);
        *comma = '\0';
        c->a = mt_tsv_require_col(tsv, buf);
        c->b = mt_tsv_require_col(tsv, comma + 1);
    }
    c->id = o->id_col ? mt_tsv_require_col(tsv, o->id_col) : mt_tsv_col(tsv, "id");
    for (int i = 0; i < o->n_labels; i++) c->label[i] = mt_tsv_require_col(tsv, o->label_name[i]);
}

// A label value: a number, or a text mapped by --label-map. Returns 0 if neither.
static int parse_label(const options *o, const char *s, float *v) {
    for (int i = 0; i < o->n_map; i++)
        if (!strcmp(s, o->map_key[i])) {
            *v = o->map_val[i];
            return 1;
        }
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end) return 0;
    *v = (float)d;
    return 1;
}

static void put_ids(mt_record *rec, const char *name, const mt_ids *ids) {
    mt_tensor *t = mt_record_add1(rec, name, MT_I32, (int32_t)ids->n);
    memcpy(t->data, ids->v, ids->n * sizeof *ids->v);
}

typedef struct {
    mt_tokenizer *tok;
    mt_ids a, b, enc, types;
    mt_record rec;
} work;

// Fills w->rec from the current row. Returns 0 (with msg) if a label does not parse.
static int build_record(work *w, const options *o, const columns *c, const mt_tsv *tsv,
                        char *msg, size_t msg_size) {
    mt_record *rec = &w->rec;
    mt_record_clear(rec);
    char line_id[32];
    mt_record_set_id(rec, mt_tsv_row_id(tsv, c->id, line_id));
    for (int i = 0; i < o->n_labels; i++) {
        float v;
        if (!parse_label(o, tsv->field[c->label[i]], &v)) {
            snprintf(msg, msg_size, "%s:%ld: label '%s' in column '%s' is not a number%s",
                     strcmp(tsv->path, "-") ? tsv->path : "stdin", tsv->line_no,
                     tsv->field[c->label[i]], o->label_name[i],
                     o->n_map ? " nor a --label-map name" : " (use --label-map for text labels)");
            return 0;
        }
        mt_record_add_label(rec, o->label_name[i], v);
    }
    w->a.n = 0;
    mt_tokenize(w->tok, tsv->field[c->a], tsv->field_len[c->a], &w->a);
    mt_encode_single(w->tok, &w->a, (size_t)o->max_len, &w->enc);
    put_ids(rec, "ids_a", &w->enc);
    if (c->b < 0) return 1;
    w->b.n = 0;
    mt_tokenize(w->tok, tsv->field[c->b], tsv->field_len[c->b], &w->b);
    mt_encode_single(w->tok, &w->b, (size_t)o->max_len, &w->enc);
    put_ids(rec, "ids_b", &w->enc);
    mt_encode_pair(w->tok, &w->a, &w->b, (size_t)o->max_len, &w->enc, &w->types);
    put_ids(rec, "ids_ab", &w->enc);
    put_ids(rec, "types_ab", &w->types);
    return 1;
}

// Number of data lines of a regular file (for the progress ETA); 0 if unknown.
static long count_data_lines(const char *path) {
    if (!strcmp(path, "-")) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[1 << 16];
    size_t n;
    long lines = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (char *p = buf; (p = memchr(p, '\n', (size_t)(buf + n - p))); p++) lines++;
    fclose(f);
    return lines > 0 ? lines - 1 : 0;
}

static mt_writer *open_output(const options *o, const char *vocab, const char *labels) {
    mt_meta meta = {0};
    char fp[17], max_len[32];
    mt_file_fingerprint(vocab, fp);
    snprintf(max_len, sizeof max_len, "%ld", o->max_len);
    mt_meta_set(&meta, "kind", "tokens");
    mt_meta_set(&meta, "producer", "tokenize 0.1");
    mt_meta_set(&meta, "source", strcmp(o->in_path, "-") ? o->in_path : "stdin");
    mt_meta_set(&meta, "vocab_fp", fp);
    mt_meta_set(&meta, "mode", o->text_col ? "single" : "pair");
    mt_meta_set(&meta, "max_len", max_len);
    mt_meta_set(&meta, "labels", labels);
    mt_writer *w = mt_writer_open(o->out_path ? o->out_path : "-", &meta);
    mt_meta_free(&meta);
    return w;
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    options o;
    parse_options(argc, argv, &o);
    char vocab[4096];
    if (o.vocab_path) snprintf(vocab, sizeof vocab, "%s", o.vocab_path);
    else snprintf(vocab, sizeof vocab, "%s/vocab.txt", o.model_dir);
    if (access(vocab, R_OK) != 0) mt_die("%s: cannot read the vocabulary file", vocab);

    mt_tsv *tsv = mt_tsv_open(o.in_path);
    columns cols;
    resolve_columns(tsv, &o, &cols);
    char labels[MT_MAX_LABELS * (MT_MAX_NAME + 1) + 1] = "";
    for (int i = 0; i < o.n_labels; i++) {
        if (i) strcat(labels, ",");
        strcat(labels, o.label_name[i]);
    }
    work w = {.tok = mt_tokenizer_load(vocab)};
    mt_writer *out = open_output(&o, vocab, labels);

    mt_progress prog;
    mt_progress_start(&prog, "tokenize", count_data_lines(o.in_path));
    long skipped = 0;
    char msg[600];
    int rc;
    while ((rc = mt_tsv_next(tsv)) != 0) {
        int ok = rc > 0 && build_record(&w, &o, &cols, tsv, msg, sizeof msg);
        if (rc < 0) snprintf(msg, sizeof msg, "%s", mt_tsv_error(tsv));
        if (!ok) {
            if (!o.skip_bad) mt_die("%s", msg);
            if (!mt_quiet) fprintf(stderr, "%s: skipped: %s\n", mt_prog, msg);
            skipped++;
            continue;
        }
        mt_writer_put(out, &w.rec);
        mt_progress_add(&prog, 1);
    }
    mt_progress_done(&prog);
    if (skipped) fprintf(stderr, "%s: skipped %ld bad row%s of %s\n", mt_prog, skipped,
                         skipped == 1 ? "" : "s", strcmp(o.in_path, "-") ? o.in_path : "stdin");
    long written = mt_writer_count(out);
    mt_writer_close(out);
    mt_log("%ld records written", written);
    mt_tsv_close(tsv);
    mt_tokenizer_free(w.tok);
    mt_ids_free(&w.a);
    mt_ids_free(&w.b);
    mt_ids_free(&w.enc);
    mt_ids_free(&w.types);
    mt_record_free(&w.rec);
    return 0;
}
