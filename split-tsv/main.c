// split-tsv — carve a deterministic validation split out of a TSV file, by id and seed.
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "tsv.h"

static const char *USAGE =
    "usage: split-tsv --train-out FILE --val-out FILE [options] [FILE.tsv]\n"
    "\n"
    "Splits a TSV (with header) into a training and a validation part. A row goes to the\n"
    "validation part when a hash of the seed and its id falls under the fraction, so the\n"
    "split is the same on every machine, does not depend on row order, and a row keeps its\n"
    "side when other rows are added or removed. Both outputs keep the header and are\n"
    "written atomically. Counts go to stderr.\n"
    "\n"
    "options:\n"
    "  -t, --train-out FILE   training rows\n"
    "  -v, --val-out FILE     validation rows\n"
    "  -f, --val-fraction X   share of rows for validation (default 0.1)\n"
    "  -s, --seed N           split seed (default 0)\n"
    "  -i, --id COL           id column (default id; the 1-based data line number if absent)\n"
    "  -q, --quiet            no counts on stderr\n"
    "  -h, --help             this text\n"
    "\n"
    "examples:\n"
    "  bin/split-tsv --seed 0 --train-out runs/sst-train.tsv --val-out runs/sst-val.tsv \\\n"
    "      data/sst-train.tsv\n";

// The row's side: 1 for validation. FNV-1a of "seed:id" keeps it independent of order.
static int is_validation(const char *id, long seed, double fraction) {
    char key[64];
    int n = snprintf(key, sizeof key, "%ld:", seed);
    uint64_t h = mt_fnv1a64(MT_FNV_INIT, key, (size_t)n);
    h = mt_fnv1a64(h, id, strlen(id));
    return (double)(h % 1000000) < fraction * 1e6;
}

static void write_row(FILE *f, const mt_tsv *t) {
    for (int i = 0; i < t->n_fields; i++) {
        if (i) fputc('\t', f);
        fwrite(t->field[i], 1, t->field_len[i], f);
    }
    fputc('\n', f);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    const char *train_path = NULL, *val_path = NULL, *id_col = "id";
    double fraction = 0.1;
    long seed = 0;
    static const struct option opts[] = {
        {"train-out", required_argument, 0, 't'}, {"val-out", required_argument, 0, 'v'},
        {"val-fraction", required_argument, 0, 'f'}, {"seed", required_argument, 0, 's'},
        {"id", required_argument, 0, 'i'},         {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "t:v:f:s:i:qh", opts, NULL)) != -1) {
        switch (c) {
        case 't': train_path = optarg; break;
        case 'v': val_path = optarg; break;
        case 'f': fraction = mt_parse_double("--val-fraction", optarg); break;
        case 's': seed = mt_parse_long("--seed", optarg, 0, 1L << 40); break;
        case 'i': id_col = optarg; break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (!train_path || !val_path) mt_die("--train-out and --val-out are required (see --help)");
    if (fraction < 0 || fraction > 1) mt_die("--val-fraction must be in [0, 1]");
    if (argc - optind > 1) mt_die("expected at most one input file (see --help)");
    mt_tsv *t = mt_tsv_open(optind < argc ? argv[optind] : "-");
    int id = mt_tsv_col(t, id_col);
    mt_outfile out[2];
    mt_outfile_open(&out[0], train_path, 0);
    mt_outfile_open(&out[1], val_path, 0);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < t->n_cols; i++) fprintf(out[k].fp, "%s%s", i ? "\t" : "", t->col_name[i]);
    for (int k = 0; k < 2; k++) fputc('\n', out[k].fp);
    long count[2] = {0, 0};
    int rc;
    while ((rc = mt_tsv_next(t)) != 0) {
        if (rc < 0) mt_die("%s", mt_tsv_error(t));
        char line_id[32];
        int side = is_validation(mt_tsv_row_id(t, id, line_id), seed, fraction);
        write_row(out[side].fp, t);
        count[side]++;
    }
    mt_outfile_commit(&out[0]);
    mt_outfile_commit(&out[1]);
    mt_log("%ld training rows -> %s, %ld validation rows -> %s", count[0], train_path, count[1], val_path);
    mt_tsv_close(t);
    return 0;
}
