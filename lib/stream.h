// stream.h — mtbert's tensor stream: the one format every stage reads and writes.
//
// A stream is gzip-compressed (zcat and gzip -t work on it) and read/written record by
// record in constant memory. Uncompressed, it is (all integers little-endian, fixed width):
//
//   header   "MTBSTRM\n"                   8 bytes magic
//            u32 version                   = MT_STREAM_VERSION
//            u32 n_meta                    then n_meta times:
//              u16 key_len, key bytes, u32 value_len, value bytes     (UTF-8 text)
//   record   u8  'R'
//            u32 id_len, id bytes          the example id from the TSV
//            u8  n_labels                  then n_labels times:
//              u8 name_len, name, f32 value
//            u8  n_tensors                 then n_tensors times:
//              u8 name_len, name, u8 dtype (1 i32, 2 f32, 3 bf16), u8 ndim (1..4),
//              ndim x i32 dims (row-major), numel x element bytes
//   trailer  u8  'E', u64 n_records, u32 crc32 of every byte before this field
//
// Readers reject: bad magic, unknown version, a stream that ends without its trailer,
// a count or checksum that does not match, negative or oversized dimensions, bytes after
// the trailer, unknown tags or dtypes. docs/stream-format.md documents the metadata keys
// and the record layouts each stage writes.
#ifndef MT_STREAM_H
#define MT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#define MT_STREAM_VERSION 1
#define MT_MAX_LABELS 8
#define MT_MAX_TENSORS 16
#define MT_MAX_DIMS 4
#define MT_MAX_NAME 63
#define MT_MAX_ID 4096
#define MT_MAX_DIM (1 << 24)        // largest single dimension accepted
#define MT_MAX_NUMEL (1 << 28)      // largest tensor accepted (elements)
#define MT_MAX_META 64

typedef enum { MT_I32 = 1, MT_F32 = 2, MT_BF16 = 3 } mt_dtype;

typedef struct {
    char name[MT_MAX_NAME + 1];
    mt_dtype dtype;
    int ndim;
    int32_t dims[MT_MAX_DIMS];
    void *data;     // owned by the record; reused between records
    size_t cap;     // bytes allocated at data
} mt_tensor;

typedef struct {
    char *id;
    size_t id_cap;
    int n_labels;
    char label_name[MT_MAX_LABELS][MT_MAX_NAME + 1];
    float label[MT_MAX_LABELS];
    int n_tensors;
    mt_tensor t[MT_MAX_TENSORS];
} mt_record;

typedef struct {
    int n;
    char *key[MT_MAX_META];
    char *val[MT_MAX_META];
} mt_meta;

// ---- metadata --------------------------------------------------------------
void mt_meta_set(mt_meta *m, const char *key, const char *val);  // replaces an existing key
const char *mt_meta_get(const mt_meta *m, const char *key);       // NULL if absent
void mt_meta_copy(mt_meta *dst, const mt_meta *src);
void mt_meta_free(mt_meta *m);

// ---- records ---------------------------------------------------------------
void mt_record_clear(mt_record *r);  // drop labels and tensors, keep buffers
void mt_record_free(mt_record *r);
void mt_record_set_id(mt_record *r, const char *id);
void mt_record_add_label(mt_record *r, const char *name, float value);
// Returns 1 and the value if the record has label `name`.
int mt_record_label(const mt_record *r, const char *name, float *value);
// Adds a tensor (dims given as an array) and returns it with room for its data.
mt_tensor *mt_record_add(mt_record *r, const char *name, mt_dtype dtype, int ndim,
                         const int32_t *dims);
mt_tensor *mt_record_add1(mt_record *r, const char *name, mt_dtype dtype, int32_t n);
mt_tensor *mt_record_add2(mt_record *r, const char *name, mt_dtype dtype, int32_t n0, int32_t n1);
// Copies tensor `src` (from another record) into r under `name` (NULL: same name).
mt_tensor *mt_record_add_copy(mt_record *r, const char *name, const mt_tensor *src);
const mt_tensor *mt_record_get(const mt_record *r, const char *name);  // NULL if absent
size_t mt_tensor_numel(const mt_tensor *t);
size_t mt_dtype_size(mt_dtype d);
const char *mt_dtype_name(mt_dtype d);

// ---- writing -----------------------------------------------------------------
typedef struct mt_writer mt_writer;
// path "-" is stdout (refused on a terminal); any other path is written as PATH.tmp.PID
// and renamed when mt_writer_close succeeds.
mt_writer *mt_writer_open(const char *path, const mt_meta *meta);
void mt_writer_put(mt_writer *w, const mt_record *r);
void mt_writer_close(mt_writer *w);  // trailer, flush, rename; dies on any write error
long mt_writer_count(const mt_writer *w);

// ---- reading -----------------------------------------------------------------
typedef struct mt_reader mt_reader;
// path "-" is stdin. By default every error is fatal (message names the stream and the
// record number); with die_on_error = 0 the calls return -1 / NULL and mt_reader_error()
// says why (used by the unit tests).
mt_reader *mt_reader_open(const char *path, int die_on_error);
const char *mt_reader_open_error(void);  // why the last mt_reader_open returned NULL
const mt_meta *mt_reader_meta(const mt_reader *r);
// 1: a record was read into rec; 0: clean end (trailer verified); -1: error.
int mt_reader_next(mt_reader *r, mt_record *rec);
const char *mt_reader_error(const mt_reader *r);
long mt_reader_count(const mt_reader *r);  // records read so far
const char *mt_reader_path(const mt_reader *r);
void mt_reader_close(mt_reader *r);

// Dies unless the stream's metadata `key` equals `want` (e.g. vocab fingerprints).
void mt_reader_expect(const mt_reader *r, const char *key, const char *want, const char *what);

// bf16 <-> f32 (round to nearest even), shared by the stream and the backends.
uint16_t mt_f32_to_bf16(float f);
float mt_bf16_to_f32(uint16_t h);

#endif
