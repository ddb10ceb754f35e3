// checkpoint.h — checkpoint directories that are never half-written: a directory is built
// under a temporary name next to its final place and swapped in with one rename.
#ifndef MT_CHECKPOINT_H
#define MT_CHECKPOINT_H
#include <stddef.h>

// A fresh temporary directory name for final ("DIR/.NAME.tmp.PID"), created. Free the result.
char *mt_ckpt_tmpdir(const char *final_dir);
// Makes tmp_dir appear as final_dir atomically: renameat2(RENAME_EXCHANGE) when final_dir
// exists (readers see the old or the new directory, never a mixture), then the old one is
// removed; a plain rename otherwise. Returns 0, or -1 with a message in err.
int mt_ckpt_commit(const char *tmp_dir, const char *final_dir, char *err, size_t errlen);
// Removes a directory of plain files (a checkpoint); missing is fine.
void mt_ckpt_remove(const char *dir);
// Copies src to dst (not atomic: dst is inside a temporary directory). Returns 0 or -1.
int mt_copy_file(const char *src, const char *dst, char *err, size_t errlen);

#endif
