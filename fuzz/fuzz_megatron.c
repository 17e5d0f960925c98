/* Fuzz target: Megatron .idx/.bin pairs. The first 4 bytes (little endian)
 * say how many of the rest are the .idx; the remainder is the .bin. Every
 * dtype the .idx names is read, so the target covers the header, the
 * sizes/pointers/document arrays and the token checks. */
#include "fuzz_util.h"

#include <stdint.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t split = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
                     (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
    data += 4;
    size -= 4;
    size_t idx_size = split <= size ? split : size;
    fuzz_dir dir;
    if (fuzz_dir_make(&dir) != 0)
        return 0;
    char bin[128];
    fuzz_dir_put(&dir, "m.idx", data, idx_size, NULL, 0);
    fuzz_dir_put(&dir, "m.bin", data + idx_size, size - idx_size, bin,
                 sizeof bin);
    prepack_store *s = NULL;
    prepack_diag d;
    prepack_ingest_options io = {.format = PREPACK_FORMAT_MEGATRON};
    if (prepack_store_create(&s, NULL, &d) == PREPACK_OK &&
        prepack_ingest_file(s, bin, &io, &d) == PREPACK_OK &&
        prepack_store_finish(s, &d) == PREPACK_OK) {
        uint32_t buf[256];
        size_t docs = prepack_store_document_count(s);
        for (size_t i = 0; i < docs; i++)
            (void)prepack_store_document_start(s, i);
        for (size_t i = 0; i < prepack_store_sequence_count(s); i++)
            if (prepack_store_lengths(s)[i] <= 256)
                prepack_store_copy(s, i, buf);
    }
    prepack_store_free(s);
    fuzz_dir_remove(&dir);
    return 0;
}
