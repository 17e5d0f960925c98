/* Ingest benchmark: MB/s reading generated corpora of each format into a
 * token store, against plain read() of the same file in the same run.
 *
 *   bench_ingest [--size-mb N] [--runs N] [--dir DIR] [--keep]
 *                [--threads T[,T...]]
 *
 * Writes, in DIR (default /tmp/prepack-bench): corpus.jsonl (integer
 * arrays), corpus.jsonl.zst (one frame), frames.jsonl.zst (4 MiB frames),
 * corpus.bin/.idx (Megatron, uint16),
 * corpus32.bin/.idx (the same ids as Megatron int32, whose ids ingest
 * checks) and llmc.bin (llm.c GPT-2), each about N MB or more (default
 * 1024), with GPT-2 ids
 * (log-uniform ranks, compressible like real text) and log-normal
 * document lengths (median 450 tokens). Reports the median
 * of --runs runs (default 3). The files are removed unless --keep; keep
 * them to measure peak memory with `/usr/bin/time -v prepack stats FILE`
 * (bench/ingest_memory.sh). With --threads T (default 2; a list such as
 * 2,4,8,16 for a scaling curve), every input is also ingested on T
 * threads (prepack_ingest_options.threads), alternated with the 1-thread
 * run, and checked to give the same sequences and tokens. */
#define _DEFAULT_SOURCE /* sync */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "prepack.h"
#include "bench_util.h"

static uint32_t doc_length(uint64_t *s)
{
    return lognormal_length(s, 450.0, 1.0, 32768);
}

/* A GPT-2 id (never the 50256 delimiter) with a heavy-tailed, roughly
 * Zipfian frequency (log-uniform rank), as token ids of real text have:
 * uniform ids would not compress at all, and flatter every ratio against
 * zstd. */
static uint32_t token(uint64_t *s)
{
    double rank = exp(uniform01(s) * log(50256.0)); /* 1 .. 50256 */
    uint32_t id = (uint32_t)rank - 1;
    return id < 50256 ? id : 50255;
}

static char path_buf[8][4096];
static const char *in_dir(const char *dir, const char *name, int slot)
{
    snprintf(path_buf[slot], sizeof path_buf[slot], "%s/%s", dir, name);
    return path_buf[slot];
}

static void die(const char *what)
{
    fprintf(stderr, "bench_ingest: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- generating the corpora -------------------------------------------- */

typedef struct writers {
    FILE *jsonl, *bin, *bin32, *llmc;
    FILE *idx_len, *idx_ptr; /* index arrays, joined at the end */
    uint64_t bin_bytes, llmc_tokens, docs;
} writers;

static void put_le(FILE *f, uint64_t v, unsigned width)
{
    unsigned char b[8];
    for (unsigned i = 0; i < width; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    if (fwrite(b, 1, width, f) != width)
        die("write");
}

static void write_document(writers *w, const uint16_t *t, uint32_t n)
{
    fputs("{\"input_ids\": [", w->jsonl);
    for (uint32_t i = 0; i < n; i++)
        fprintf(w->jsonl, i ? ", %u" : "%u", t[i]);
    fputs("]}\n", w->jsonl);
    put_le(w->idx_len, n, 4);
    put_le(w->idx_ptr, w->bin_bytes, 8);
    if (fwrite(t, 2, n, w->bin) != n)
        die("write");
    for (uint32_t i = 0; i < n; i++) /* the same ids as int32 */
        put_le(w->bin32, t[i], 4);
    w->bin_bytes += 2ull * n;
    uint16_t sep = 50256; /* llm.c: the delimiter opens each document */
    if (fwrite(&sep, 2, 1, w->llmc) != 1 || fwrite(t, 2, n, w->llmc) != n)
        die("write");
    w->llmc_tokens += n + 1;
    w->docs++;
}

static void copy_into(FILE *out, FILE *in)
{
    char buf[1 << 16];
    size_t n;
    rewind(in);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            die("write");
}

/* Copies the uint16 .bin's byte pointers, times `scale`. */
static void copy_pointers(FILE *out, FILE *in, uint64_t scale)
{
    unsigned char b[8];
    rewind(in);
    while (fread(b, 1, 8, in) == 8) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v |= (uint64_t)b[i] << (8 * i);
        put_le(out, v * scale, 8);
    }
}

/* A Megatron index (dtype code 8: uint16, 4: int32, whose pointers are
 * twice the uint16 ones): header, lengths, pointers, then one document
 * per sequence (document index 0..n). */
static void write_index(const char *dir, const char *name, int code,
                        writers *w)
{
    FILE *idx = fopen(in_dir(dir, name, 0), "wb");
    if (!idx)
        die(name);
    fwrite("MMIDIDX\0\0", 1, 9, idx);
    put_le(idx, 1, 8);
    fputc(code, idx);
    put_le(idx, w->docs, 8);
    put_le(idx, w->docs + 1, 8);
    copy_into(idx, w->idx_len);
    copy_pointers(idx, w->idx_ptr, code == 4 ? 2 : 1);
    for (uint64_t d = 0; d <= w->docs; d++)
        put_le(idx, d, 8);
    fclose(idx);
}

static void generate(const char *dir, uint64_t target_bytes)
{
    writers w = {0};
    w.jsonl = fopen(in_dir(dir, "corpus.jsonl", 0), "wb");
    w.bin = fopen(in_dir(dir, "corpus.bin", 1), "wb");
    w.bin32 = fopen(in_dir(dir, "corpus32.bin", 3), "wb");
    w.llmc = fopen(in_dir(dir, "llmc.bin", 2), "wb");
    w.idx_len = tmpfile();
    w.idx_ptr = tmpfile();
    if (!w.jsonl || !w.bin || !w.bin32 || !w.llmc || !w.idx_len ||
        !w.idx_ptr)
        die("creating the corpus");
    char header[1024] = {0};
    fwrite(header, 1, sizeof header, w.llmc); /* filled in at the end */
    static uint16_t t[32768];
    uint64_t seed = 42;
    /* The binary files hold 2 bytes a token, JSONL about 6.7: size the
     * corpus by the larger binary one, so every file is >= target. */
    while ((uint64_t)ftell(w.jsonl) < target_bytes ||
           w.bin_bytes < target_bytes) {
        uint32_t n = doc_length(&seed);
        for (uint32_t i = 0; i < n; i++)
            t[i] = (uint16_t)token(&seed);
        write_document(&w, t, n);
    }
    int32_t h[256] = {20240520, 1, (int32_t)w.llmc_tokens};
    fseek(w.llmc, 0, SEEK_SET);
    fwrite(h, sizeof h, 1, w.llmc);
    fclose(w.jsonl);
    fclose(w.bin);
    fclose(w.bin32);
    fclose(w.llmc);
    write_index(dir, "corpus.idx", 8, &w);
    write_index(dir, "corpus32.idx", 4, &w);
    fclose(w.idx_len);
    fclose(w.idx_ptr);
}

static void compress_jsonl(const char *dir)
{
    FILE *in = fopen(in_dir(dir, "corpus.jsonl", 0), "rb");
    FILE *out = fopen(in_dir(dir, "corpus.jsonl.zst", 1), "wb");
    if (!in || !out)
        die("corpus.jsonl.zst");
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    static char ib[1 << 20], ob[1 << 20];
    size_t n;
    do {
        n = fread(ib, 1, sizeof ib, in);
        ZSTD_EndDirective mode = n < sizeof ib ? ZSTD_e_end : ZSTD_e_continue;
        ZSTD_inBuffer input = {ib, n, 0};
        int done;
        do {
            ZSTD_outBuffer output = {ob, sizeof ob, 0};
            size_t left = ZSTD_compressStream2(c, &output, &input, mode);
            fwrite(ob, 1, output.pos, out);
            done = mode == ZSTD_e_end ? left == 0 : input.pos == input.size;
        } while (!done);
    } while (n == sizeof ib);
    ZSTD_freeCCtx(c);
    fclose(in);
    fclose(out);
}

/* The same JSON as frames of 4 MiB each (as pzstd or the seekable
 * format write them): decompressed frame by frame on the workers. */
static void compress_jsonl_frames(const char *dir)
{
    FILE *in = fopen(in_dir(dir, "corpus.jsonl", 0), "rb");
    FILE *out = fopen(in_dir(dir, "frames.jsonl.zst", 1), "wb");
    if (!in || !out)
        die("frames.jsonl.zst");
    size_t cap = (size_t)4 << 20, bound = ZSTD_compressBound(cap);
    char *ib = malloc(cap), *ob = malloc(bound);
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    size_t n;
    while (ib && ob && (n = fread(ib, 1, cap, in)) > 0) {
        size_t z = ZSTD_compress2(c, ob, bound, ib, n);
        if (ZSTD_isError(z) || fwrite(ob, 1, z, out) != z)
            die("frames.jsonl.zst");
    }
    ZSTD_freeCCtx(c);
    free(ib);
    free(ob);
    fclose(in);
    fclose(out);
}

/* ---- timing ------------------------------------------------------------------ */

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Plain read() of a file into a 1 MiB buffer: the baseline. */
static double time_read(const char *path)
{
    static char buf[1 << 20];
    double t0 = now();
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die(path);
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    return now() - t0;
}

static double time_ingest(const char *dir, const char *path, int lengths_only,
                          int threads, uint64_t *sequences, uint64_t *tokens)
{
    prepack_store_options so = {.tmp_dir = dir, .lengths_only = lengths_only};
    prepack_ingest_options io = {.threads = threads};
    prepack_store *s = NULL;
    prepack_diag d = {0};
    double t0 = now();
    int rc = prepack_store_create(&s, &so, &d);
    if (rc == PREPACK_OK)
        rc = prepack_ingest_file(s, path, &io, &d);
    if (rc == PREPACK_OK)
        rc = prepack_store_finish(s, &d);
    double t = now() - t0;
    if (rc != PREPACK_OK) {
        fprintf(stderr, "bench_ingest: %s\n", d.message);
        exit(1);
    }
    *sequences = prepack_store_sequence_count(s);
    *tokens = prepack_store_token_count(s);
    prepack_store_free(s);
    return t;
}

enum { MAX_COUNTS = 8 };

/* The thread counts to time beside one thread: --threads 2 or 2,4,8,16. */
typedef struct counts {
    int n, t[MAX_COUNTS];
} counts;

/* Ingests `name` and reads it plainly, alternately, `runs` times, on one
 * thread and on each count. MB/s counts the bytes of `content` (the
 * uncompressed JSON for .zst); the baseline reads `name` itself. */
static void bench_file(const char *dir, const char *name, const char *label,
                       const char *content, int lengths_only, int runs,
                       const counts *c)
{
    char path[4096], plain[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(plain, sizeof plain, "%s/%s", dir, content);
    double tr[32], ti[32], tt[MAX_COUNTS][32];
    uint64_t seqs = 0, toks = 0, seqs_t = 0, toks_t = 0;
    for (int r = 0; r < runs; r++) {
        tr[r] = time_read(path);
        ti[r] = time_ingest(dir, path, lengths_only, 1, &seqs, &toks);
        for (int k = 0; k < c->n; k++) {
            tt[k][r] = time_ingest(dir, path, lengths_only, c->t[k], &seqs_t,
                                   &toks_t);
            if (seqs_t != seqs || toks_t != toks) {
                fprintf(stderr,
                        "bench_ingest: %s on %d threads gave other "
                        "sequences\n",
                        name, c->t[k]);
                exit(1);
            }
        }
    }
    double file_mb = (double)file_size(path) / 1e6;
    double mb = (double)file_size(plain) / 1e6;
    double read_s = median(tr, runs), ingest_s = median(ti, runs);
    printf("%-10s %9.1f %9.1f %9llu %11llu %9.3f %9.0f %10.0f %7.2fx", label,
           file_mb, mb, (unsigned long long)seqs, (unsigned long long)toks,
           ingest_s, mb / ingest_s, file_mb / read_s, ingest_s / read_s);
    for (int k = 0; k < c->n; k++) {
        double threads_s = median(tt[k], runs);
        printf(" %9.0f %7.2fx", mb / threads_s, ingest_s / threads_s);
    }
    printf("\n");
}

static int parse_counts(const char *arg, counts *c)
{
    c->n = 0;
    for (const char *p = arg; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1024 || c->n == MAX_COUNTS)
            return 0;
        c->t[c->n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return 0;
    }
    return c->n > 0;
}

int main(int argc, char **argv)
{
    double size_mb = 1024;
    int runs = 3, keep = 0;
    counts threads = {1, {2}};
    const char *dir = "/tmp/prepack-bench";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size-mb") && i + 1 < argc)
            size_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc &&
                 parse_counts(argv[i + 1], &threads))
            i++;
        else {
            fprintf(stderr, "usage: bench_ingest [--size-mb N] [--runs N] "
                            "[--dir DIR] [--keep] [--threads T[,T...]]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 31 || !(size_mb > 0)) {
        fprintf(stderr, "bench_ingest: --runs 1..31, --size-mb > 0\n");
        return 2;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die(dir);
    double t0 = now();
    generate(dir, (uint64_t)(size_mb * 1e6));
    compress_jsonl(dir);
    compress_jsonl_frames(dir);
    /* Let the generated files reach the disk before timing: writeback
     * running under the benchmark would slow whatever writes. */
    sync();
    fprintf(stderr, "generated in %.1f s\n", now() - t0);

    printf("prepack %s ingest benchmark: median of %d runs, one thread "
           "beside",
           prepack_version(), runs);
    for (int k = 0; k < threads.n; k++)
        printf(" %d", threads.t[k]);
    printf(" (MB/s_T, xT: speed-up over one thread)\n");
    printf("%-10s %9s %9s %9s %11s %9s %9s %10s %8s", "format", "file_MB",
           "data_MB", "seqs", "tokens", "ingest_s", "MB/s", "read_MB/s",
           "/read");
    for (int k = 0; k < threads.n; k++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "MB/s_%d", threads.t[k]);
        snprintf(b, sizeof b, "x%d", threads.t[k]);
        printf(" %9s %8s", a, b);
    }
    printf("\n");
    bench_file(dir, "corpus.jsonl", "jsonl", "corpus.jsonl", 0, runs, &threads);
    bench_file(dir, "corpus.jsonl", "jsonl*", "corpus.jsonl", 1, runs,
               &threads);
    bench_file(dir, "corpus.jsonl.zst", "jsonl.zst", "corpus.jsonl", 0, runs,
               &threads);
    bench_file(dir, "frames.jsonl.zst", "jsonl.zst*", "corpus.jsonl", 0,
               runs, &threads);
    bench_file(dir, "corpus.bin", "megatron", "corpus.bin", 0, runs, &threads);
    bench_file(dir, "corpus32.bin", "megatron32", "corpus32.bin", 0, runs,
               &threads);
    bench_file(dir, "llmc.bin", "llmc", "llmc.bin", 0, runs, &threads);
    printf("jsonl*: lengths only (what prepack stats does); megatron reads "
           "the .idx alone (uint16 ids need no check); megatron32: the same "
           "ids as int32, every one checked; jsonl.zst*: 4 MiB frames, "
           "decompressed on the workers\n");
    if (!keep) {
        const char *names[] = {"corpus.jsonl", "corpus.jsonl.zst",
                               "frames.jsonl.zst", "corpus.bin",
                               "corpus.idx",   "corpus32.bin",
                               "corpus32.idx", "llmc.bin"};
        for (int i = 0; i < 8; i++)
            unlink(in_dir(dir, names[i], 0));
        rmdir(dir);
    }
    return 0;
}
