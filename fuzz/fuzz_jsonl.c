/* Fuzz target: JSON lines ingest (through a temporary file, as the reader
 * takes paths), with masks and labels. */
#define _DEFAULT_SOURCE /* mkstemps */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/prepack-fuzz-XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    prepack_store *s = NULL;
    prepack_diag d;
    if (prepack_store_create(&s, NULL, &d) == PREPACK_OK &&
        prepack_ingest_file(s, path, NULL, &d) == PREPACK_OK &&
        prepack_store_finish(s, &d) == PREPACK_OK) {
        uint32_t buf[64];
        for (size_t i = 0; i < prepack_store_sequence_count(s); i++)
            if (prepack_store_lengths(s)[i] <= 64) {
                prepack_store_copy(s, i, buf);
                (void)prepack_store_loss_mask(s, i);
            }
    }
    prepack_store_free(s);
    unlink(path);
    return 0;
}
