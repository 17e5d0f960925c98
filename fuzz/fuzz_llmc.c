/* Fuzz target: llm.c token files (256 x int32 header + tokens), raw uint16
 * files and the detection between them: the input is x.bin, read as llm.c
 * (delimiter from the header), as raw uint16 and with the format detected. */
#include "fuzz_util.h"

#include <stdint.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ingest(const char *path, prepack_format format, int has_sep)
{
    prepack_store *s = NULL;
    prepack_diag d;
    prepack_ingest_options io = {
        .format = format, .has_doc_sep = has_sep, .doc_sep = 50256};
    if (prepack_store_create(&s, NULL, &d) == PREPACK_OK &&
        prepack_ingest_file(s, path, &io, &d) == PREPACK_OK &&
        prepack_store_finish(s, &d) == PREPACK_OK) {
        uint32_t buf[256];
        for (size_t i = 0; i < prepack_store_sequence_count(s); i++)
            if (prepack_store_lengths(s)[i] <= 256)
                prepack_store_copy(s, i, buf);
    }
    prepack_store_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir dir;
    if (fuzz_dir_make(&dir) != 0)
        return 0;
    char path[128];
    fuzz_dir_put(&dir, "x.bin", data, size, path, sizeof path);
    ingest(path, PREPACK_FORMAT_LLMC, 0);
    ingest(path, PREPACK_FORMAT_RAW_U16, 1);
    ingest(path, PREPACK_FORMAT_AUTO, 0);
    fuzz_dir_remove(&dir);
    return 0;
}
