/* Fuzz target: manifest.json. The input is the manifest of a directory
 * that also holds the golden set's two shard files, so a manifest that
 * parses gets checked against real shards (sizes, seek tables, rows) and
 * its rows are read. */
#include "fuzz_util.h"

#include <stdint.h>

#include "prepack.h"

#ifndef PREPACK_GOLDEN_DIR
#define PREPACK_GOLDEN_DIR "fixtures/expected/set"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct blob {
    unsigned char *p;
    size_t n;
} blob;

static blob slurp(const char *name)
{
    blob b = {NULL, 0};
    char path[512];
    snprintf(path, sizeof path, "%s/%s", PREPACK_GOLDEN_DIR, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return b;
    b.p = malloc(1 << 16);
    if (b.p)
        b.n = fread(b.p, 1, 1 << 16, f);
    fclose(f);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static blob s0, s1; /* the golden shards, read once per process */
    if (!s0.p) {
        s0 = slurp("shard-00000.zst");
        s1 = slurp("shard-00001.zst");
    }
    fuzz_dir dir;
    if (fuzz_dir_make(&dir) != 0)
        return 0;
    fuzz_dir_put(&dir, "shard-00000.zst", s0.p, s0.n, NULL, 0);
    fuzz_dir_put(&dir, "shard-00001.zst", s1.p, s1.n, NULL, 0);
    fuzz_dir_put(&dir, "manifest.json", data, size, NULL, 0);
    fuzz_read_set(dir.path, 64);
    fuzz_dir_remove(&dir);
    return 0;
}
