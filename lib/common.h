// common.h — the small things every mtbert program and library file shares:
// fatal errors, checked allocation, logging and progress on stderr, fingerprints,
// and output files written under a temporary name and renamed when complete.
#ifndef MT_COMMON_H
#define MT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// Name of the running program, used as the prefix of every message ("tokenize: ...").
extern const char *mt_prog;
void mt_set_prog(const char *argv0);

// Print "prog: message" on stderr and exit(1). Every fatal error goes through here so a
// pipeline stage always exits non-zero with a message that names what went wrong.
_Noreturn void mt_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Formats the message into err[errlen] and returns -1: the error path of functions that
// report to their caller instead of dying (`return mt_fail(err, errlen, "...", ...)`).
int mt_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// mkdir -p dir: 0, or -1 with "cannot create COMPONENT: reason" or "not a directory: DIR" (it
// exists as something else) in err.
int mt_mkdirs(const char *dir, char *err, size_t errlen);
// The whole file, NUL-terminated (*len bytes before the NUL), at most max bytes so a hostile
// file cannot exhaust memory; NULL with "PATH: cannot open: ..." / "PATH: larger than N bytes" /
// "PATH: read error" in err. Free the result.
char *mt_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);
extern int mt_quiet;  // set by --quiet: mt_log and progress stay silent

void *mt_malloc(size_t n);
void *mt_calloc(size_t n, size_t size);
void *mt_realloc(void *p, size_t n);
char *mt_strdup(const char *s);

// 64-bit FNV-1a, used for vocabulary and model fingerprints carried in stream headers.
uint64_t mt_fnv1a64(uint64_t h, const void *data, size_t n);
#define MT_FNV_INIT 0xcbf29ce484222325ULL
// Fingerprint of a whole file as 16 hex digits; dies if the file cannot be read.
void mt_file_fingerprint(const char *path, char out_hex[17]);

double mt_now(void);  // monotonic seconds

// Progress line on stderr: "name: 1200/8544 (14%) 950.2 ex/s ETA 0:07". total may be 0
// (unknown). Rate-limited to a few updates per second; mt_progress_done prints the summary.
typedef struct {
    const char *what;
    long total, done;
    double t0, last;
    int tty;
} mt_progress;
void mt_progress_start(mt_progress *p, const char *what, long total);
void mt_progress_add(mt_progress *p, long n);
void mt_progress_done(mt_progress *p);

// Output files are created as "PATH.tmp.PID" and renamed over PATH on commit, so a reader
// never sees a half-written file. "-" means stdout (nothing to rename).
typedef struct {
    FILE *fp;
    char *path;      // final path, NULL for stdout
    char *tmp_path;  // temporary path, NULL for stdout
} mt_outfile;
void mt_outfile_open(mt_outfile *o, const char *path, int binary);
void mt_outfile_commit(mt_outfile *o);  // flush, fsync, rename; dies on failure
void mt_outfile_abort(mt_outfile *o);   // remove the temporary file

// Dies with a clear message if stdout is a terminal and the stage writes binary data.
void mt_refuse_binary_tty(int fd);

// Parse helpers for option values: die naming the option on bad input.
long mt_parse_long(const char *opt, const char *s, long lo, long hi);
double mt_parse_double(const char *opt, const char *s);

#endif
