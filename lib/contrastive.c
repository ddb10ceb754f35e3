// contrastive.c — mining contrastive examples from token records and shards (see
// contrastive.h). The training loop is in contrastive_train.c.
#include "contrastive.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

// Stream of the SST same-label pairing: (label, this site), beside rng.h's sequential sites.
#define MT_SITE_SST_PAIRS 0xFF000100u
#define SST_MAX_LABELS 16

// ---- sequences and examples ------------------------------------------------------------------

int mt_seq_pool_add(mt_seq_pool *p, const int32_t *ids, int len) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->start = mt_realloc(p->start, (size_t)p->cap * sizeof *p->start);
        p->len = mt_realloc(p->len, (size_t)p->cap * sizeof *p->len);
    }
    if (p->n_tok + (size_t)len > p->cap_tok) {
        p->cap_tok = 2 * (p->n_tok + (size_t)len) + 1024;
        p->tok = mt_realloc(p->tok, p->cap_tok * sizeof *p->tok);
    }
    memcpy(p->tok + p->n_tok, ids, (size_t)len * sizeof *ids);
    p->start[p->n] = p->n_tok;
    p->len[p->n] = len;
    p->n_tok += (size_t)len;
    return p->n++;
}

static const int32_t *seq_ids(const mt_seq_pool *p, int i) { return p->tok + p->start[i]; }

static int seq_equal(const mt_seq_pool *p, int i, int j) {
    return p->len[i] == p->len[j] && !memcmp(seq_ids(p, i), seq_ids(p, j), (size_t)p->len[i] * sizeof(int32_t));
}

static void add_example(mt_cl_data *d, int anchor, int positive, int negative) {
    if (d->n_ex == d->cap_ex) {
        d->cap_ex = d->cap_ex ? 2 * d->cap_ex : 256;
        d->ex = mt_realloc(d->ex, (size_t)d->cap_ex * sizeof *d->ex);
    }
    d->ex[d->n_ex++] = (mt_cl_example){anchor, positive, negative};
}

void mt_cl_data_free(mt_cl_data *d) {
    free(d->seqs.tok), free(d->seqs.start), free(d->seqs.len), free(d->ex);
    memset(d, 0, sizeof *d);
}

int mt_cl_example_tokens(const mt_cl_data *d, int i) {
    const mt_cl_example *e = &d->ex[i];
    return d->seqs.len[e->anchor] + d->seqs.len[e->positive] + (e->negative >= 0 ? d->seqs.len[e->negative] : 0);
}

static const char *SOURCE_NAME[] = {"qqp", "sts", "sst", "nli"};

int mt_cl_source_parse(const char *name) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, SOURCE_NAME[i])) return i;
    return -1;
}

const char *mt_cl_source_name(mt_cl_source s) { return SOURCE_NAME[s]; }

mt_cl_mine_options mt_cl_mine_defaults(void) {
    return (mt_cl_mine_options){4.0, 0, 0.0f, 2.0f};
}

// ---- the miner ----------------------------------------------------------------------------

typedef struct {
    int32_t premise;          // sequence index of the premise (first record's copy)
    int32_t *ent, *con;       // hypothesis sequences, in record order
    int n_ent, n_con, cap_ent, cap_con;
} nli_group;

struct mt_cl_miner {
    mt_cl_source src;
    mt_cl_mine_options o;
    mt_cl_data *d;
    mt_cl_mine_stats st;
    int first_example;
    double max_score;                   // STS: the largest similarity seen (for messages)
    int32_t *sst[SST_MAX_LABELS];       // SST: sentences per label, in record order
    int n_sst[SST_MAX_LABELS], cap_sst[SST_MAX_LABELS];
    nli_group *groups;                  // NLI: premises in order of first appearance
    int n_groups, cap_groups;
    int32_t *slots;                     // NLI: open-addressing table, group index + 1 (0 empty)
    size_t n_slots;
};

mt_cl_miner *mt_cl_miner_new(mt_cl_source src, const mt_cl_mine_options *o, mt_cl_data *d) {
    mt_cl_miner *m = mt_calloc(1, sizeof *m);
    m->src = src, m->o = *o, m->d = d;
    m->first_example = d->n_ex;
    m->max_score = -INFINITY;
    return m;
}

void mt_cl_miner_free(mt_cl_miner *m) {
    if (!m) return;
    for (int l = 0; l < SST_MAX_LABELS; l++) free(m->sst[l]);
    for (int g = 0; g < m->n_groups; g++) free(m->groups[g].ent), free(m->groups[g].con);
    free(m->groups), free(m->slots), free(m);
}

static void push(int32_t **a, int *n, int *cap, int32_t v) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        *a = mt_realloc(*a, (size_t)*cap * sizeof **a);
    }
    (*a)[(*n)++] = v;
}

// The record's 1-D i32 tensor `name`, or NULL with a message.
static const mt_tensor *get_ids(const mt_record *r, const char *name, char *err, size_t n) {
    const mt_tensor *t = mt_record_get(r, name);
    if (!t) snprintf(err, n, "record '%s' has no %s tensor (tokenize a %s stream)", r->id, name,
                     strcmp(name, "ids_b") ? "token" : "--pair");
    else if (t->dtype != MT_I32 || t->ndim != 1 || t->dims[0] < 1)
        snprintf(err, n, "record '%s': %s is not a non-empty 1-D i32 tensor", r->id, name), t = NULL;
    return t;
}

static int get_label(const mt_record *r, const char *name, float *v, char *err, size_t n) {
    if (mt_record_label(r, name, v)) return 0;
    char have[256] = "";
    for (int l = 0; l < r->n_labels; l++)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", l ? "," : "", r->label_name[l]);
    snprintf(err, n, "record '%s' has no label '%s' (it has: %s); tokenize with --label %s", r->id, name,
             r->n_labels ? have : "none", name);
    return -1;
}

static int add_seq(mt_cl_miner *m, const mt_tensor *t) {
    return mt_seq_pool_add(&m->d->seqs, t->data, t->dims[0]);
}

// QQP duplicates and STS pairs above the threshold: (ids_a, ids_b).
static int add_pair_record(mt_cl_miner *m, const mt_record *r, char *err, size_t n) {
    const char *label = m->src == MT_CL_QQP ? "is_duplicate" : "similarity";
    float v;
    if (get_label(r, label, &v, err, n)) return -1;
    const mt_tensor *a = get_ids(r, "ids_a", err, n), *b = a ? get_ids(r, "ids_b", err, n) : NULL;
    if (!b) return -1;
    if (v > m->max_score) m->max_score = v;
    int positive = m->src == MT_CL_QQP ? v == 1.0f : v > m->o.min_score;
    if (positive) add_example(m->d, add_seq(m, a), add_seq(m, b), -1);
    return 0;
}

static int add_sst_record(mt_cl_miner *m, const mt_record *r, char *err, size_t n) {
    float v;
    if (get_label(r, "label", &v, err, n)) return -1;
    const mt_tensor *a = get_ids(r, "ids_a", err, n);
    if (!a) return -1;
    int l = (int)v;
    if (v != (float)l || l < 0 || l >= SST_MAX_LABELS) {
        snprintf(err, n, "record '%s': label %g is not a class 0..%d", r->id, v, SST_MAX_LABELS - 1);
        return -1;
    }
    push(&m->sst[l], &m->n_sst[l], &m->cap_sst[l], add_seq(m, a));
    return 0;
}

// The group of the premise with these ids, created if new.
static nli_group *premise_group(mt_cl_miner *m, const int32_t *ids, int len) {
    if (2 * (size_t)(m->n_groups + 1) > m->n_slots) {  // keep the table at most half full
        size_t ns = m->n_slots ? 2 * m->n_slots : 1024;
        free(m->slots);
        m->slots = mt_calloc(ns, sizeof *m->slots);
        m->n_slots = ns;
        for (int g = 0; g < m->n_groups; g++) {
            const mt_seq_pool *p = &m->d->seqs;
            uint64_t h = mt_fnv1a64(MT_FNV_INIT, seq_ids(p, m->groups[g].premise), (size_t)p->len[m->groups[g].premise] * 4);
            size_t s = h & (ns - 1);
            while (m->slots[s]) s = (s + 1) & (ns - 1);
            m->slots[s] = g + 1;
        }
    }
    uint64_t h = mt_fnv1a64(MT_FNV_INIT, ids, (size_t)len * 4);
    size_t s = h & (m->n_slots - 1);
    for (; m->slots[s]; s = (s + 1) & (m->n_slots - 1)) {
        nli_group *g = &m->groups[m->slots[s] - 1];
        const mt_seq_pool *p = &m->d->seqs;
        if (p->len[g->premise] == len && !memcmp(seq_ids(p, g->premise), ids, (size_t)len * 4)) return g;
    }
    if (m->n_groups == m->cap_groups) {
        m->cap_groups = m->cap_groups ? 2 * m->cap_groups : 256;
        m->groups = mt_realloc(m->groups, (size_t)m->cap_groups * sizeof *m->groups);
    }
    nli_group *g = &m->groups[m->n_groups++];
    memset(g, 0, sizeof *g);
    g->premise = mt_seq_pool_add(&m->d->seqs, ids, len);
    m->slots[s] = m->n_groups;
    return g;
}

static int add_nli_record(mt_cl_miner *m, const mt_record *r, char *err, size_t n) {
    float v;
    if (get_label(r, "label", &v, err, n)) return -1;
    const mt_tensor *a = get_ids(r, "ids_a", err, n), *b = a ? get_ids(r, "ids_b", err, n) : NULL;
    if (!b) return -1;
    nli_group *g = premise_group(m, a->data, a->dims[0]);  // every premise counts, for stats
    if (v == m->o.nli_entail) {
        m->st.entailments++;
        push(&g->ent, &g->n_ent, &g->cap_ent, add_seq(m, b));
    } else if (v == m->o.nli_contra) {
        m->st.contradictions++;
        push(&g->con, &g->n_con, &g->cap_con, add_seq(m, b));
    }
    return 0;
}

int mt_cl_miner_add(mt_cl_miner *m, const mt_record *r, char *err, size_t errlen) {
    m->st.records++;
    switch (m->src) {
    case MT_CL_QQP:
    case MT_CL_STS: return add_pair_record(m, r, err, errlen);
    case MT_CL_SST: return add_sst_record(m, r, err, errlen);
    case MT_CL_NLI: return add_nli_record(m, r, err, errlen);
    }
    return -1;
}

// Per label: a permutation under (seed, label); consecutive sentences pair up, skipping a
// sentence identical to the one waiting for a partner.
static void finish_sst(mt_cl_miner *m) {
    for (int l = 0; l < SST_MAX_LABELS; l++) {
        int n = m->n_sst[l];
        if (!n) continue;
        uint32_t *perm = mt_malloc((size_t)n * sizeof *perm);
        mt_rng rng;
        mt_rng_init(&rng, m->o.seed, (uint32_t)l, MT_SITE_SST_PAIRS);
        mt_rng_permutation(&rng, perm, (size_t)n);
        int waiting = -1;
        for (int i = 0; i < n; i++) {
            int s = m->sst[l][perm[i]];
            if (waiting < 0) waiting = s;
            else if (seq_equal(&m->d->seqs, waiting, s)) m->st.unpaired++;
            else add_example(m->d, waiting, s, -1), waiting = -1;
        }
        m->st.unpaired += waiting >= 0;
        free(perm);
    }
}

static void finish_nli(mt_cl_miner *m) {
    m->st.premises = m->n_groups;
    for (int i = 0; i < m->n_groups; i++) {
        const nli_group *g = &m->groups[i];
        if (!g->n_ent || !g->n_con) {
            m->st.skipped_premises++;
            continue;
        }
        for (int k = 0; k < g->n_ent; k++) add_example(m->d, g->premise, g->ent[k], g->con[k % g->n_con]);
    }
}

void mt_cl_miner_finish(mt_cl_miner *m, mt_cl_mine_stats *st) {
    if (m->src == MT_CL_SST) finish_sst(m);
    if (m->src == MT_CL_NLI) finish_nli(m);
    m->st.positives = m->d->n_ex - m->first_example;
    m->st.hard_negatives = m->src == MT_CL_NLI ? m->st.positives : 0;
    *st = m->st;
}

// ---- shards ----------------------------------------------------------------------------------

// Why a shard gave no example, in words.
static void die_no_positives(const mt_cl_miner *m, const char *path) {
    const mt_cl_mine_stats *s = &m->st;
    switch (m->src) {
    case MT_CL_QQP:
        mt_die("%s: no positive pairs: %ld records, none with is_duplicate = 1", path, s->records);
    case MT_CL_STS:
        mt_die("%s: no positive pairs: %ld records, none with similarity > %g (the largest is %g)", path,
               s->records, m->o.min_score, s->records ? m->max_score : 0.0);
    case MT_CL_SST:
        mt_die("%s: no positive pairs: %ld records, no two different sentences share a label", path, s->records);
    case MT_CL_NLI:
        mt_die("%s: no positive pairs: %ld records (%ld entailment = %g, %ld contradiction = %g) over %ld premises, "
               "none with both an entailment and a contradiction hypothesis",
               path, s->records, s->entailments, m->o.nli_entail, s->contradictions, m->o.nli_contra, s->premises);
    }
}

static void check_shard_header(const mt_reader *r, mt_cl_source src, const char *vocab_fp) {
    const mt_meta *meta = mt_reader_meta(r);
    const char *kind = mt_meta_get(meta, "kind"), *mode = mt_meta_get(meta, "mode");
    const char *path = mt_reader_path(r);
    if (!kind || strcmp(kind, "tokens"))
        mt_die("%s: not a token stream (kind=%s); simcse reads the output of tokenize", path, kind ? kind : "none");
    if (src != MT_CL_SST && (!mode || strcmp(mode, "pair")))
        mt_die("%s: not a pair token stream (mode=%s); tokenize the %s data with --pair A,B", path,
               mode ? mode : "none", mt_cl_source_name(src));
    mt_reader_expect(r, "vocab_fp", vocab_fp, "vocabulary (tokenize with the same --model)");
}

void mt_cl_load_shard(mt_cl_data *d, mt_cl_source src, const char *path, const char *vocab_fp,
                      const mt_cl_mine_options *o, long limit, mt_cl_mine_stats *st) {
    mt_reader *r = mt_reader_open(path, 1);
    check_shard_header(r, src, vocab_fp);
    mt_cl_miner *m = mt_cl_miner_new(src, o, d);
    mt_record rec = {0};
    char err[512];
    while ((limit <= 0 || m->st.records < limit) && mt_reader_next(r, &rec) == 1)
        if (mt_cl_miner_add(m, &rec, err, sizeof err)) mt_die("%s: %s", path, err);
    mt_cl_miner_finish(m, st);
    if (st->positives == 0) die_no_positives(m, path);
    mt_record_free(&rec);
    mt_cl_miner_free(m);
    mt_reader_close(r);
}
