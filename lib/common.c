// common.c — see common.h.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *mt_prog = "mtbert";
int mt_quiet = 0;

void mt_set_prog(const char *argv0) {
    const char *slash = strrchr(argv0, '/');
    mt_prog = slash ? slash + 1 : argv0;
}

void mt_die(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s: error: ", mt_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

int mt_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int mt_mkdirs(const char *dir, char *err, size_t errlen) {
    char *p = mt_strdup(dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char saved = *s;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            mt_fail(err, errlen, "cannot create %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = saved;
        if (!saved) break;
    }
    free(p);
    struct stat st;  // as mkdir -p: an existing path must be a directory
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return mt_fail(err, errlen, "not a directory: %s", dir);
    return 0;
}

char *mt_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { mt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    size_t cap = 4096, n = 0, got;
    char *buf = mt_malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n > max) {
            fclose(f), free(buf);
            mt_fail(err, errlen, "%s: larger than %zu bytes", path, max);
            return NULL;
        }
        if (n == cap - 1) buf = mt_realloc(buf, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); mt_fail(err, errlen, "%s: read error", path); return NULL; }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

void mt_log(const char *fmt, ...) {
    if (mt_quiet) return;
    va_list ap;
    fprintf(stderr, "%s: ", mt_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void *mt_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) mt_die("out of memory allocating %zu bytes", n);
    return p;
}

void *mt_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) mt_die("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *mt_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) mt_die("out of memory allocating %zu bytes", n);
    return q;
}

char *mt_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = mt_malloc(n);
    memcpy(d, s, n);
    return d;
}

uint64_t mt_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void mt_file_fingerprint(const char *path, char out_hex[17]) {
    FILE *f = fopen(path, "rb");
    if (!f) mt_die("%s: %s", path, strerror(errno));
    uint64_t h = MT_FNV_INIT;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = mt_fnv1a64(h, buf, n);
    if (ferror(f)) mt_die("%s: read error", path);
    fclose(f);
    snprintf(out_hex, 17, "%016llx", (unsigned long long)h);
}

double mt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void mt_progress_start(mt_progress *p, const char *what, long total) {
    p->what = what;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = mt_now();
    p->tty = isatty(2);
}

static void progress_print(mt_progress *p, int final) {
    double dt = mt_now() - p->t0;
    double rate = dt > 0 ? p->done / dt : 0;
    if (p->total > 0 && !final) {
        double eta = rate > 0 ? (p->total - p->done) / rate : 0;
        fprintf(stderr, "%s: %s %ld/%ld (%d%%) %.1f ex/s ETA %d:%02d%s", mt_prog, p->what, p->done,
                p->total, (int)(100.0 * p->done / p->total), rate, (int)eta / 60, (int)eta % 60,
                p->tty ? "\r" : "\n");
    } else {
        fprintf(stderr, "%s: %s %ld %s in %.2f s (%.1f ex/s)%s\n", mt_prog, p->what, p->done,
                final ? "done" : "so far", dt, rate, p->tty && !final ? "\r" : "");
    }
}

void mt_progress_add(mt_progress *p, long n) {
    p->done += n;
    if (mt_quiet) return;
    double t = mt_now();
    if (t - p->last < (p->tty ? 0.5 : 10.0)) return;
    p->last = t;
    progress_print(p, 0);
}

void mt_progress_done(mt_progress *p) {
    if (mt_quiet) return;
    if (p->tty) fputs("\33[2K", stderr);
    progress_print(p, 1);
}

// Temporary files not yet committed; removed when the program dies, so a failed stage
// never leaves PATH.tmp.PID behind.
#define MAX_PENDING 32
static char *pending[MAX_PENDING];

static void remove_pending(void) {
    for (int i = 0; i < MAX_PENDING; i++)
        if (pending[i]) unlink(pending[i]);
}

static void track_pending(char *tmp, int add) {
    static int registered;
    if (!registered) {
        atexit(remove_pending);
        registered = 1;
    }
    for (int i = 0; i < MAX_PENDING; i++)
        if (add ? pending[i] == NULL : pending[i] == tmp) {
            pending[i] = add ? tmp : NULL;
            return;
        }
    if (add) mt_die("too many output files open at once");
}

void mt_outfile_open(mt_outfile *o, const char *path, int binary) {
    memset(o, 0, sizeof *o);
    if (!path || strcmp(path, "-") == 0) {
        if (binary) mt_refuse_binary_tty(1);
        o->fp = stdout;
        return;
    }
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        // A device or FIFO (/dev/null, a named pipe): write it directly, nothing to rename.
        o->fp = fopen(path, binary ? "wb" : "w");
        if (!o->fp) mt_die("%s: cannot open for writing: %s", path, strerror(errno));
        return;
    }
    o->path = mt_strdup(path);
    size_t n = strlen(path) + 32;
    o->tmp_path = mt_malloc(n);
    snprintf(o->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    o->fp = fopen(o->tmp_path, binary ? "wb" : "w");
    if (!o->fp) mt_die("%s: cannot create: %s", o->tmp_path, strerror(errno));
    track_pending(o->tmp_path, 1);
}

void mt_outfile_commit(mt_outfile *o) {
    if (fflush(o->fp) != 0) mt_die("%s: write error: %s", o->path ? o->path : "stdout", strerror(errno));
    if (!o->path) {
        if (o->fp != stdout) fclose(o->fp);
        memset(o, 0, sizeof *o);
        return;
    }
    if (fsync(fileno(o->fp)) != 0 && errno != EINVAL)
        mt_die("%s: fsync: %s", o->tmp_path, strerror(errno));
    if (fclose(o->fp) != 0) mt_die("%s: close: %s", o->tmp_path, strerror(errno));
    if (rename(o->tmp_path, o->path) != 0)
        mt_die("cannot rename %s to %s: %s", o->tmp_path, o->path, strerror(errno));
    track_pending(o->tmp_path, 0);
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
}

void mt_outfile_abort(mt_outfile *o) {
    if (!o->path) {
        if (o->fp && o->fp != stdout) fclose(o->fp);
        return;
    }
    fclose(o->fp);
    unlink(o->tmp_path);
    track_pending(o->tmp_path, 0);
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
}

void mt_refuse_binary_tty(int fd) {
    if (isatty(fd))
        mt_die("refusing to write a binary stream to a terminal; redirect stdout or pipe it "
               "into the next stage (or into 'dump')");
}

long mt_parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        mt_die("option %s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

double mt_parse_double(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) mt_die("option %s: '%s' is not a number", opt, s);
    return v;
}
