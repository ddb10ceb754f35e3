// safetensors.h — read (mmap) and write Hugging Face safetensors files.
//
// Layout: u64 little-endian header length N, N bytes of JSON header, then the data area.
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data area); "__metadata__" is ignored.
//
// The reader trusts nothing: header length vs file size, JSON validity, dtype, shape,
// shape×dtype size == byte span, offsets inside the data area, no two tensors overlapping.
// Every failure is a message that names the file (and the tensor).
#ifndef MT_SAFETENSORS_H
#define MT_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#define MT_ST_MAX_DIMS 8
#define MT_ST_MAX_HEADER ((uint64_t)100 << 20)  // same cap as the reference implementation

typedef enum { MT_ST_F32, MT_ST_F16, MT_ST_BF16, MT_ST_I64 } mt_st_dtype;

typedef struct {
    char *name;
    mt_st_dtype dtype;
    int ndim;
    int64_t shape[MT_ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    uint64_t offset;            // of the first byte, relative to the data area
    const unsigned char *data;  // into the mapping; not necessarily aligned
} mt_st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    mt_st_tensor *tensors;  // in header order
    int n;
} mt_safetensors;

// Opens and validates path. Returns 0, or -1 with a message in err (st is then empty).
int mt_safetensors_open(mt_safetensors *st, const char *path, char *err, size_t errlen);
void mt_safetensors_close(mt_safetensors *st);
const mt_st_tensor *mt_safetensors_find(const mt_safetensors *st, const char *name);

const char *mt_st_dtype_name(mt_st_dtype d);
size_t mt_st_dtype_size(mt_st_dtype d);
// Converts t's numel elements to float32 (F16/BF16 exactly, I64 rounded).
void mt_st_to_f32(const mt_st_tensor *t, float *out);

// Writes named float32 tensors as path, atomically (path.tmp.PID, fsync, rename).
// Returns 0, or -1 with a message in err (the temporary file is removed).
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[MT_ST_MAX_DIMS];
    const float *data;
} mt_st_write_tensor;
int mt_safetensors_write(const char *path, const mt_st_write_tensor *tensors, int n,
                         char *err, size_t errlen);

// The same with string metadata in "__metadata__": meta is a NULL-terminated list of
// key, value, key, value, ... ("format" is reserved: always "pt").
int mt_safetensors_write_meta(const char *path, const mt_st_write_tensor *tensors, int n,
                              const char *const *meta, char *err, size_t errlen);
// 1 and the value of metadata key (truncated to outlen) if the open file has it; else 0.
int mt_safetensors_meta(const mt_safetensors *st, const char *key, char *out, size_t outlen);

// IEEE half to float, exact (bf16 is mt_bf16_to_f32 in stream.h).
float mt_f16_to_f32(uint16_t h);

#endif
