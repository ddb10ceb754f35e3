// heads_io.c — see heads_io.h.
#include "heads_io.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"

#define MAX_HEADER (16 << 20)  // a head's header is tiny; refuse absurd lengths early

// ---- writing ------------------------------------------------------------------------

static size_t tensor_bytes(const mt_hio_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->dims[d];
    return n * 4;
}

// Builds the JSON header into a memory buffer (open_memstream) so its length is known.
static char *header_json(const mt_hio_file *f, size_t *len) {
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    if (!m) mt_die("open_memstream: %s", strerror(errno));
    size_t off = 0;
    fputc('{', m);
    for (int i = 0; i < f->n; i++) {
        const mt_hio_tensor *t = &f->t[i];
        mt_json_write_string(m, t->name);
        fputs(":{\"dtype\":\"F32\",\"shape\":[", m);
        for (int d = 0; d < t->ndim; d++) fprintf(m, "%s%lld", d ? "," : "", (long long)t->dims[d]);
        size_t nb = tensor_bytes(t);
        fprintf(m, "],\"data_offsets\":[%zu,%zu]},", off, off + nb);
        off += nb;
    }
    fputs("\"__metadata__\":{", m);
    for (int i = 0; i < f->meta.n; i++) {
        if (i) fputc(',', m);
        mt_json_write_string(m, f->meta.key[i]);
        fputc(':', m);
        mt_json_write_string(m, f->meta.val[i]);
    }
    fputs("}}", m);
    while ((ftell(m) % 8) != 0) fputc(' ', m);  // data starts 8-byte aligned
    fclose(m);
    *len = n;
    return buf;
}

static void put_le32(FILE *fp, const float *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                              (unsigned char)(u >> 24)};
        fwrite(b, 1, 4, fp);
    }
}

void mt_hio_write(const char *path, const mt_hio_file *f) {
    size_t hlen;
    char *hdr = header_json(f, &hlen);
    mt_outfile out;
    mt_outfile_open(&out, path, 1);
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    fwrite(lenb, 1, 8, out.fp);
    fwrite(hdr, 1, hlen, out.fp);
    for (int i = 0; i < f->n; i++) put_le32(out.fp, f->t[i].data, tensor_bytes(&f->t[i]) / 4);
    if (ferror(out.fp)) mt_die("%s: write error", path);
    mt_outfile_commit(&out);
    free(hdr);
}

// ---- a strict little JSON reader for exactly the header shape above ------------------

typedef struct {
    const char *p, *end;
    char *err;
    size_t errcap;
    int failed;
} jcur;

static int jfail(jcur *c, const char *fmt, ...) {
    if (!c->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errcap, fmt, ap);
        va_end(ap);
    }
    c->failed = 1;
    return -1;
}

static void jws(jcur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\t' || *c->p == '\r')) c->p++;
}

static int jexpect(jcur *c, char ch) {
    jws(c);
    if (c->p >= c->end || *c->p != ch) return jfail(c, "header JSON: expected '%c'", ch);
    c->p++;
    return 0;
}

static int jpeek(jcur *c, char ch) {
    jws(c);
    return c->p < c->end && *c->p == ch;
}

// Reads a string into out (cap bytes). Escapes: \" \\ \/ \n \t \r \b \f and \u00XX.
static int jstring(jcur *c, char *out, size_t cap) {
    if (jexpect(c, '"')) return -1;
    size_t n = 0;
    while (c->p < c->end && *c->p != '"') {
        char ch = *c->p++;
        if (ch == '\\') {
            if (c->p >= c->end) break;
            char e = *c->p++;
            switch (e) {
            case '"': case '\\': case '/': ch = e; break;
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'u': {
                unsigned v;
                if (c->end - c->p < 4 || sscanf(c->p, "%4x", &v) != 1 || v == 0 || v > 0x7f)
                    return jfail(c, "header JSON: unsupported \\u escape");
                ch = (char)v;
                c->p += 4;
                break;
            }
            default: return jfail(c, "header JSON: bad escape");
            }
        }
        if (n + 1 >= cap) return jfail(c, "header JSON: string too long");
        out[n++] = ch;
    }
    if (c->p >= c->end) return jfail(c, "header JSON: unterminated string");
    c->p++;
    out[n] = 0;
    return 0;
}

static int jint(jcur *c, int64_t *v) {
    jws(c);
    char *e;
    errno = 0;
    long long x = strtoll(c->p, &e, 10);
    if (e == c->p || e > c->end || errno || x < 0) return jfail(c, "header JSON: expected a non-negative integer");
    c->p = e;
    *v = x;
    return 0;
}

// [int, int, ...] into v (at most max); returns the count or -1.
static int jint_array(jcur *c, int64_t *v, int max) {
    if (jexpect(c, '[')) return -1;
    int n = 0;
    if (jpeek(c, ']')) { c->p++; return 0; }
    for (;;) {
        if (n == max) return jfail(c, "header JSON: array too long");
        if (jint(c, &v[n++])) return -1;
        if (jpeek(c, ',')) { c->p++; continue; }
        if (jexpect(c, ']')) return -1;
        return n;
    }
}

static int jmetadata(jcur *c, mt_meta *meta) {
    if (jexpect(c, '{')) return -1;
    if (jpeek(c, '}')) { c->p++; return 0; }
    for (;;) {
        char k[256], v[4096];
        if (jstring(c, k, sizeof k) || jexpect(c, ':') || jstring(c, v, sizeof v)) return -1;
        mt_meta_set(meta, k, v);
        if (jpeek(c, ',')) { c->p++; continue; }
        return jexpect(c, '}');
    }
}

// {"dtype": "F32", "shape": [...], "data_offsets": [a, b]} in any key order.
static int jtensor(jcur *c, mt_hio_tensor *t, int64_t off[2]) {
    int have = 0;
    if (jexpect(c, '{')) return -1;
    for (;;) {
        char k[32];
        if (jstring(c, k, sizeof k) || jexpect(c, ':')) return -1;
        if (strcmp(k, "dtype") == 0) {
            char dt[16];
            if (jstring(c, dt, sizeof dt)) return -1;
            if (strcmp(dt, "F32") != 0) return jfail(c, "tensor %s: dtype %s (only F32 heads)", t->name, dt);
            have |= 1;
        } else if (strcmp(k, "shape") == 0) {
            if ((t->ndim = jint_array(c, t->dims, 4)) < 0) return -1;
            have |= 2;
        } else if (strcmp(k, "data_offsets") == 0) {
            if (jint_array(c, off, 2) != 2) return jfail(c, "tensor %s: bad data_offsets", t->name);
            have |= 4;
        } else {
            return jfail(c, "tensor %s: unexpected key '%s'", t->name, k);
        }
        if (jpeek(c, ',')) { c->p++; continue; }
        if (jexpect(c, '}')) return -1;
        return have == 7 ? 0 : jfail(c, "tensor %s: needs dtype, shape and data_offsets", t->name);
    }
}

// ---- reading ---------------------------------------------------------------------------

static unsigned char *slurp(const char *path, size_t *n, char *err, size_t cap) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, cap, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t len = 0, cap_b = 1 << 16;
    unsigned char *buf = mt_malloc(cap_b);
    size_t got;
    while ((got = fread(buf + len, 1, cap_b - len, fp)) > 0) {
        len += got;
        if (len == cap_b) buf = mt_realloc(buf, cap_b *= 2);
    }
    buf[len] = 0;  // always room: the loop grows buf before it fills; strtoll/sscanf stop here
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        snprintf(err, cap, "%s: read error", path);
        return NULL;
    }
    *n = len;
    return buf;
}

static int copy_data(mt_hio_tensor *t, const int64_t off[2], const unsigned char *data,
                     size_t n_data, jcur *c) {
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->dims[d] > (1 << 28)) return jfail(c, "tensor %s: dimension too large", t->name);
        numel *= t->dims[d];
        if (numel > (1 << 28)) return jfail(c, "tensor %s: too large", t->name);
    }
    if (off[0] > off[1] || (uint64_t)off[1] > n_data || off[1] - off[0] != numel * 4)
        return jfail(c, "tensor %s: data_offsets [%lld, %lld] do not fit its shape or the file",
                     t->name, (long long)off[0], (long long)off[1]);
    t->data = mt_malloc((size_t)numel * 4);
    const unsigned char *p = data + off[0];
    for (int64_t i = 0; i < numel; i++, p += 4) {
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        memcpy(&t->data[i], &u, 4);
    }
    return 0;
}

static int parse_header(jcur *c, mt_hio_file *f, const unsigned char *data, size_t n_data) {
    if (jexpect(c, '{')) return -1;
    for (;;) {
        char name[64];
        if (jstring(c, name, sizeof name) || jexpect(c, ':')) return -1;
        if (strcmp(name, "__metadata__") == 0) {
            if (jmetadata(c, &f->meta)) return -1;
        } else {
            if (f->n == MT_HIO_MAX_TENSORS) return jfail(c, "too many tensors");
            mt_hio_tensor *t = &f->t[f->n++];
            int64_t off[2];
            snprintf(t->name, sizeof t->name, "%s", name);
            if (jtensor(c, t, off) || copy_data(t, off, data, n_data, c)) return -1;
        }
        if (jpeek(c, ',')) { c->p++; continue; }
        if (jexpect(c, '}')) return -1;
        jws(c);
        return c->p == c->end ? 0 : jfail(c, "header JSON: trailing bytes");
    }
}

int mt_hio_read(const char *path, mt_hio_file *f, char *err, size_t errcap) {
    memset(f, 0, sizeof *f);
    size_t n;
    unsigned char *buf = slurp(path, &n, err, errcap);
    if (!buf) return -1;
    uint64_t hlen = 0;
    for (int i = 0; i < 8 && n >= 8; i++) hlen |= (uint64_t)buf[i] << (8 * i);
    if (n < 8 || hlen > MAX_HEADER || hlen > n - 8) {
        snprintf(err, errcap, "%s: not a safetensors file (bad header length)", path);
        free(buf);
        return -1;
    }
    char msg[400] = "";
    jcur c = {(const char *)buf + 8, (const char *)buf + 8 + hlen, msg, sizeof msg, 0};
    int rc = parse_header(&c, f, buf + 8 + hlen, n - 8 - hlen);
    free(buf);
    if (rc) {
        snprintf(err, errcap, "%s: not a valid head file: %s", path, msg);
        mt_hio_free(f);
        return -1;
    }
    return 0;
}

const mt_hio_tensor *mt_hio_get(const mt_hio_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

void mt_hio_free(mt_hio_file *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].data);
    mt_meta_free(&f->meta);
    memset(f, 0, sizeof *f);
}
