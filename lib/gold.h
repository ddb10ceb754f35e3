// gold.h — gold labels from a task TSV, joined to predictions by example id.
//
// The TSV is as the data directory has it: a header line, tab-separated, no quoting. Ids are
// the `id` column, or the 1-based data line number when there is none (as tokenize does).
#ifndef MT_GOLD_H
#define MT_GOLD_H

#include <stddef.h>

typedef struct {
    int n;
    char **ids;
    double *value;
    int *slot;     // open-addressing table of indexes into ids (-1 empty)
    size_t n_slots;
} mt_gold;

// Reads column `col` of path. Returns 0, or -1 with a message in err (g left empty).
int mt_gold_read_tsv(const char *path, const char *col, mt_gold *g, char *err, size_t errcap);
// Builds g from ids and values (NULL: each id's position). Returns -1, or the position of the
// first id that repeats an earlier one.
int mt_gold_init(mt_gold *g, char *const *ids, const double *values, int n);
int mt_gold_find(const mt_gold *g, const char *id);  // index, or -1
// out[i] = gold value of ids[i]. Every prediction id must be in g and every id of g among the
// predictions; otherwise -1 with err naming how many are missing on each side and the first few.
int mt_gold_join(const mt_gold *g, char *const *ids, int n, double *out, char *err, size_t errcap);
void mt_gold_free(mt_gold *g);

#endif
