// test_stream.c — round trips and every damage the stream reader must detect.
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "common.h"
#include "stream.h"

static char tmpdir[] = "/tmp/mt_test_stream_XXXXXX";

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

// Writes n records with mixed dtypes; record i has id "r<i>", label y=i/2 and tensors
// ids (i32 [i%7+1]), x (f32 [2, 3]), h (bf16 [4]).
static void write_sample(const char *path, int n) {
    mt_meta m = {0};
    mt_meta_set(&m, "kind", "test");
    mt_meta_set(&m, "producer", "test_stream");
    mt_writer *w = mt_writer_open(path, &m);
    mt_record r = {0};
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        mt_record_clear(&r);
        mt_record_set_id(&r, id);
        mt_record_add_label(&r, "y", i / 2.0f);
        mt_tensor *t = mt_record_add1(&r, "ids", MT_I32, i % 7 + 1);
        for (int j = 0; j < i % 7 + 1; j++) ((int32_t *)t->data)[j] = i * 100 + j - 3;
        t = mt_record_add2(&r, "x", MT_F32, 2, 3);
        for (int j = 0; j < 6; j++) ((float *)t->data)[j] = i + j * 0.25f;
        t = mt_record_add1(&r, "h", MT_BF16, 4);
        for (int j = 0; j < 4; j++) ((uint16_t *)t->data)[j] = mt_f32_to_bf16(j - 1.5f);
        mt_writer_put(w, &r);
    }
    mt_writer_close(w);
    mt_record_free(&r);
    mt_meta_free(&m);
}

// Reads a whole stream without dying; returns records read, or -1 with the message in err.
static long read_all(const char *path, char *err, size_t errn) {
    err[0] = 0;
    mt_reader *r = mt_reader_open(path, 0);
    if (!r) {
        snprintf(err, errn, "%s", mt_reader_open_error());
        return -1;
    }
    mt_record rec = {0};
    int rc;
    while ((rc = mt_reader_next(r, &rec)) == 1) {}
    long n = rc == 0 ? mt_reader_count(r) : -1;
    if (rc < 0) snprintf(err, errn, "%s", mt_reader_error(r));
    mt_record_free(&rec);
    mt_reader_close(r);
    return n;
}

static size_t slurp(const char *path, unsigned char **out) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = mt_malloc(n);
    if (fread(*out, 1, n, f) != n) n = 0;
    fclose(f);
    return n;
}

static void spit(const char *path, const unsigned char *d, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(d, 1, n, f);
    fclose(f);
}

// gzip an arbitrary payload, for hand-crafted (hostile) streams.
static void spit_gz(const char *path, const unsigned char *d, size_t n) {
    gzFile g = gzopen(path, "wb");
    gzwrite(g, d, (unsigned)n);
    gzclose(g);
}

TEST(round_trip_keeps_every_field) {
    const char *p = tmp_path("a.mts");
    write_sample(p, 3000);  // > one 64 KiB chunk of payload
    mt_reader *r = mt_reader_open(p, 0);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(strcmp(mt_meta_get(mt_reader_meta(r), "kind"), "test") == 0);
    CHECK(mt_meta_get(mt_reader_meta(r), "absent") == NULL);
    mt_record rec = {0};
    int i = 0, bad = 0;
    while (mt_reader_next(r, &rec) == 1) {
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        float y;
        const mt_tensor *ids = mt_record_get(&rec, "ids"), *x = mt_record_get(&rec, "x"),
                        *h = mt_record_get(&rec, "h");
        if (strcmp(rec.id, id) || !mt_record_label(&rec, "y", &y) || y != i / 2.0f) bad++;
        if (!ids || ids->dtype != MT_I32 || ids->dims[0] != i % 7 + 1 ||
            ((int32_t *)ids->data)[0] != i * 100 - 3)
            bad++;
        if (!x || x->ndim != 2 || x->dims[1] != 3 || ((float *)x->data)[5] != i + 1.25f) bad++;
        if (!h || mt_bf16_to_f32(((uint16_t *)h->data)[3]) != 1.5f) bad++;
        i++;
    }
    CHECK(bad == 0);
    CHECK(i == 3000);
    CHECK(mt_reader_count(r) == 3000);
    mt_record_free(&rec);
    mt_reader_close(r);
}

TEST(empty_stream_is_valid) {
    const char *p = tmp_path("empty.mts");
    write_sample(p, 0);
    char err[512];
    CHECK(read_all(p, err, sizeof err) == 0);
}

TEST(truncation_anywhere_is_detected) {
    const char *p = tmp_path("t.mts"), *q = tmp_path("t_cut.mts");
    write_sample(p, 200);
    unsigned char *d;
    size_t n = slurp(p, &d);
    int undetected = 0;
    char err[512];
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 97)) {
        spit(q, d, cut);
        if (read_all(q, err, sizeof err) >= 0) undetected++;
    }
    spit(q, d, n - 1);
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "truncated") != NULL || strstr(err, "corrupt") != NULL);
    CHECK(undetected == 0);
    free(d);
}

// The decompressed payload of a file (gzip layer only), for comparing contents.
static int payload(const char *path, unsigned char *buf, int cap) {
    gzFile g = gzopen(path, "rb");
    int n = gzread(g, buf, (unsigned)cap);
    gzclose(g);
    return n;
}

TEST(flipped_bytes_are_detected) {
    const char *p = tmp_path("f.mts"), *q = tmp_path("f_bad.mts");
    write_sample(p, 200);
    static unsigned char orig[1 << 16], now[1 << 16];
    int n_orig = payload(p, orig, sizeof orig);
    unsigned char *d;
    size_t n = slurp(p, &d);
    int undetected = 0;
    char err[512];
    for (size_t at = 10; at < n; at += 53) {  // past the gzip header's mtime/os bytes
        d[at] ^= 0x20;
        spit(q, d, n);
        // A flip in deflate's padding bits changes nothing; any other must be caught.
        if (read_all(q, err, sizeof err) >= 0 &&
            (payload(q, now, sizeof now) != n_orig || memcmp(now, orig, (size_t)n_orig)))
            undetected++;
        d[at] ^= 0x20;
    }
    CHECK(undetected == 0);
    free(d);
}

// A valid header for hand-built payloads: magic, version, no metadata.
static size_t header(unsigned char *b, uint32_t version) {
    memcpy(b, "MTBSTRM\n", 8);
    for (int i = 0; i < 4; i++) b[8 + i] = (unsigned char)(version >> (8 * i));
    memset(b + 12, 0, 4);
    return 16;
}

TEST(bad_magic_and_version_are_rejected) {
    const char *q = tmp_path("h.mts");
    unsigned char b[64];
    char err[512];
    header(b, 1);
    b[0] = 'X';
    spit_gz(q, b, 16);
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "bad magic") != NULL);
    header(b, 99);
    spit_gz(q, b, 16);
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "version 99") != NULL);
    spit(q, (const unsigned char *)"id\tsentence\n", 12);  // a TSV given by mistake
    CHECK(read_all(q, err, sizeof err) < 0);
}

// One record with a tensor of the given dim, followed by nothing.
static size_t record_with_dim(unsigned char *b, int32_t dim) {
    size_t n = header(b, 1);
    b[n++] = 'R';
    memset(b + n, 0, 4); b[n] = 1; n += 4;  // id_len 1
    b[n++] = 'x';
    b[n++] = 0;  // no labels
    b[n++] = 1;  // one tensor
    b[n++] = 1; b[n++] = 't';
    b[n++] = MT_F32;
    b[n++] = 1;
    uint32_t u = (uint32_t)dim;
    for (int i = 0; i < 4; i++) b[n++] = (unsigned char)(u >> (8 * i));
    return n;
}

TEST(negative_and_oversized_dims_are_rejected) {
    const char *q = tmp_path("d.mts");
    unsigned char b[128];
    char err[512];
    spit_gz(q, b, record_with_dim(b, -5));
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "dimension") != NULL);
    spit_gz(q, b, record_with_dim(b, MT_MAX_DIM + 1));
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "dimension") != NULL);
}

TEST(trailer_count_and_trailing_bytes_are_checked) {
    const char *p = tmp_path("c.mts"), *q = tmp_path("c2.mts");
    write_sample(p, 5);
    // Decompress, edit the trailer's count, recompress: the count check must fire.
    gzFile g = gzopen(p, "rb");
    unsigned char buf[8192];
    int n = gzread(g, buf, sizeof buf);
    gzclose(g);
    CHECK(n > 13);
    if (n <= 13) return;
    char err[512];
    buf[n - 12] ^= 1;  // low byte of u64 count
    spit_gz(q, buf, (size_t)n);
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "records") != NULL);
    buf[n - 12] ^= 1;
    buf[n] = 'R';  // one byte after the trailer
    spit_gz(q, buf, (size_t)n + 1);
    CHECK(read_all(q, err, sizeof err) < 0);
    CHECK(strstr(err, "after the trailer") != NULL);
}

TEST(concatenated_gzip_members_are_read) {
    // gzip allows concatenated members; a stream split across two members stays valid.
    const char *p = tmp_path("m.mts"), *q = tmp_path("m2.mts");
    write_sample(p, 50);
    gzFile g = gzopen(p, "rb");
    static unsigned char buf[1 << 16];
    int n = gzread(g, buf, sizeof buf);
    gzclose(g);
    FILE *f = fopen(q, "wb");
    fclose(f);
    g = gzopen(q, "ab");
    gzwrite(g, buf, (unsigned)(n / 2));
    gzclose(g);
    g = gzopen(q, "ab");
    gzwrite(g, buf + n / 2, (unsigned)(n - n / 2));
    gzclose(g);
    char err[512];
    CHECK(read_all(q, err, sizeof err) == 50);
}

TEST(bf16_rounding) {
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(1.0f)) == 1.0f);
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(-2.5f)) == -2.5f);
    // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1+2^-7: ties to even gives 1.
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(1.0f + 1.0f / 256)) == 1.0f);
    CHECK(mt_bf16_to_f32(mt_f32_to_bf16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256);
    CHECK(isnan(mt_bf16_to_f32(mt_f32_to_bf16(NAN))));
}

TEST(atomic_output_leaves_no_partial_file) {
    const char *p = tmp_path("atomic.mts");
    mt_meta m = {0};
    mt_writer *w = mt_writer_open(p, &m);
    CHECK(access(p, F_OK) != 0);  // nothing under the final name until close
    mt_writer_close(w);
    CHECK(access(p, F_OK) == 0);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 1;
    RUN(round_trip_keeps_every_field);
    RUN(empty_stream_is_valid);
    RUN(truncation_anywhere_is_detected);
    RUN(flipped_bytes_are_detected);
    RUN(bad_magic_and_version_are_rejected);
    RUN(negative_and_oversized_dims_are_rejected);
    RUN(trailer_count_and_trailing_bytes_are_checked);
    RUN(concatenated_gzip_members_are_read);
    RUN(bf16_rounding);
    RUN(atomic_output_leaves_no_partial_file);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    return check_summary();
}
