// heads_io.h — a minimal private safetensors writer/reader for head files (F32 tensors of
// up to 4 dims and string __metadata__). It exists so that heads.c does not wait for the
// shared lib/safetensors.{h,c}; mt_head_save/mt_head_load are the only callers, so swapping
// it for the shared implementation touches nothing else.
//
// Layout: u64 LE header length N, N bytes of JSON
//   {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// padded with spaces to a multiple of 8, then the tensor data (little-endian).
#ifndef MT_HEADS_IO_H
#define MT_HEADS_IO_H

#include <stddef.h>
#include <stdint.h>

#include "stream.h"  // mt_meta

#define MT_HIO_MAX_TENSORS 16

typedef struct {
    char name[64];
    int ndim;
    int64_t dims[4];
    float *data;  // owned (read) or borrowed (write)
} mt_hio_tensor;

typedef struct {
    int n;
    mt_hio_tensor t[MT_HIO_MAX_TENSORS];
    mt_meta meta;
} mt_hio_file;

// Writes f to path atomically; dies on error.
void mt_hio_write(const char *path, const mt_hio_file *f);
// Reads path into f. Returns 0, or -1 with a message in err (f is left empty).
int mt_hio_read(const char *path, mt_hio_file *f, char *err, size_t errcap);
const mt_hio_tensor *mt_hio_get(const mt_hio_file *f, const char *name);
void mt_hio_free(mt_hio_file *f);  // frees tensor data and metadata of a read file

#endif
