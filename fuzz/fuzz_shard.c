/* Fuzz target: reading a shard set whose one shard holds the input bytes
 * after the first two (rows - 1 and rows_per_frame - 1), with a manifest
 * made to agree on the size, so the reader gets past it and has to
 * survive the seek table, frames and msgpack rows. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[] = "/tmp/prepack-fuzz-shard-XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    char path[128], manifest[1024];
    unsigned rows = size > 0 ? 1u + data[0] : 1;
    unsigned rpf = size > 1 ? 1u + data[1] % 64 : 4;
    size_t skip = size < 2 ? size : 2;
    data += skip;
    size -= skip;
    snprintf(path, sizeof path, "%s/shard-00000.zst", dir);
    put(path, data, size);
    int n = snprintf(manifest, sizeof manifest,
                     "{\"format\": \"prepack-shards\", \"version\": 1, "
                     "\"max_seq_len\": 64, \"token_dtype\": \"uint16\", "
                     "\"rows_per_frame\": %u, \"shards\": [{\"file\": "
                     "\"shard-00000.zst\", \"rows\": %u, \"tokens\": 0, "
                     "\"bytes\": %zu, \"xxh64\": \"0000000000000000\"}]}",
                     rpf, rows, size);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    put(path, manifest, (size_t)n);
    prepack_reader *r = NULL;
    prepack_diag d;
    if (prepack_reader_open(&r, dir, NULL, &d) == PREPACK_OK) {
        prepack_reader_verify(r, NULL, NULL);
        size_t pick[3] = {0, 1, 2};
        prepack_batch b;
        prepack_batch_options po = {.padded = 1};
        prepack_reader_batch(r, pick, 3, &po, &b, &d);
    }
    prepack_reader_free(r);
    snprintf(path, sizeof path, "%s/shard-00000.zst", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}
