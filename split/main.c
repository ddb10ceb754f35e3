// split — carve a validation split out of a TSV, deterministically by seed.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *USAGE =
    "usage: split --train OUT.tsv --val OUT.tsv [--seed S] [--val-frac F] IN.tsv\n"
    "\n"
    "Copies each data row of IN.tsv (header kept in both) to the validation file when\n"
    "  FNV-1a-64(seed as 8 little-endian bytes, then the row's id) / 2^64 < F\n"
    "and to the training file otherwise. The id is the `id` column when the header's first\n"
    "column is `id`, else the 1-based data line number. So the split depends only on the ids\n"
    "and the seed: the same on every machine, and a row keeps its side when others are\n"
    "added or removed. Outputs are written atomically (temporary name, then rename).\n"
    "\n"
    "options:\n"
    "  --train FILE      rows for training\n"
    "  --val FILE        rows for validation\n"
    "  --seed S          split seed (default 0)\n"
    "  --val-frac F      expected share of rows in the validation file (default 0.1)\n"
    "  -h, --help        this text\n"
    "\n"
    "examples:\n"
    "  bin/split --seed 0 --train sst-tr.tsv --val sst-val.tsv data/sst-train.tsv\n"
    "  bin/split --seed 1 --val-frac 0.2 --train sts-tr.tsv --val - data/sts-train.tsv | wc -l\n";

static int goes_to_val(uint64_t seed, const char *id, size_t n, double frac) {
    unsigned char s[8];
    for (int i = 0; i < 8; i++) s[i] = (unsigned char)(seed >> (8 * i));
    uint64_t h = mt_fnv1a64(mt_fnv1a64(MT_FNV_INIT, s, 8), id, n);
    return (double)(h >> 11) * 0x1p-53 < frac;
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    const char *train_path = NULL, *val_path = NULL;
    uint64_t seed = 0;
    double frac = 0.1;
    static const struct option opts[] = {{"train", required_argument, 0, 't'}, {"val", required_argument, 0, 'v'},
                                         {"seed", required_argument, 0, 's'},  {"val-frac", required_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't': train_path = optarg; break;
        case 'v': val_path = optarg; break;
        case 's': seed = (uint64_t)mt_parse_long("--seed", optarg, 0, 1L << 62); break;
        case 'f': frac = mt_parse_double("--val-frac", optarg); break;
        case 'h': fputs(USAGE, stdout); return 0;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (!train_path || !val_path || argc - optind != 1) mt_die("need --train, --val and one input TSV (see --help)");
    if (!(frac >= 0 && frac <= 1)) mt_die("--val-frac must be in [0, 1]");
    FILE *in = fopen(argv[optind], "r");
    if (!in) mt_die("%s: cannot open", argv[optind]);
    mt_outfile tr, va;
    mt_outfile_open(&tr, train_path, 0);
    mt_outfile_open(&va, val_path, 0);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, in);
    if (len <= 0) mt_die("%s: empty file (a header line is required)", argv[optind]);
    int id_col = strncmp(line, "id\t", 3) == 0;
    fputs(line, tr.fp), fputs(line, va.fp);
    long row = 0, n_val = 0;
    while ((len = getline(&line, &cap, in)) > 0) {
        char num[32];
        const char *id = num;
        size_t n;
        row++;
        if (id_col) n = strcspn(line, "\t\n"), id = line;
        else n = (size_t)snprintf(num, sizeof num, "%ld", row);
        int val = goes_to_val(seed, id, n, frac);
        n_val += val;
        fputs(line, val ? va.fp : tr.fp);
    }
    free(line);
    fclose(in);
    mt_outfile_commit(&tr);
    mt_outfile_commit(&va);
    mt_log("%ld rows: %ld train, %ld validation (seed %llu)", row, row - n_val, n_val, (unsigned long long)seed);
    return 0;
}
