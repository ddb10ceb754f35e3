// memplan.c — see memplan.h.
#include "memplan.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "common.h"
#include "workspace.h"

void mt_mem_plan_add(mt_mem_plan *p, const char *name, size_t bytes) {
    if (!bytes) return;
    if (p->n == MT_MEM_MAX_ITEMS) mt_die("memory plan: more than %d items", MT_MEM_MAX_ITEMS);
    p->item[p->n++] = (mt_mem_item){name, bytes};
    p->total += bytes;
}

void mt_mem_plan_encoder(mt_mem_plan *p, const mt_bert_config *cfg, const mt_backend *be, const mt_mem_run *r) {
    memset(p, 0, sizeof *p);
    size_t P = mt_bert_count_params(cfg, 1), pb = P * sizeof(float);
    mt_mem_plan_add(p, "parameters", pb);
    mt_mem_plan_add(p, "activations", mt_bert_arena_bytes(cfg, r->max_tokens, r->max_batch, r->max_len, r->training));
    if (r->training) {
        mt_mem_plan_add(p, "gradients", pb);
        mt_mem_plan_add(p, "AdamW moments", r->moments ? 2 * pb : 0);
        mt_mem_plan_add(p, "PCGrad task gradients", (size_t)r->task_grads * pb);
        mt_mem_plan_add(p, "activation gradients", mt_bert_grad_arena_bytes(cfg, r->max_tokens));
        mt_mem_plan_add(p, "dhidden", (size_t)r->max_tokens * cfg->hidden_size * sizeof(float));  // mt_bert_dhidden
    }
    mt_workspace_shape s = mt_bert_workspace_shape(cfg, r->max_tokens, r->max_batch, r->max_len, r->training, P);
    s.operand_floats = r->operand_floats, s.max_padded = r->max_padded;
    if (r->training && r->gram_n > s.gram_n) s.gram_n = r->gram_n;  // the scratch holds the largest gram
    size_t ws[MT_WS_COUNT];
    be->workspace_bytes(&s, ws);
    for (int i = 0; i < MT_WS_COUNT; i++) mt_mem_plan_add(p, mt_workspace_names[i], ws[i]);
}

void mt_mem_plan_taskmodel(mt_mem_plan *p, const mt_taskmodel *tm, const mt_backend *be, const mt_mem_run *r,
                           int max_examples) {
    size_t sb = tm->n_sent * sizeof(float);  // as mt_taskmodel_to_backend and the trainer allocate
    mt_mem_plan_add(p, "sentence model parameters", sb);
    mt_mem_plan_add(p, "sentence model activations", mt_tm_acts_backend_bytes(tm, be, max_examples, r->max_tokens));
    if (!r->training) return;
    mt_mem_plan_add(p, "sentence model gradients", sb);
    mt_mem_plan_add(p, "sentence model AdamW moments", r->moments ? 2 * sb : 0);
    mt_mem_plan_add(p, "sentence model PCGrad copies", (size_t)r->task_grads * sb);
}

size_t mt_parse_size(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double unit = 1;
    switch (*end) {
    case 'k': case 'K': unit = 1024.0, end++; break;
    case 'm': case 'M': unit = 1048576.0, end++; break;
    case 'g': case 'G': unit = 1073741824.0, end++; break;
    case 't': case 'T': unit = 1099511627776.0, end++; break;
    }
    if (unit > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    double bytes = v * unit;
    if (errno || end == s || *end || !(bytes >= 1) || bytes > 9.0e18)
        mt_die("option %s: '%s' is not a size (e.g. 20G, 512M, 1000000)", opt, s);
    return (size_t)bytes;
}

size_t mt_max_memory(const char *option_value) {
    if (option_value) return mt_parse_size("--max-memory", option_value);
    const char *env = getenv("MTBERT_MAX_MEMORY");
    return env && *env ? mt_parse_size("MTBERT_MAX_MEMORY", env) : 0;
}

const char *mt_format_bytes(size_t bytes, char *buf, size_t n) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) v /= 1024.0, u++;
    if (u == 0) snprintf(buf, n, "%zu B", bytes);
    else snprintf(buf, n, "%.*f %s", v < 10 ? 2 : 1, v, unit[u]);
    return buf;
}

// The three largest items, "activations 1.2 GiB, parameters 90 MiB, ..." into buf.
static void largest_items(const mt_mem_plan *p, char *buf, size_t n) {
    int used[MT_MEM_MAX_ITEMS] = {0};
    size_t k = 0;
    buf[0] = 0;
    for (int r = 0; r < 3 && r < p->n; r++) {
        int best = -1;
        for (int i = 0; i < p->n; i++)
            if (!used[i] && (best < 0 || p->item[i].bytes > p->item[best].bytes)) best = i;
        used[best] = 1;
        char b[32];
        k += (size_t)snprintf(buf + k, k < n ? n - k : 0, "%s%s %s", r ? ", " : "", p->item[best].name,
                              mt_format_bytes(p->item[best].bytes, b, sizeof b));
        if (k >= n) break;
    }
}

void mt_mem_plan_check(const mt_mem_plan *p, const mt_backend *be, size_t cap, int verbose, const char *lower,
                       size_t held) {
    char total[32], avail[32], top[256];
    mt_format_bytes(p->total, total, sizeof total);
    largest_items(p, top, sizeof top);
    mt_log("memory plan: %s on %s (%s)", total, be->name, top);
    if (verbose)
        for (int i = 0; i < p->n; i++) {
            char b[32];
            mt_log("  %-30s %s", p->item[i].name, mt_format_bytes(p->item[i].bytes, b, sizeof b));
        }
    size_t free_b = be->memory_free();
    free_b = free_b > SIZE_MAX - held ? SIZE_MAX : free_b + held;
    size_t limit = cap && cap < free_b ? cap : free_b;
    if (p->total <= limit) return;
    mt_format_bytes(limit, avail, sizeof avail);
    mt_die("the run needs %s (%zu bytes) of %s memory but %s is available (%s); largest: %s; %s", total, p->total,
           be->name, avail, limit == cap ? "--max-memory / MTBERT_MAX_MEMORY" : "free on the device", top, lower);
}
