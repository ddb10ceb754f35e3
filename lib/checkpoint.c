// checkpoint.c — see checkpoint.h.
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

char *mt_ckpt_tmpdir(const char *final_dir) {
    size_t n = strlen(final_dir) + 48;
    char *tmp = mt_malloc(n);
    const char *slash = strrchr(final_dir, '/');
    int parent = slash ? (int)(slash - final_dir) : 0;
    snprintf(tmp, n, "%.*s%s.%s.tmp.%ld", parent, final_dir, slash ? "/" : "", slash ? slash + 1 : final_dir,
             (long)getpid());
    mt_ckpt_remove(tmp);  // a leftover of a killed process with the same pid
    char err[4300];
    if (mt_mkdirs(tmp, err, sizeof err) != 0) mt_die("%s", err);
    return tmp;
}

void mt_ckpt_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int mt_ckpt_commit(const char *tmp_dir, const char *final_dir, char *err, size_t errlen) {
    struct stat sb;
    if (stat(final_dir, &sb) != 0) {
        if (rename(tmp_dir, final_dir) == 0) return 0;
    } else if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, final_dir, RENAME_EXCHANGE) == 0) {
        mt_ckpt_remove(tmp_dir);  // now holds the previous checkpoint
        return 0;
    }
    snprintf(err, errlen, "cannot move %s into place as %s: %s", tmp_dir, final_dir, strerror(errno));
    return -1;
}

int mt_copy_file(const char *src, const char *dst, char *err, size_t errlen) {
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    int ok = in && out;
    char buf[1 << 16];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    if (out && fclose(out) != 0) ok = 0;
    if (in) fclose(in);
    if (!ok) snprintf(err, errlen, "cannot copy %s to %s: %s", src, dst, strerror(errno));
    return ok ? 0 : -1;
}
