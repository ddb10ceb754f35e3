// stream.c — see stream.h for the format.
#include "stream.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common.h"

static const char MAGIC[8] = {'M', 'T', 'B', 'S', 'T', 'R', 'M', '\n'};
enum { TAG_RECORD = 'R', TAG_END = 'E', CHUNK = 1 << 16 };

// ---- metadata ----------------------------------------------------------------

void mt_meta_set(mt_meta *m, const char *key, const char *val) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], key) == 0) {
            free(m->val[i]);
            m->val[i] = mt_strdup(val);
            return;
        }
    if (m->n == MT_MAX_META) mt_die("too many metadata keys (max %d)", MT_MAX_META);
    m->key[m->n] = mt_strdup(key);
    m->val[m->n] = mt_strdup(val);
    m->n++;
}

const char *mt_meta_get(const mt_meta *m, const char *key) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], key) == 0) return m->val[i];
    return NULL;
}

void mt_meta_copy(mt_meta *dst, const mt_meta *src) {
    for (int i = 0; i < src->n; i++) mt_meta_set(dst, src->key[i], src->val[i]);
}

void mt_meta_free(mt_meta *m) {
    for (int i = 0; i < m->n; i++) {
        free(m->key[i]);
        free(m->val[i]);
    }
    m->n = 0;
}

// ---- records -------------------------------------------------------------------

size_t mt_dtype_size(mt_dtype d) { return d == MT_BF16 ? 2 : 4; }

const char *mt_dtype_name(mt_dtype d) {
    switch (d) {
    case MT_I32: return "i32";
    case MT_F32: return "f32";
    case MT_BF16: return "bf16";
    }
    return "?";
}

size_t mt_tensor_numel(const mt_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->dims[i];
    return n;
}

void mt_record_clear(mt_record *r) {
    r->n_labels = 0;
    r->n_tensors = 0;
    if (r->id) r->id[0] = 0;
}

void mt_record_free(mt_record *r) {
    for (int i = 0; i < MT_MAX_TENSORS; i++) free(r->t[i].data);
    free(r->id);
    memset(r, 0, sizeof *r);
}

static void set_id_n(mt_record *r, const char *id, size_t n) {
    if (n + 1 > r->id_cap) {
        r->id_cap = n + 64;
        r->id = mt_realloc(r->id, r->id_cap);
    }
    memcpy(r->id, id, n);
    r->id[n] = 0;
}

void mt_record_set_id(mt_record *r, const char *id) {
    size_t n = strlen(id);
    if (n > MT_MAX_ID) mt_die("record id longer than %d bytes", MT_MAX_ID);
    set_id_n(r, id, n);
}

static void copy_name(char dst[MT_MAX_NAME + 1], const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > MT_MAX_NAME) mt_die("bad tensor/label name '%s'", name);
    memcpy(dst, name, n + 1);
}

void mt_record_add_label(mt_record *r, const char *name, float value) {
    if (r->n_labels == MT_MAX_LABELS) mt_die("too many labels in one record");
    copy_name(r->label_name[r->n_labels], name);
    r->label[r->n_labels++] = value;
}

int mt_record_label(const mt_record *r, const char *name, float *value) {
    for (int i = 0; i < r->n_labels; i++)
        if (strcmp(r->label_name[i], name) == 0) {
            *value = r->label[i];
            return 1;
        }
    return 0;
}

static void tensor_reserve(mt_tensor *t) {
    size_t bytes = mt_tensor_numel(t) * mt_dtype_size(t->dtype);
    if (bytes > t->cap) {
        t->cap = bytes + bytes / 4 + 64;
        t->data = mt_realloc(t->data, t->cap);
    }
}

mt_tensor *mt_record_add(mt_record *r, const char *name, mt_dtype dtype, int ndim,
                         const int32_t *dims) {
    if (r->n_tensors == MT_MAX_TENSORS) mt_die("too many tensors in one record");
    if (ndim < 1 || ndim > MT_MAX_DIMS) mt_die("tensor '%s': %d dimensions", name, ndim);
    mt_tensor *t = &r->t[r->n_tensors++];
    copy_name(t->name, name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->dims[i] = dims[i];
    tensor_reserve(t);
    return t;
}

mt_tensor *mt_record_add1(mt_record *r, const char *name, mt_dtype dtype, int32_t n) {
    return mt_record_add(r, name, dtype, 1, &n);
}

mt_tensor *mt_record_add2(mt_record *r, const char *name, mt_dtype dtype, int32_t n0, int32_t n1) {
    int32_t d[2] = {n0, n1};
    return mt_record_add(r, name, dtype, 2, d);
}

mt_tensor *mt_record_add_copy(mt_record *r, const char *name, const mt_tensor *src) {
    mt_tensor *t = mt_record_add(r, name ? name : src->name, src->dtype, src->ndim, src->dims);
    memcpy(t->data, src->data, mt_tensor_numel(src) * mt_dtype_size(src->dtype));
    return t;
}

const mt_tensor *mt_record_get(const mt_record *r, const char *name) {
    for (int i = 0; i < r->n_tensors; i++)
        if (strcmp(r->t[i].name, name) == 0) return &r->t[i];
    return NULL;
}

uint16_t mt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mt_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// ---- little-endian helpers ------------------------------------------------------

static void put_u16(unsigned char *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}
static int host_is_le(void) {
    uint16_t one = 1;
    return *(unsigned char *)&one == 1;
}

// ---- writer -------------------------------------------------------------------------

struct mt_writer {
    mt_outfile out;
    z_stream z;
    uLong crc;
    long count;
    unsigned char in[CHUNK], zout[CHUNK];
    size_t n_in;
    const char *name;
};

static void w_deflate(mt_writer *w, int flush) {
    w->z.next_in = w->in;
    w->z.avail_in = (uInt)w->n_in;
    do {
        w->z.next_out = w->zout;
        w->z.avail_out = CHUNK;
        int rc = deflate(&w->z, flush);
        if (rc == Z_STREAM_ERROR) mt_die("%s: zlib deflate failed", w->name);
        size_t have = CHUNK - w->z.avail_out;
        if (have && fwrite(w->zout, 1, have, w->out.fp) != have)
            mt_die("%s: write error: %s", w->name, strerror(errno));
    } while (w->z.avail_out == 0);
    w->n_in = 0;
}

// Append bytes to the uncompressed payload; the crc covers them unless raw.
static void w_raw(mt_writer *w, const void *data, size_t n, int crc) {
    const unsigned char *p = data;
    while (n > 0) {
        size_t k = CHUNK - w->n_in < n ? CHUNK - w->n_in : n;
        memcpy(w->in + w->n_in, p, k);
        if (crc) w->crc = crc32(w->crc, p, (uInt)k);
        w->n_in += k;
        p += k;
        n -= k;
        if (w->n_in == CHUNK) w_deflate(w, Z_NO_FLUSH);
    }
}

static void w_bytes(mt_writer *w, const void *data, size_t n) { w_raw(w, data, n, 1); }

static void w_u8(mt_writer *w, unsigned v) { unsigned char b = (unsigned char)v; w_bytes(w, &b, 1); }
static void w_u16(mt_writer *w, uint16_t v) { unsigned char b[2]; put_u16(b, v); w_bytes(w, b, 2); }
static void w_u32(mt_writer *w, uint32_t v) { unsigned char b[4]; put_u32(b, v); w_bytes(w, b, 4); }
static void w_name(mt_writer *w, const char *s) {
    size_t n = strlen(s);
    w_u8(w, (unsigned)n);
    w_bytes(w, s, n);
}

// Element data in little-endian order, whatever the host.
static void w_elems(mt_writer *w, const void *data, size_t numel, size_t esize) {
    if (host_is_le()) {
        w_bytes(w, data, numel * esize);
        return;
    }
    const unsigned char *p = data;
    for (size_t i = 0; i < numel; i++) {
        unsigned char b[4];
        for (size_t j = 0; j < esize; j++) b[j] = p[i * esize + esize - 1 - j];
        w_bytes(w, b, esize);
    }
}

mt_writer *mt_writer_open(const char *path, const mt_meta *meta) {
    mt_writer *w = mt_calloc(1, sizeof *w);
    mt_outfile_open(&w->out, path, 1);
    w->name = w->out.path ? w->out.path : "stdout";
    // windowBits 15 + 16: gzip wrapper, so zcat and gzip -t accept the stream.
    if (deflateInit2(&w->z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        mt_die("zlib deflateInit failed");
    w->crc = crc32(0L, Z_NULL, 0);
    w_bytes(w, MAGIC, sizeof MAGIC);
    w_u32(w, MT_STREAM_VERSION);
    w_u32(w, (uint32_t)meta->n);
    for (int i = 0; i < meta->n; i++) {
        size_t kn = strlen(meta->key[i]), vn = strlen(meta->val[i]);
        if (kn > 65535) mt_die("metadata key too long");
        w_u16(w, (uint16_t)kn);
        w_bytes(w, meta->key[i], kn);
        w_u32(w, (uint32_t)vn);
        w_bytes(w, meta->val[i], vn);
    }
    return w;
}

void mt_writer_put(mt_writer *w, const mt_record *r) {
    const char *id = r->id ? r->id : "";
    size_t idn = strlen(id);
    w_u8(w, TAG_RECORD);
    w_u32(w, (uint32_t)idn);
    w_bytes(w, id, idn);
    w_u8(w, (unsigned)r->n_labels);
    for (int i = 0; i < r->n_labels; i++) {
        w_name(w, r->label_name[i]);
        w_elems(w, &r->label[i], 1, 4);
    }
    w_u8(w, (unsigned)r->n_tensors);
    for (int i = 0; i < r->n_tensors; i++) {
        const mt_tensor *t = &r->t[i];
        w_name(w, t->name);
        w_u8(w, t->dtype);
        w_u8(w, (unsigned)t->ndim);
        for (int d = 0; d < t->ndim; d++) w_u32(w, (uint32_t)t->dims[d]);
        w_elems(w, t->data, mt_tensor_numel(t), mt_dtype_size(t->dtype));
    }
    w->count++;
}

long mt_writer_count(const mt_writer *w) { return w->count; }

void mt_writer_close(mt_writer *w) {
    unsigned char b[8];
    w_u8(w, TAG_END);
    put_u64(b, (uint64_t)w->count);
    w_bytes(w, b, 8);
    put_u32(b, (uint32_t)w->crc);  // crc of everything before this field
    w_raw(w, b, 4, 0);
    w_deflate(w, Z_FINISH);
    deflateEnd(&w->z);
    mt_outfile_commit(&w->out);
    free(w);
}

// ---- reader -------------------------------------------------------------------------

struct mt_reader {
    FILE *fp;
    char *path;
    int die;
    int eof_in;      // compressed input exhausted
    int z_ended;     // inflate reported the end of the last gzip member
    z_stream z;
    unsigned char zin[CHUNK], buf[CHUNK];
    size_t pos, len;  // unread decompressed bytes: buf[pos..len)
    uLong crc;
    long count;
    mt_meta meta;
    char err[512];
    int failed;
};

static char open_err[512];

static int r_fail(mt_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int r_fail(mt_reader *r, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof r->err, "%s: %s", r->path, msg);
    r->failed = 1;
    if (r->die) mt_die("%s", r->err);
    return -1;
}

// Decompress the next bytes into buf (called when buf is used up). Returns the number of
// bytes made available, 0 at the clean end of the compressed data, -1 on error.
static int r_fill(mt_reader *r) {
    r->pos = r->len = 0;
    for (;;) {
        if (r->z.avail_in == 0 && !r->eof_in) {
            size_t n = fread(r->zin, 1, CHUNK, r->fp);
            if (n == 0) {
                if (ferror(r->fp)) return r_fail(r, "read error: %s", strerror(errno));
                r->eof_in = 1;
            }
            r->z.next_in = r->zin;
            r->z.avail_in = (uInt)n;
        }
        if (r->z_ended) {
            if (r->z.avail_in == 0) return 0;
            inflateReset(&r->z);  // another gzip member follows (concatenation is legal gzip)
            r->z_ended = 0;
        }
        if (r->z.avail_in == 0) return r_fail(r, "truncated: compressed data ends early (no trailer)");
        r->z.next_out = r->buf;
        r->z.avail_out = CHUNK;
        int rc = inflate(&r->z, Z_NO_FLUSH);
        r->len = CHUNK - r->z.avail_out;
        if (rc == Z_STREAM_END) r->z_ended = 1;
        else if (rc == Z_DATA_ERROR) return r_fail(r, "corrupt compressed data (%s)", r->z.msg ? r->z.msg : "zlib");
        else if (rc != Z_OK && rc != Z_BUF_ERROR) return r_fail(r, "zlib error %d", rc);
        if (r->len > 0) return (int)r->len;
    }
}

// Read exactly n decompressed bytes (n <= CHUNK) into dst, updating the crc.
static int r_bytes(mt_reader *r, void *dst, size_t n, int crc) {
    unsigned char *d = dst;
    while (n > 0) {
        if (r->pos == r->len) {
            int got = r_fill(r);
            if (got < 0) return -1;
            if (got == 0) return r_fail(r, "truncated: stream ends inside record %ld (no trailer)", r->count + 1);
        }
        size_t k = r->len - r->pos < n ? r->len - r->pos : n;
        memcpy(d, r->buf + r->pos, k);
        if (crc) r->crc = crc32(r->crc, d, (uInt)k);
        r->pos += k;
        d += k;
        n -= k;
    }
    return 0;
}

static int r_big(mt_reader *r, void *dst, size_t n) {
    unsigned char *d = dst;
    while (n > 0) {
        size_t k = n < CHUNK ? n : CHUNK;
        if (r_bytes(r, d, k, 1)) return -1;
        d += k;
        n -= k;
    }
    return 0;
}

static int r_u8(mt_reader *r, unsigned *v) {
    unsigned char b;
    if (r_bytes(r, &b, 1, 1)) return -1;
    *v = b;
    return 0;
}
static int r_u16(mt_reader *r, uint16_t *v) {
    unsigned char b[2];
    if (r_bytes(r, b, 2, 1)) return -1;
    *v = get_u16(b);
    return 0;
}
static int r_u32(mt_reader *r, uint32_t *v) {
    unsigned char b[4];
    if (r_bytes(r, b, 4, 1)) return -1;
    *v = get_u32(b);
    return 0;
}
static int r_name(mt_reader *r, char out[MT_MAX_NAME + 1], const char *what) {
    unsigned n;
    if (r_u8(r, &n)) return -1;
    if (n == 0 || n > MT_MAX_NAME)
        return r_fail(r, "record %ld: bad %s name length %u", r->count + 1, what, n);
    if (r_bytes(r, out, n, 1)) return -1;
    out[n] = 0;
    return 0;
}

static char *r_text(mt_reader *r, size_t n) {
    if (n > (1u << 20)) {
        r_fail(r, "header: metadata entry of %zu bytes is too large", n);
        return NULL;
    }
    char *s = mt_malloc(n + 1);
    if (r_big(r, s, n)) {
        free(s);
        return NULL;
    }
    s[n] = 0;
    return s;
}

static int r_header(mt_reader *r) {
    unsigned char magic[8];
    if (r_bytes(r, magic, 8, 1)) return -1;
    if (memcmp(magic, MAGIC, 8) != 0) return r_fail(r, "not an mtbert stream (bad magic)");
    uint32_t version, n_meta;
    if (r_u32(r, &version)) return -1;
    if (version != MT_STREAM_VERSION)
        return r_fail(r, "unsupported stream version %u (this build reads %d)", version, MT_STREAM_VERSION);
    if (r_u32(r, &n_meta)) return -1;
    if (n_meta > MT_MAX_META) return r_fail(r, "header: %u metadata entries (max %d)", n_meta, MT_MAX_META);
    for (uint32_t i = 0; i < n_meta; i++) {
        uint16_t kn;
        uint32_t vn;
        if (r_u16(r, &kn)) return -1;
        char *k = r_text(r, kn);
        if (!k) return -1;
        if (r_u32(r, &vn)) { free(k); return -1; }
        char *v = r_text(r, vn);
        if (!v) { free(k); return -1; }
        mt_meta_set(&r->meta, k, v);
        free(k);
        free(v);
    }
    return 0;
}

mt_reader *mt_reader_open(const char *path, int die_on_error) {
    mt_reader *r = mt_calloc(1, sizeof *r);
    r->die = die_on_error;
    int is_stdin = !path || strcmp(path, "-") == 0;
    r->path = mt_strdup(is_stdin ? "stdin" : path);
    r->fp = is_stdin ? stdin : fopen(path, "rb");
    if (!r->fp) {
        snprintf(open_err, sizeof open_err, "%s: cannot open: %s", path, strerror(errno));
        free(r->path);
        free(r);
        if (die_on_error) mt_die("%s", open_err);
        return NULL;
    }
    // windowBits 15 + 16: gzip only; a plain (uncompressed) file fails with a clear message.
    if (inflateInit2(&r->z, 15 + 16) != Z_OK) mt_die("zlib inflateInit failed");
    r->crc = crc32(0L, Z_NULL, 0);
    if (r_header(r)) {
        snprintf(open_err, sizeof open_err, "%s", r->err);
        mt_reader_close(r);
        return NULL;
    }
    return r;
}

const char *mt_reader_open_error(void) { return open_err; }
const mt_meta *mt_reader_meta(const mt_reader *r) { return &r->meta; }
const char *mt_reader_error(const mt_reader *r) { return r->err; }
long mt_reader_count(const mt_reader *r) { return r->count; }
const char *mt_reader_path(const mt_reader *r) { return r->path; }

static int r_trailer(mt_reader *r) {
    unsigned char b[8];
    if (r_bytes(r, b, 8, 1)) return -1;
    uint64_t n = get_u64(b);
    uLong want = r->crc;
    if (r_bytes(r, b, 4, 0)) return -1;
    if (n != (uint64_t)r->count)
        return r_fail(r, "trailer says %llu records but %ld were read", (unsigned long long)n, r->count);
    if (get_u32(b) != (uint32_t)want) return r_fail(r, "checksum mismatch: the stream is corrupt");
    // Nothing may follow the trailer.
    if (r->pos < r->len) return r_fail(r, "unexpected data after the trailer");
    int more = r_fill(r);
    if (more < 0) return -1;
    if (more > 0) return r_fail(r, "unexpected data after the trailer");
    return 0;
}

static int r_tensor(mt_reader *r, mt_record *rec) {
    long rn = r->count + 1;
    if (rec->n_tensors == MT_MAX_TENSORS) return r_fail(r, "record %ld: too many tensors", rn);
    mt_tensor *t = &rec->t[rec->n_tensors];
    unsigned dtype, ndim;
    if (r_name(r, t->name, "tensor") || r_u8(r, &dtype) || r_u8(r, &ndim)) return -1;
    if (dtype != MT_I32 && dtype != MT_F32 && dtype != MT_BF16)
        return r_fail(r, "record %ld: tensor '%s' has unknown dtype %u", rn, t->name, dtype);
    if (ndim < 1 || ndim > MT_MAX_DIMS)
        return r_fail(r, "record %ld: tensor '%s' has %u dimensions", rn, t->name, ndim);
    size_t numel = 1;
    for (unsigned d = 0; d < ndim; d++) {
        uint32_t u;
        if (r_u32(r, &u)) return -1;
        int32_t v = (int32_t)u;
        if (v < 0 || v > MT_MAX_DIM)
            return r_fail(r, "record %ld: tensor '%s' dimension %u is %d (allowed 0..%d)", rn,
                          t->name, d, v, MT_MAX_DIM);
        t->dims[d] = v;
        numel *= (size_t)v;
        if (numel > MT_MAX_NUMEL)
            return r_fail(r, "record %ld: tensor '%s' is too large", rn, t->name);
    }
    t->dtype = (mt_dtype)dtype;
    t->ndim = (int)ndim;
    tensor_reserve(t);
    size_t es = mt_dtype_size(t->dtype);
    if (r_big(r, t->data, numel * es)) return -1;
    if (!host_is_le()) {
        unsigned char *p = t->data;
        for (size_t i = 0; i < numel; i++)
            for (size_t j = 0; j < es / 2; j++) {
                unsigned char c = p[i * es + j];
                p[i * es + j] = p[i * es + es - 1 - j];
                p[i * es + es - 1 - j] = c;
            }
    }
    rec->n_tensors++;
    return 0;
}

int mt_reader_next(mt_reader *r, mt_record *rec) {
    if (r->failed) return -1;
    mt_record_clear(rec);
    unsigned tag;
    if (r_u8(r, &tag)) return -1;
    if (tag == TAG_END) return r_trailer(r) ? -1 : 0;
    long rn = r->count + 1;
    if (tag != TAG_RECORD) return r_fail(r, "record %ld: unknown tag 0x%02x (corrupt stream)", rn, tag);
    uint32_t idn;
    if (r_u32(r, &idn)) return -1;
    if (idn > MT_MAX_ID) return r_fail(r, "record %ld: id of %u bytes is too long", rn, idn);
    if (idn + 1 > rec->id_cap) {
        rec->id_cap = idn + 64;
        rec->id = mt_realloc(rec->id, rec->id_cap);
    }
    if (r_bytes(r, rec->id, idn, 1)) return -1;
    rec->id[idn] = 0;
    unsigned nl, nt;
    if (r_u8(r, &nl)) return -1;
    if (nl > MT_MAX_LABELS) return r_fail(r, "record %ld: %u labels (max %d)", rn, nl, MT_MAX_LABELS);
    for (unsigned i = 0; i < nl; i++) {
        unsigned char b[4];
        if (r_name(r, rec->label_name[i], "label") || r_bytes(r, b, 4, 1)) return -1;
        uint32_t u = get_u32(b);
        memcpy(&rec->label[i], &u, 4);
    }
    rec->n_labels = (int)nl;
    if (r_u8(r, &nt)) return -1;
    for (unsigned i = 0; i < nt; i++)
        if (r_tensor(r, rec)) return -1;
    r->count++;
    return 1;
}

void mt_reader_expect(const mt_reader *r, const char *key, const char *want, const char *what) {
    const char *have = mt_meta_get(&r->meta, key);
    if (!have) mt_die("%s: stream header has no '%s' (%s)", r->path, key, what);
    if (strcmp(have, want) != 0)
        mt_die("%s: %s mismatch: stream has %s=%s but this stage expects %s", r->path, what, key,
               have, want);
}

void mt_reader_close(mt_reader *r) {
    if (!r) return;
    inflateEnd(&r->z);
    if (r->fp && r->fp != stdin) fclose(r->fp);
    mt_meta_free(&r->meta);
    free(r->path);
    free(r);
}
