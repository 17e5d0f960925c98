/* Fuzz target: reading a shard set of one shard, with a manifest made to
 * agree on its size. Byte 0: bit 7 picks the mode, bits 0-6 are rows - 1;
 * byte 1: rows_per_frame - 1.
 *  - shard mode (bit 7 clear): the rest is the shard file, so the reader
 *    has to survive any seek table, frame and row;
 *  - rows mode (bit 7 set): the rest is one frame's content (msgpack rows),
 *    which the target compresses and gives a correct seek table, so the
 *    fuzzer's changes reach the row decoder instead of dying at zstd's
 *    checksum. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepack.h"
#include "shard_wrap.h"

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
    int rows_mode = size > 0 && (data[0] & 0x80);
    unsigned rows = size > 0 ? 1u + (data[0] & 0x7F) : 1;
    unsigned rpf = size > 1 ? 1u + data[1] % 64 : 4;
    size_t skip = size < 2 ? size : 2;
    data += skip;
    size -= skip;
    static unsigned char wrapped[1 << 17];
    if (rows_mode) {
        rpf = rows; /* one frame holds them all */
        size = wrap_as_shard(data, size, wrapped, sizeof wrapped);
        data = wrapped;
    }
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
