/* Fuzz target: the records of a job in steps (docs/SCALE.md), which any
 * byte of may be crafted with a correct XXH64 (a checksum, not a key).
 * Input: a selector byte, then a record's bytes without its hash; the
 * target appends the hash, so the fuzzer gets past the checksum:
 *   selector % 3   0: scan-00000.meta, driven by plan, write, finalize
 *                  1: plan.meta, driven by write and finalize
 *                  2: write-00000-of-00001.meta, driven by finalize
 *   (the records of the steps after it removed, so each step reads it
 *   rather than find its own output done)
 *   selector & 0x80  clear: the good record's key is written over bytes
 *                    8..15, so the fuzzer reaches past the key check.
 * A good job (a small JSONL input, scanned, planned, written) is made
 * once in a temporary directory; each input restores its files and
 * replaces one record. Whatever the bytes, the steps fail cleanly or
 * finish a set; the sanitizers and the loops' bounds do the checking.
 * With PREPACK_FUZZ_JOB_SEEDS=DIR set, the good records are written
 * there as seeds (fuzz/corpus/job/). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "fuzz_util.h"
#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_FILES = 32 };

typedef struct golden {
    int ready;
    int base_fd; /* the temporary directory: paths are relative to it */
    char base[64];
    char names[MAX_FILES][64]; /* "o/..." */
    unsigned char *bytes[MAX_FILES];
    size_t sizes[MAX_FILES];
    int count;
} golden;

static const char *const INPUTS[] = {"in.jsonl"};
static const char *const RECORDS[] = {
    "o/.prepack-job/scan-00000.meta", "o/.prepack-job/plan.meta",
    "o/.prepack-job/write-00000-of-00001.meta"};

static prepack_step_options options(void)
{
    prepack_step_options o;
    memset(&o, 0, sizeof o);
    o.inputs = INPUTS;
    o.ninputs = 1;
    o.plan.max_seq_len = 48;
    o.plan.overlong = PREPACK_OVERLONG_SPLIT;
    o.writer.shard_rows = 3;
    o.writer.rows_per_frame = 2;
    return o;
}

static void write_input(void)
{
    FILE *f = fopen("in.jsonl", "w");
    if (!f)
        abort();
    for (int i = 0; i < 20; i++) {
        int n = 1 + (i * 7) % 60;
        fputs("{\"input_ids\": [", f);
        for (int k = 0; k < n; k++)
            fprintf(f, "%s%d", k ? ", " : "", (i * 131 + k * 17) % 1000);
        if (i % 3 == 0) {
            fputs("], \"loss_mask\": [", f);
            for (int k = 0; k < n; k++)
                fprintf(f, "%s%d", k ? ", " : "", (i + k) % 2);
        }
        fputs("]}\n", f);
    }
    fclose(f);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*n ? *n : 1);
    if (!p || fread(p, 1, *n, f) != *n)
        abort();
    fclose(f);
    return p;
}

static void keep_dir(golden *g, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char path[128];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".prepack-job") != 0)
            continue;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
            g->count == MAX_FILES)
            continue;
        snprintf(g->names[g->count], sizeof g->names[0], "%s", path);
        g->bytes[g->count] = slurp(path, &g->sizes[g->count]);
        g->count++;
    }
    if (d)
        closedir(d);
}

static void write_seeds(const golden *g, const char *dir)
{
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < g->count; i++) {
            if (strcmp(g->names[i], RECORDS[k]) != 0)
                continue;
            char path[4200];
            snprintf(path, sizeof path, "%s/good-%d", dir, k);
            FILE *f = fopen(path, "wb");
            unsigned char sel = (unsigned char)k;
            if (f) {
                fwrite(&sel, 1, 1, f);
                fwrite(g->bytes[i], 1, g->sizes[i] - 8, f);
                fclose(f);
            }
        }
}

static char base_to_remove[64];

static void remove_base(void)
{
    char path[128];
    const char *sub[] = {"o/.prepack-job", "o"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", base_to_remove, sub[i]);
        fuzz_remove_tree(path);
    }
    snprintf(path, sizeof path, "%s/in.jsonl", base_to_remove);
    unlink(path);
    rmdir(base_to_remove);
}

/* The good job, once: in.jsonl scanned, planned and written into o/. */
static void make_golden(golden *g)
{
    snprintf(g->base, sizeof g->base, "/tmp/prepack-fuzz-job-XXXXXX");
    if (!mkdtemp(g->base) || (g->base_fd = open(g->base, O_RDONLY)) < 0)
        abort();
    snprintf(base_to_remove, sizeof base_to_remove, "%s", g->base);
    atexit(remove_base);
    int cwd = open(".", O_RDONLY);
    if (cwd < 0 || fchdir(g->base_fd) != 0)
        abort();
    write_input();
    prepack_step_options o = options();
    if (prepack_step_scan("o", &o, 0, 1, NULL, NULL) != PREPACK_OK ||
        prepack_step_plan("o", &o, 1, NULL, NULL) != PREPACK_OK ||
        prepack_step_write("o", &o, 0, 1, NULL, NULL) != PREPACK_OK)
        abort();
    keep_dir(g, "o/.prepack-job");
    keep_dir(g, "o");
    if (fchdir(cwd) != 0)
        abort();
    close(cwd);
    const char *seeds = getenv("PREPACK_FUZZ_JOB_SEEDS");
    if (seeds)
        write_seeds(g, seeds);
    g->ready = 1;
}

/* o/ as the good job left it. */
static void restore(const golden *g)
{
    fuzz_remove_tree("o/.prepack-job");
    fuzz_remove_tree("o");
    mkdir("o", 0777);
    mkdir("o/.prepack-job", 0777);
    for (int i = 0; i < g->count; i++) {
        FILE *f = fopen(g->names[i], "wb");
        if (!f)
            abort();
        fwrite(g->bytes[i], 1, g->sizes[i], f);
        fclose(f);
    }
}

static void put_record(const golden *g, int k, const uint8_t *p, size_t n,
                       int keep_key)
{
    unsigned char *b = malloc(n + 8);
    if (!b)
        abort();
    if (n)
        memcpy(b, p, n);
    for (int i = 0; !keep_key && i < g->count; i++)
        if (!strcmp(g->names[i], RECORDS[k]) && n >= 16 && g->sizes[i] >= 16)
            memcpy(b + 8, g->bytes[i] + 8, 8);
    uint64_t h = XXH64(b, n, 0);
    for (int i = 0; i < 8; i++)
        b[n + (size_t)i] = (unsigned char)(h >> (8 * i));
    FILE *f = fopen(RECORDS[k], "wb");
    if (!f)
        abort();
    fwrite(b, 1, n + 8, f);
    fclose(f);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static golden g;
    if (!g.ready)
        make_golden(&g);
    if (size < 1)
        return 0;
    int cwd = open(".", O_RDONLY);
    if (cwd < 0 || fchdir(g.base_fd) != 0)
        abort();
    restore(&g);
    int k = data[0] % 3;
    put_record(&g, k, data + 1, size - 1, data[0] & 0x80);
    /* the later steps' records go, so the steps read this one whole
     * rather than find their own output done */
    for (int later = k + 1; later < 3; later++)
        unlink(RECORDS[later]);
    prepack_step_options o = options();
    int rc = PREPACK_OK;
    if (k == 0)
        rc = prepack_step_plan("o", &o, 1, NULL, NULL);
    if (rc == PREPACK_OK && k <= 1)
        rc = prepack_step_write("o", &o, 0, 1, NULL, NULL);
    if (rc == PREPACK_OK)
        prepack_step_finalize("o", &o, 1, 1, NULL, NULL);
    if (fchdir(cwd) != 0)
        abort();
    close(cwd);
    return 0;
}
