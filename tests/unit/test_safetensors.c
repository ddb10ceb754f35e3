// test_safetensors.c — reader on hand-built good and hostile files, dtype conversion, and
// the atomic writer's round trip.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "safetensors.h"
#include "stream.h"

static char dir[] = "/tmp/mt_st_XXXXXX";
static char path[256], err[512];

// Writes u64 header_len (or the true length when header_len < 0), the header and data.
static void write_file(const char *header, long long header_len, const void *data, size_t data_len) {
    FILE *f = fopen(path, "wb");
    uint64_t n = header_len < 0 ? strlen(header) : (uint64_t)header_len;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

// Opening must fail with a message that contains want (and the file's path).
static int rejects(const char *want) {
    mt_safetensors st;
    if (mt_safetensors_open(&st, path, err, sizeof err) == 0) {
        printf("# accepted a bad file (wanted '%s')\n", want);
        mt_safetensors_close(&st);
        return 0;
    }
    if (!strstr(err, want) || !strstr(err, path)) { printf("# message '%s' lacks '%s' or the path\n", err, want); return 0; }
    return 1;
}

TEST(reads_every_dtype) {
    // F32 [2] = {1.5, -3}; F16 [4] = {1, -2, 0.5, smallest subnormal}; BF16 [1] = {1}; I64 [1] = {7}
    unsigned char data[8 + 8 + 2 + 8] = {0};
    float f32[2] = {1.5f, -3.0f};
    uint16_t f16[4] = {0x3C00, 0xC000, 0x3800, 0x0001}, bf16 = 0x3F80;
    int64_t i64 = 7;
    memcpy(data, f32, 8);
    memcpy(data + 8, f16, 8);
    memcpy(data + 16, &bf16, 2);
    memcpy(data + 18, &i64, 8);  // unaligned on purpose
    write_file("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
               "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[16,18]},"
               "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[18,26]}}", -1, data, sizeof data);
    mt_safetensors st;
    int rc = mt_safetensors_open(&st, path, err, sizeof err);
    CHECK(rc == 0);
    if (rc) { printf("# %s\n", err); return; }
    CHECK(st.n == 4);  // __metadata__ is not a tensor
    float out[4];
    const mt_st_tensor *t = mt_safetensors_find(&st, "a");
    CHECK(t && t->dtype == MT_ST_F32 && t->ndim == 1 && t->shape[0] == 2);
    mt_st_to_f32(t, out);
    CHECK(out[0] == 1.5f && out[1] == -3.0f);
    t = mt_safetensors_find(&st, "h");
    CHECK(t && t->dtype == MT_ST_F16 && t->ndim == 2 && t->numel == 4);
    mt_st_to_f32(t, out);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f);
    CHECK_NEAR(out[3], 5.9604645e-8, 1e-14);
    t = mt_safetensors_find(&st, "b");
    mt_st_to_f32(t, out);
    CHECK(out[0] == 1.0f);
    t = mt_safetensors_find(&st, "i");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    mt_st_to_f32(t, out);
    CHECK(out[0] == 7.0f);
    CHECK(mt_safetensors_find(&st, "__metadata__") == NULL);
    mt_safetensors_close(&st);
}

TEST(f16_conversion_special_values) {
    CHECK(mt_f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(mt_f16_to_f32(0x0400) == 6.103515625e-5f);      // smallest normal
    CHECK(mt_f16_to_f32(0x03FF) == 6.097555160522461e-5f);  // largest subnormal
    CHECK(isinf(mt_f16_to_f32(0x7C00)) && mt_f16_to_f32(0xFC00) < 0);
    CHECK(isnan(mt_f16_to_f32(0x7E00)));
    CHECK(mt_f16_to_f32(0x8000) == 0.0f && signbit(mt_f16_to_f32(0x8000)));
}

TEST(rejects_hostile_headers) {
    float z[4] = {0};
    FILE *f = fopen(path, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    CHECK(rejects("too short"));
    write_file("{}", 1000, NULL, 0);
    CHECK(rejects("exceeds the file size"));
    write_file("{}", (long long)1 << 40, NULL, 0);
    CHECK(rejects("exceeds the"));
    write_file("\x89PNG garbage", -1, NULL, 0);
    CHECK(rejects("not valid JSON"));
    write_file("[1,2]", -1, NULL, 0);
    CHECK(rejects("not a JSON object"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, z, 8);
    CHECK(rejects("tensor 't': data offsets [0, 16] outside the data area of 8 bytes"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", -1, z, 16);
    CHECK(rejects("tensor 't': shape × F32 needs 12 bytes but data offsets span 16"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", -1, z, 16);
    CHECK(rejects("tensor 't': data offsets"));
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, z, 16);
    CHECK(rejects("tensors 'a' and 'b' overlap"));
    write_file("{\"t\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, z, 8);
    CHECK(rejects("tensor 't': unsupported dtype 'Q4'"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", -1, z, 8);
    CHECK(rejects("tensor 't': dimension 0 is not a valid size"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", -1, z, 8);
    CHECK(rejects("tensor 't': shape overflows"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", -1, z, 8);
    CHECK(rejects("tensor 't': \"data_offsets\" must be [begin, end]"));
    write_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8]}}", -1, z, 8);
    CHECK(rejects("non-negative integers"));
    write_file("{\"t\":[1]}", -1, z, 8);
    CHECK(rejects("tensor 't': header entry is not an object"));
    snprintf(path + strlen(path), 8, ".none");
    CHECK(rejects("cannot open"));
    path[strlen(path) - 5] = 0;
}

TEST(writer_round_trip_and_truncation) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[1] = {-0.25f};
    mt_st_write_tensor ts[2] = {{"layer.a \"quoted\"", 2, {2, 3}, a}, {"b", 0, {0}, b}};
    int rc = mt_safetensors_write(path, ts, 2, err, sizeof err);
    CHECK(rc == 0);
    if (rc) { printf("# %s\n", err); return; }
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);  // the temporary name is gone after the rename
    mt_safetensors st;
    rc = mt_safetensors_open(&st, path, err, sizeof err);
    CHECK(rc == 0);
    if (rc) { printf("# %s\n", err); return; }
    const mt_st_tensor *t = mt_safetensors_find(&st, "layer.a \"quoted\"");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(((uintptr_t)t->data & 7) == 0);  // header padded so the data area is aligned
    float out[6] = {0};
    if (t) mt_st_to_f32(t, out);
    CHECK(memcmp(out, a, sizeof a) == 0);
    t = mt_safetensors_find(&st, "b");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    if (t) mt_st_to_f32(t, out);
    CHECK(out[0] == -0.25f);
    mt_safetensors_close(&st);
    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    CHECK(fread(len8, 1, 8, f) == 8);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | len8[i];
    CHECK(truncate(path, (off_t)(8 + hl + 20)) == 0);
    CHECK(rejects("tensor 'layer.a \"quoted\"': data offsets [0, 24] outside the data area of 20 bytes"));
    mt_st_write_tensor dup[2] = {{"x", 1, {1}, b}, {"x", 1, {1}, b}};
    CHECK(mt_safetensors_write(path, dup, 2, err, sizeof err) != 0 && strstr(err, "given twice"));
}

int main(void) {
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    RUN(reads_every_dtype);
    RUN(f16_conversion_special_values);
    RUN(rejects_hostile_headers);
    RUN(writer_round_trip_and_truncation);
    unlink(path);
    rmdir(dir);
    return check_summary();
}
