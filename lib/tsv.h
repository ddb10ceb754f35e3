// tsv.h — strict reader for the project's TSV data: a header line, tab-separated fields,
// no quoting, UTF-8, LF line ends. Columns are found by name. Every problem is reported
// as "FILE:LINE: what", so a user can jump to the line.
//
//   mt_tsv *t = mt_tsv_open("data/sst-train.tsv");      // dies on empty file / bad header
//   int col = mt_tsv_require_col(t, "sentence");          // dies naming the columns it has
//   while ((rc = mt_tsv_next(t)) != 0) {
//       if (rc < 0) mt_die("%s", mt_tsv_error(t));        // or count it (--skip-bad)
//       use t->field[col], t->field_len[col]
//   }
#ifndef MT_TSV_H
#define MT_TSV_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *path;      // as given, for messages ("-" is shown as "stdin")
    FILE *fp;
    long line_no;          // 1-based number of the line last read (1 is the header)
    int n_cols;
    char **col_name;
    // The current row: fields point into an internal buffer, valid until the next call.
    // Fields are NUL-terminated and also carry their byte length (a field may hold U+0000).
    int n_fields;
    char **field;
    size_t *field_len;
    int field_cap;
    char *line;
    size_t line_cap;
    char err[512];
} mt_tsv;

// Opens path ("-": stdin) and reads the header. Dies with FILE:1 on an empty file, a CRLF
// header, invalid UTF-8 or a duplicate column name.
mt_tsv *mt_tsv_open(const char *path);
void mt_tsv_close(mt_tsv *t);

int mt_tsv_col(const mt_tsv *t, const char *name);          // -1 if absent
int mt_tsv_require_col(const mt_tsv *t, const char *name);  // dies if absent

// Reads the next data row. 1: a well-formed row is in t->field; 0: end of file;
// -1: a bad row (wrong field count, CRLF line end, invalid UTF-8); mt_tsv_error() says why
// as "FILE:LINE: ..." and the next call continues with the following line.
int mt_tsv_next(mt_tsv *t);
const char *mt_tsv_error(const mt_tsv *t);
// The current row's id, the one rule every stage keys records by: field id_col when id_col
// >= 0, else the data row's number counted from 0 (written into buf).
const char *mt_tsv_row_id(const mt_tsv *t, int id_col, char buf[32]);

// Length of the valid UTF-8 prefix of s[0..n): n if all of s is valid. Rejects overlong
// forms, surrogates and code points above U+10FFFF.
size_t mt_utf8_valid_prefix(const char *s, size_t n);

#endif
