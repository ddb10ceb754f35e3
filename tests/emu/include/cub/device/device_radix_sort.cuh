// device_radix_sort.cuh — cub::DeviceRadixSort::SortPairs for kernels run on tests/emu/cuda_emu.h,
// shadowing the real CUB (the Makefile's -Itests/emu/include comes before the CUDA headers in the
// emulator builds only). Emulated as kernels/backward.cu calls it: a call with a null
// d_temp_storage only reports temp_storage_bytes; the sort then needs at least that many, or it
// returns cudaErrorInvalidValue (CUB's own answer), and it works in that storage (two key and two
// value buffers), so a caller that hands it less than it asked for, or storage overlapping other
// buffers, shows (ASan, or the NaN-filled workspace). The sort is CUB's: stable, by bits
// [begin_bit, end_bit) of the key with a signed key's sign bit flipped (negatives first), an LSD
// radix sort of 8-bit digits. It is the sort's result, not CUB's kernels: no kernel is launched,
// the sort is one operation on cuda_emu.h's stream (so cuda_emu.h comes first).
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

namespace cub {

struct DeviceRadixSort {
    template <typename KeyT, typename ValueT, typename NumItemsT>
    static cudaError_t SortPairs(void *d_temp_storage, size_t &temp_storage_bytes, const KeyT *d_keys_in,
                                 KeyT *d_keys_out, const ValueT *d_values_in, ValueT *d_values_out, NumItemsT num_items,
                                 int begin_bit = 0, int end_bit = sizeof(KeyT) * 8, cudaStream_t stream = 0) {
        static_assert(std::is_integral<KeyT>::value && sizeof(KeyT) <= 8, "integer keys only");
        using U = std::make_unsigned_t<KeyT>;
        const size_t n = num_items > 0 ? (size_t)num_items : 0;
        const size_t needed = 2 * n * (sizeof(KeyT) + sizeof(ValueT)) + 16;  // ping-pong buffers (+ slack: never 0)
        if (!d_temp_storage) {
            temp_storage_bytes = needed;
            return cudaSuccess;
        }
        if (temp_storage_bytes < needed || begin_bit < 0 || end_bit > (int)sizeof(KeyT) * 8 || begin_bit > end_bit)
            return cudaErrorInvalidValue;
        // the sort itself runs on the stream, after what was enqueued before it (mt_emu::set_async)
        mt_emu::enqueue([=] {
            U *keys[2] = {(U *)d_temp_storage, (U *)d_temp_storage + n};
            static_assert(alignof(ValueT) <= alignof(KeyT), "the values follow the keys in the temporary storage");
            ValueT *vals[2] = {(ValueT *)(keys[1] + n), (ValueT *)(keys[1] + n) + n};
            const U flip = std::is_signed<KeyT>::value ? (U)((U)1 << (sizeof(KeyT) * 8 - 1)) : 0;
            for (size_t i = 0; i < n; i++) keys[0][i] = (U)d_keys_in[i] ^ flip, vals[0][i] = d_values_in[i];
            int cur = 0;
            for (int bit = begin_bit; bit < end_bit; bit += 8) {  // stable counting sort by each digit
                const int width = end_bit - bit < 8 ? end_bit - bit : 8;
                const U mask = (U)((1u << width) - 1);
                size_t start[257] = {0};
                for (size_t i = 0; i < n; i++) start[((keys[cur][i] >> bit) & mask) + 1]++;
                for (int d = 0; d < 256; d++) start[d + 1] += start[d];
                for (size_t i = 0; i < n; i++) {
                    const size_t to = start[(keys[cur][i] >> bit) & mask]++;
                    keys[1 - cur][to] = keys[cur][i], vals[1 - cur][to] = vals[cur][i];
                }
                cur = 1 - cur;
            }
            for (size_t i = 0; i < n; i++) d_keys_out[i] = (KeyT)(keys[cur][i] ^ flip), d_values_out[i] = vals[cur][i];
        });
        (void)stream;  // the emulator's one stream
        return cudaSuccess;
    }
};

}  // namespace cub
