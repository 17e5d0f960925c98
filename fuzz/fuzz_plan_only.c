/* Fuzz target: a plan-only set's manifest.json (docs/FORMAT.md version 2).
 * The input is the manifest of a directory holding a real plan-only
 * shard whose rows reference real input files: an llm.c file (uint16)
 * and an int32 Megatron .bin/.idx with ids past 65535, both at fixed
 * paths (built once per process, deterministically, so the seeds'
 * absolute paths and hashes stay valid). A manifest that parses gets its
 * sources opened and checked, every row read and the set verified. */
#include "fuzz_util.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIXED_DIR "/tmp/prepack-fuzz-plan-only-v1"

enum { DOCS = 120, L = 64 };

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static void put_le(FILE *f, uint64_t v, unsigned width)
{
    for (unsigned i = 0; i < width; i++)
        fputc((int)((v >> (8 * i)) & 0xff), f);
}

/* llm.c: a 1024-byte header, then uint16 tokens, documents opened by
 * 50256; long enough that the sampled hash samples. */
static int write_llmc(const char *path)
{
    uint64_t s = 1;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint32_t n = 0, len[DOCS];
    for (int d = 0; d < DOCS; d++)
        n += 1 + (len[d] = (uint32_t)(next(&s) % 150));
    put_le(f, 20240520, 4);
    put_le(f, 1, 4);
    put_le(f, n, 4);
    for (int i = 3; i < 256; i++)
        put_le(f, 0, 4);
    for (int d = 0; d < DOCS; d++) {
        put_le(f, 50256, 2);
        for (uint32_t i = 0; i < len[d]; i++)
            put_le(f, next(&s) % 50000, 2);
    }
    return fclose(f);
}

/* PREFIX.bin (int32 ids up to 100000) and PREFIX.idx, as Megatron's
 * builder writes them. */
static int write_megatron(const char *prefix)
{
    uint64_t s = 2;
    char path[256];
    uint32_t len[DOCS];
    snprintf(path, sizeof path, "%s.bin", prefix);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    for (int d = 0; d < DOCS; d++) {
        len[d] = (uint32_t)(next(&s) % 150);
        for (uint32_t i = 0; i < len[d]; i++)
            put_le(f, next(&s) % 100000, 4);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s.idx", prefix);
    if (!(f = fopen(path, "wb")))
        return -1;
    fwrite("MMIDIDX\0\0", 1, 9, f);
    put_le(f, 1, 8);
    fputc(4, f); /* int32 */
    put_le(f, DOCS, 8);
    put_le(f, DOCS + 1, 8);
    for (int d = 0; d < DOCS; d++)
        put_le(f, len[d], 4);
    uint64_t at = 0;
    for (int d = 0; d < DOCS; d++) {
        put_le(f, at, 8);
        at += 4 * (uint64_t)len[d];
    }
    for (int d = 0; d <= DOCS; d++)
        put_le(f, (uint64_t)d, 8);
    return fclose(f);
}

/* The plan-only set of both inputs, split at L, in dir/set. */
static int write_set(const char *dir)
{
    char a[256], m[256], out[256];
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(m, sizeof m, "%s/m", dir);
    snprintf(out, sizeof out, "%s/set", dir);
    if (write_llmc(a) != 0 || write_megatron(m) != 0)
        return -1;
    prepack_store *st = NULL;
    prepack_store_options so = {.tmp_dir = dir};
    prepack_plan *plan = NULL;
    prepack_row_builder *b = NULL;
    prepack_writer *w = NULL;
    prepack_plan_options po = {.max_seq_len = L,
                               .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_writer_options wo = {.rows_per_frame = 7, .references = 1};
    int rc = prepack_store_create(&st, &so, NULL);
    if (rc == PREPACK_OK)
        rc = prepack_ingest_file(st, a, NULL, NULL);
    if (rc == PREPACK_OK)
        rc = prepack_ingest_file(st, m, NULL, NULL);
    if (rc == PREPACK_OK)
        rc = prepack_store_finish(st, NULL);
    if (rc == PREPACK_OK)
        rc = prepack_plan_create(&plan, prepack_store_lengths(st),
                                 prepack_store_sequence_count(st), &po, NULL);
    if (rc == PREPACK_OK)
        rc = prepack_row_builder_create(&b, plan, st, NULL);
    if (rc == PREPACK_OK)
        rc = prepack_writer_create(&w, out, L, prepack_store_dtype(st), &wo,
                                   NULL);
    for (size_t r = 0; rc == PREPACK_OK && r < prepack_plan_row_count(plan);
         r++) {
        prepack_row row;
        prepack_row_references references;
        rc = prepack_row_builder_get_references(b, r, &row, &references);
        if (rc == PREPACK_OK)
            rc = prepack_writer_add_references(w, &row, &references, NULL);
    }
    prepack_manifest_info info = {&po, st, NULL};
    if (rc == PREPACK_OK)
        rc = prepack_writer_finish(w, &info, NULL);
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(st);
    return rc == PREPACK_OK ? 0 : -1;
}

typedef struct blob {
    unsigned char *p;
    size_t n;
} blob;

/* The fixed directory's shard, the set built there first when missing
 * (the manifest records the inputs' absolute paths, so it is built where
 * it stays). */
static blob the_shard(void)
{
    blob s = {NULL, 0};
    struct stat st;
    /* two builds' replays may start at once: one builds, the other waits */
    int lock = open(FIXED_DIR ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) != 0)
        abort();
    if (stat(FIXED_DIR "/set/manifest.json", &st) != 0) {
        mkdir(FIXED_DIR, 0700);
        if (write_set(FIXED_DIR) != 0) {
            fprintf(stderr, "fuzz_plan_only: cannot build %s\n", FIXED_DIR);
            abort();
        }
    }
    close(lock);
    FILE *f = fopen(FIXED_DIR "/set/shard-00000.zst", "rb");
    if (!f)
        abort();
    s.p = malloc(1 << 20);
    s.n = s.p ? fread(s.p, 1, 1 << 20, f) : 0;
    fclose(f);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static blob shard; /* read once per process */
    if (!shard.p)
        shard = the_shard();
    fuzz_dir dir;
    if (fuzz_dir_make(&dir) != 0)
        return 0;
    fuzz_dir_put(&dir, "shard-00000.zst", shard.p, shard.n, NULL, 0);
    fuzz_dir_put(&dir, "manifest.json", data, size, NULL, 0);
    fuzz_read_set(dir.path, 512);
    fuzz_dir_remove(&dir);
    return 0;
}
