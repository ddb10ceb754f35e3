// safetensors.c — see safetensors.h.
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "json.h"
#include "stream.h"  // mt_bf16_to_f32

const char *mt_st_dtype_name(mt_st_dtype d) {
    static const char *names[] = {"F32", "F16", "BF16", "I64"};
    return (unsigned)d < 4 ? names[d] : "?";
}

size_t mt_st_dtype_size(mt_st_dtype d) {
    static const size_t sizes[] = {4, 2, 2, 8};
    return (unsigned)d < 4 ? sizes[d] : 0;
}

static int dtype_from_name(const char *s, mt_st_dtype *out) {
    for (int d = 0; d < 4; d++)
        if (strcmp(s, mt_st_dtype_name((mt_st_dtype)d)) == 0) { *out = (mt_st_dtype)d; return 0; }
    return -1;
}

float mt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = h >> 10 & 31, man = h & 1023, u;
    if (exp == 31) u = sign | 0x7F800000u | man << 13;          // inf / nan
    else if (exp) u = sign | (exp + 112) << 23 | man << 13;     // normal
    else if (!man) u = sign;                                     // zero
    else {                                                       // subnormal: normalise
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 1024));
        u = sign | (uint32_t)(112 - e) << 23 | (man & 1023) << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void mt_st_to_f32(const mt_st_tensor *t, float *out) {
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {  // memcpy: the data area need not be aligned
        case MT_ST_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case MT_ST_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = mt_f16_to_f32(h); break; }
        case MT_ST_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = mt_bf16_to_f32(h); break; }
        case MT_ST_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (float)v; break; }
        }
    }
}

// ---- reading ------------------------------------------------------------------------

// Fills t from one header entry; data_size is the size of the data area.
static int parse_entry(const char *path, const char *name, const mt_json *v, size_t data_size,
                       mt_st_tensor *t, char *err, size_t errlen) {
    if (v->type != MT_JSON_OBJECT)
        return mt_fail(err, errlen, "%s: tensor '%s': header entry is not an object", path, name);
    const mt_json *dtype = mt_json_get(v, "dtype"), *shape = mt_json_get(v, "shape"),
                  *offs = mt_json_get(v, "data_offsets");
    if (!dtype || dtype->type != MT_JSON_STRING)
        return mt_fail(err, errlen, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    if (dtype_from_name(dtype->string, &t->dtype))
        return mt_fail(err, errlen, "%s: tensor '%s': unsupported dtype '%.16s' (F32, F16, BF16, I64 are)",
                        path, name, dtype->string);
    if (!shape || shape->type != MT_JSON_ARRAY || shape->len > MT_ST_MAX_DIMS)
        return mt_fail(err, errlen, "%s: tensor '%s': \"shape\" must be an array of at most %d dimensions",
                        path, name, MT_ST_MAX_DIMS);
    t->ndim = (int)shape->len;
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        const mt_json *s = &shape->items[d];
        if (s->type != MT_JSON_NUMBER || !s->is_integer || s->integer < 0 || s->integer > ((int64_t)1 << 40))
            return mt_fail(err, errlen, "%s: tensor '%s': dimension %d is not a valid size", path, name, d);
        t->shape[d] = s->integer;
        if (s->integer && numel > (UINT64_C(1) << 62) / (uint64_t)s->integer)
            return mt_fail(err, errlen, "%s: tensor '%s': shape overflows", path, name);
        numel *= (uint64_t)s->integer;
    }
    t->numel = (int64_t)numel;
    if (!offs || offs->type != MT_JSON_ARRAY || offs->len != 2)
        return mt_fail(err, errlen, "%s: tensor '%s': \"data_offsets\" must be [begin, end]", path, name);
    for (int i = 0; i < 2; i++)
        if (offs->items[i].type != MT_JSON_NUMBER || !offs->items[i].is_integer || offs->items[i].integer < 0)
            return mt_fail(err, errlen, "%s: tensor '%s': data offsets must be non-negative integers", path, name);
    uint64_t begin = (uint64_t)offs->items[0].integer, end = (uint64_t)offs->items[1].integer;
    if (begin > end || end > data_size)
        return mt_fail(err, errlen, "%s: tensor '%s': data offsets [%llu, %llu] outside the data area of %zu bytes "
                        "(truncated file?)", path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    if (numel > UINT64_MAX / 8 || numel * mt_st_dtype_size(t->dtype) != end - begin)
        return mt_fail(err, errlen, "%s: tensor '%s': shape × %s needs %llu bytes but data offsets span %llu",
                        path, name, mt_st_dtype_name(t->dtype),
                        (unsigned long long)(numel * mt_st_dtype_size(t->dtype)), (unsigned long long)(end - begin));
    t->nbytes = (size_t)(end - begin);
    t->offset = begin;
    return 0;
}

static int by_offset(const void *a, const void *b) {
    const mt_st_tensor *x = *(mt_st_tensor *const *)a, *y = *(mt_st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

// Two tensors may not share bytes (zero-size tensors occupy none).
static int check_overlaps(const mt_safetensors *st, char *err, size_t errlen) {
    if (st->n < 2) return 0;
    mt_st_tensor **order = mt_malloc(st->n * sizeof *order);
    for (int i = 0; i < st->n; i++) order[i] = &st->tensors[i];
    qsort(order, st->n, sizeof *order, by_offset);
    int rc = 0;
    const mt_st_tensor *prev = NULL;
    for (int i = 0; i < st->n && !rc; i++) {
        if (!order[i]->nbytes) continue;
        if (prev && order[i]->offset < prev->offset + prev->nbytes)
            rc = mt_fail(err, errlen, "%s: tensors '%s' and '%s' overlap in the data area", st->path,
                          prev->name, order[i]->name);
        prev = order[i];
    }
    free(order);
    return rc;
}

static int parse_header(mt_safetensors *st, const char *text, size_t len, size_t data_size,
                        char *err, size_t errlen) {
    char jerr[200];
    mt_json *root = mt_json_parse(text, len, jerr, sizeof jerr);
    if (!root) return mt_fail(err, errlen, "%s: header is not valid JSON: %s", st->path, jerr);
    int rc = 0;
    if (root->type != MT_JSON_OBJECT) rc = mt_fail(err, errlen, "%s: header is not a JSON object", st->path);
    st->tensors = mt_calloc(root->len ? root->len : 1, sizeof *st->tensors);
    for (size_t i = 0; i < root->len && !rc; i++) {
        if (strcmp(root->keys[i], "__metadata__") == 0) continue;
        mt_st_tensor *t = &st->tensors[st->n];
        rc = parse_entry(st->path, root->keys[i], &root->items[i], data_size, t, err, errlen);
        if (rc) break;
        t->name = mt_strdup(root->keys[i]);
        st->n++;
    }
    mt_json_free(root);
    return rc ? rc : check_overlaps(st, err, errlen);
}

int mt_safetensors_open(mt_safetensors *st, const char *path, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return mt_fail(err, errlen, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) { close(fd); return mt_fail(err, errlen, "%s: file of %zu bytes is too short for a safetensors header", path, size); }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return mt_fail(err, errlen, "%s: mmap: %s", path, strerror(errno));
    st->path = mt_strdup(path);
    st->map = map;
    st->map_size = size;
    const unsigned char *b = map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | b[i];
    int rc;
    if (header_len > MT_ST_MAX_HEADER)
        rc = mt_fail(err, errlen, "%s: header length %llu exceeds the %llu-byte limit (not a safetensors file?)",
                      path, (unsigned long long)header_len, (unsigned long long)MT_ST_MAX_HEADER);
    else if (header_len > size - 8)
        rc = mt_fail(err, errlen, "%s: header length %llu exceeds the file size %zu (truncated file?)", path,
                      (unsigned long long)header_len, size);
    else
        rc = parse_header(st, (const char *)b + 8, (size_t)header_len, size - 8 - (size_t)header_len, err, errlen);
    if (rc) { mt_safetensors_close(st); return rc; }
    for (int i = 0; i < st->n; i++) st->tensors[i].data = b + 8 + header_len + st->tensors[i].offset;
    return 0;
}

void mt_safetensors_close(mt_safetensors *st) {
    if (st->map) munmap(st->map, st->map_size);
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->path);
    memset(st, 0, sizeof *st);
}

const mt_st_tensor *mt_safetensors_find(const mt_safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

// ---- writing ------------------------------------------------------------------------

static int64_t write_numel(const mt_st_write_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

// The JSON header, padded with spaces to a multiple of 8 so the data area is aligned.
static char *build_header(const mt_st_write_tensor *tensors, int n, const char *const *meta,
                          size_t *out_len) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) mt_die("open_memstream: %s", strerror(errno));
    fputs("{\"__metadata__\":{\"format\":\"pt\"", f);
    for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2) {
        fputc(',', f);
        mt_json_write_string(f, meta[i]);
        fputc(':', f);
        mt_json_write_string(f, meta[i + 1]);
    }
    fputc('}', f);
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const mt_st_write_tensor *t = &tensors[i];
        uint64_t bytes = (uint64_t)write_numel(t) * 4;
        fputc(',', f);
        mt_json_write_string(f, t->name);
        fputs(":{\"dtype\":\"F32\",\"shape\":[", f);
        for (int d = 0; d < t->ndim; d++) fprintf(f, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        fprintf(f, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    fputc('}', f);
    while ((ftell(f)) % 8) fputc(' ', f);
    fclose(f);
    *out_len = len;
    return buf;
}

int mt_safetensors_write(const char *path, const mt_st_write_tensor *tensors, int n, char *err, size_t errlen) {
    return mt_safetensors_write_meta(path, tensors, n, NULL, err, errlen);
}

int mt_safetensors_write_meta(const char *path, const mt_st_write_tensor *tensors, int n,
                              const char *const *meta, char *err, size_t errlen) {
    for (int i = 0; meta && meta[i]; i += 2)
        if (!meta[i + 1] || !strcmp(meta[i], "format"))
            return mt_fail(err, errlen, "%s: metadata key '%s' without a value or reserved", path, meta[i]);
    for (int i = 0; i < n; i++) {
        if (tensors[i].ndim < 0 || tensors[i].ndim > MT_ST_MAX_DIMS)
            return mt_fail(err, errlen, "%s: tensor '%s': bad number of dimensions %d", path, tensors[i].name, tensors[i].ndim);
        for (int j = 0; j < i; j++)
            if (strcmp(tensors[i].name, tensors[j].name) == 0)
                return mt_fail(err, errlen, "%s: tensor name '%s' given twice", path, tensors[i].name);
    }
    size_t header_len;
    char *header = build_header(tensors, n, meta, &header_len);
    size_t tmp_len = strlen(path) + 32;
    char *tmp = mt_malloc(tmp_len);
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int rc = 0;
    if (!f) {
        rc = mt_fail(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
        int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, header_len, f) == header_len;
        for (int i = 0; i < n && ok; i++) {  // float32 is little-endian on every supported host
            size_t numel = (size_t)write_numel(&tensors[i]);
            ok = fwrite(tensors[i].data, 4, numel, f) == numel;
        }
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
        if (fclose(f) != 0) ok = 0;
        if (!ok) rc = mt_fail(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        else if (rename(tmp, path) != 0)
            rc = mt_fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        if (rc) unlink(tmp);
    }
    free(tmp);
    free(header);
    return rc;
}

int mt_safetensors_meta(const mt_safetensors *st, const char *key, char *out, size_t outlen) {
    const unsigned char *b = st->map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | b[i];
    char err[256];
    mt_json *root = mt_json_parse((const char *)b + 8, (size_t)header_len, err, sizeof err);
    const mt_json *v = mt_json_get(mt_json_get(root, "__metadata__"), key);
    int found = v && v->type == MT_JSON_STRING;
    if (found) snprintf(out, outlen, "%s", v->string);
    mt_json_free(root);
    return found;
}
