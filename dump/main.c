// dump — print an mtbert stream as JSON lines, or check that it is intact.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"
#include "stream.h"

static const char *USAGE =
    "usage: dump [options] [STREAM]\n"
    "\n"
    "Reads an mtbert tensor stream (default: stdin) and writes one JSON object per record\n"
    "on stdout: {\"id\": ..., \"labels\": {...}, \"tensors\": {name: nested array}}.\n"
    "Every stream is verified to its trailer (count and checksum); a damaged stream is an\n"
    "error with a non-zero exit.\n"
    "\n"
    "options:\n"
    "  --header        first print the header as {\"header\": {key: value, ...}}\n"
    "  --header-only   print only the header (still verifies the whole stream)\n"
    "  --check         print nothing but \"N records OK\" on stderr\n"
    "  --precision N   significant digits for float values (default 7)\n"
    "  -q, --quiet     no log lines on stderr\n"
    "  -h, --help      this text\n"
    "\n"
    "examples:\n"
    "  bin/tokenize --text sentence --label label --model models/all-MiniLM-L6-v2 \\\n"
    "      data/sst-train.tsv | bin/dump | head -3\n"
    "  bin/dump --check runs/sst.tok\n"
    "  bin/dump --header-only runs/sst.emb\n";

static void print_values(const mt_tensor *t, int dim, size_t *idx, int prec) {
    fputc('[', stdout);
    for (int32_t i = 0; i < t->dims[dim]; i++) {
        if (i) fputc(',', stdout);
        if (dim + 1 < t->ndim) {
            print_values(t, dim + 1, idx, prec);
            continue;
        }
        size_t k = (*idx)++;
        if (t->dtype == MT_I32) printf("%d", ((const int32_t *)t->data)[k]);
        else {
            float v = t->dtype == MT_F32 ? ((const float *)t->data)[k]
                                         : mt_bf16_to_f32(((const uint16_t *)t->data)[k]);
            printf("%.*g", prec, v);
        }
    }
    fputc(']', stdout);
}

static void print_record(const mt_record *r, int prec) {
    fputs("{\"id\":", stdout);
    mt_json_write_string(stdout, r->id);
    fputs(",\"labels\":{", stdout);
    for (int i = 0; i < r->n_labels; i++) {
        if (i) fputc(',', stdout);
        mt_json_write_string(stdout, r->label_name[i]);
        printf(":%.*g", prec, r->label[i]);
    }
    fputs("},\"tensors\":{", stdout);
    for (int i = 0; i < r->n_tensors; i++) {
        const mt_tensor *t = &r->t[i];
        if (i) fputc(',', stdout);
        mt_json_write_string(stdout, t->name);
        fputc(':', stdout);
        size_t idx = 0;
        print_values(t, 0, &idx, prec);
    }
    fputs("}}\n", stdout);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    int header = 0, header_only = 0, check = 0, prec = 7;
    static const struct option opts[] = {
        {"header", no_argument, 0, 'H'}, {"header-only", no_argument, 0, 'O'},
        {"check", no_argument, 0, 'c'},  {"precision", required_argument, 0, 'p'},
        {"quiet", no_argument, 0, 'q'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'H': header = 1; break;
        case 'O': header = header_only = 1; break;
        case 'c': check = 1; break;
        case 'p': prec = (int)mt_parse_long("--precision", optarg, 1, 17); break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (argc - optind > 1) mt_die("expected at most one stream argument (see --help)");
    mt_reader *r = mt_reader_open(optind < argc ? argv[optind] : "-", 1);
    if (header && !check) {
        const mt_meta *m = mt_reader_meta(r);
        fputs("{\"header\":{", stdout);
        for (int i = 0; i < m->n; i++) {
            if (i) fputc(',', stdout);
            mt_json_write_string(stdout, m->key[i]);
            fputc(':', stdout);
            mt_json_write_string(stdout, m->val[i]);
        }
        fputs("}}\n", stdout);
    }
    mt_record rec = {0};
    while (mt_reader_next(r, &rec) == 1)
        if (!check && !header_only) print_record(&rec, prec);
    if (check) fprintf(stderr, "%s: %ld records OK\n", mt_reader_path(r), mt_reader_count(r));
    mt_record_free(&rec);
    mt_reader_close(r);
    if (fflush(stdout) != 0) mt_die("write error on stdout");
    return 0;
}
