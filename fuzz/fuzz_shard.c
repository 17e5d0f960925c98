/* Fuzz target: reading a shard set of one shard, with a manifest made to
 * agree on its size. Byte 0: bit 7 picks the mode, bits 0-6 are rows - 1;
 * byte 1: rows_per_frame - 1 (shard mode), the format (rows mode).
 *  - shard mode (bit 7 clear): the rest is the shard file, so the reader
 *    has to survive any seek table, frame and row;
 *  - rows mode (bit 7 set): the rest is one frame's content (msgpack rows),
 *    which the target compresses and gives a correct seek table, so the
 *    fuzzer's changes reach the row decoder instead of dying at zstd's
 *    checksum. Byte 1's bit 7 makes it a version 4 set (bit 6: uint32
 *    ids): the rest is then a u16 (little-endian) count of ids, the id
 *    table, then the rows, wrapped with an index whose hashes agree, so
 *    any table and any id codes reach the decoder. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

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

/* FUZZ_SHARD_DEBUG set: what verify finds, to see how far inputs get. */
static void say(void *opaque, const prepack_diag *d)
{
    (void)opaque;
    fprintf(stderr, "  %s\n", d->message);
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
    static unsigned char wrapped[1 << 18];
    int coded = rows_mode && skip == 2 && (data[-1] & 0x80);
    unsigned width = coded && (data[-1] & 0x40) ? 4 : 2;
    if (coded) {
        size_t ntable = size >= 2 ? (size_t)(data[0] | data[1] << 8) : 0;
        size_t at = size >= 2 ? 2 : size;
        if (ntable > (size - at) / width)
            ntable = (size - at) / width;
        rpf = rows;
        size = wrap_as_v4_shard(data + at + ntable * width,
                                size - at - ntable * width, data + at, ntable,
                                width, wrapped, sizeof wrapped);
        data = wrapped;
    } else if (rows_mode) {
        rpf = rows; /* one frame holds them all */
        size = wrap_as_shard(data, size, wrapped, sizeof wrapped);
        data = wrapped;
    }
    snprintf(path, sizeof path, "%s/shard-00000.zst", dir);
    put(path, data, size);
    int n = snprintf(manifest, sizeof manifest,
                     "{\"format\": \"prepack-shards\", \"version\": %d, "
                     "\"max_seq_len\": %u, \"token_dtype\": \"uint%u\", "
                     "\"rows_per_frame\": %u, \"shards\": [{\"file\": "
                     "\"shard-00000.zst\", \"rows\": %u, \"tokens\": %u, "
                     "\"bytes\": %zu, \"xxh64\": \"%016llx\"}], \"rows\": %u, "
                     "\"tokens\": %u}",
                     coded ? 4 : 1, coded ? 4096u : 64u, 8 * width, rpf, rows,
                     rows, size, (unsigned long long)XXH64(data, size, 0), rows,
                     rows);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    put(path, manifest, (size_t)n);
    prepack_reader *r = NULL;
    prepack_diag d;
    int debug = getenv("FUZZ_SHARD_DEBUG") != NULL;
    int opened = prepack_reader_open(&r, dir, NULL, &d);
    if (opened != PREPACK_OK && debug)
        fprintf(stderr, "%s\n", d.message);
    if (opened == PREPACK_OK) {
        size_t bad = prepack_reader_verify(r, debug ? say : NULL, NULL);
        if (debug)
            fprintf(stderr, "opened, %zu problems\n", bad);
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
