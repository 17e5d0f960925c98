/* Fuzz target: the whole pipeline on inputs the bytes describe. Header:
 * max_seq_len, algorithm, overlong policy, rows per frame, rows per shard,
 * token width, a mask flag and a seed; then one byte per sequence length.
 * Sequences -> store -> plan -> rows -> shard set -> reader; every row read
 * back must equal the row built, and every token of every sequence must
 * come back exactly once (split) or as the policy says. A mismatch traps. */
#include "fuzz_util.h"

#include <stdint.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Durability is not what this target tests, and the writer's fsyncs (each
 * shard, the manifest, the directory) dominated its time: this definition
 * takes the place of the C library's for the library linked in here. */
int fsync(int fd);
int fsync(int fd)
{
    (void)fd;
    return 0;
}

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x)) {                                                            \
            fprintf(stderr, "roundtrip: %s failed (line %d)\n", #x, __LINE__); \
            __builtin_trap();                                                  \
        }                                                                      \
    } while (0)

enum { HEADER = 8, MAX_SEQS = 512 };

static uint32_t token_of(uint32_t seed, size_t seq, size_t k, uint32_t max_id)
{
    uint64_t x = (uint64_t)seed * 0x9E3779B97F4A7C15ull ^ seq * 1000003u ^ k;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (uint32_t)(x % ((uint64_t)max_id + 1));
}

static int rows_equal(const prepack_row *a, const prepack_row *b)
{
    if (a->num_tokens != b->num_tokens || a->num_seqs != b->num_seqs)
        return 0;
    for (size_t i = 0; i < a->num_tokens; i++)
        if (prepack_row_token(a, i) != prepack_row_token(b, i) ||
            (a->loss_mask ? a->loss_mask[i] : 1) !=
                (b->loss_mask ? b->loss_mask[i] : 1))
            return 0;
    for (size_t k = 0; k < a->num_seqs; k++)
        if (a->seq_ids[k] != b->seq_ids[k] ||
            (a->seq_starts ? a->seq_starts[k] : 0) !=
                (b->seq_starts ? b->seq_starts[k] : 0))
            return 0;
    for (size_t k = 0; k <= a->num_seqs; k++)
        if (a->cu_seqlens[k] != b->cu_seqlens[k])
            return 0;
    return 1;
}

/* Each row's tokens must be the generated tokens of its sequences, from
 * each chunk's start; returns the tokens seen per sequence in seen[]. */
static void check_tokens(const prepack_row *row, const uint32_t *len,
                         uint32_t seed, uint32_t max_id, uint64_t *seen)
{
    for (size_t k = 0; k < row->num_seqs; k++) {
        uint64_t id = row->seq_ids[k];
        uint32_t start = row->seq_starts ? row->seq_starts[k] : 0;
        int32_t a = row->cu_seqlens[k], b = row->cu_seqlens[k + 1];
        CHECK(a < b && start + (uint32_t)(b - a) <= len[id]);
        for (int32_t i = a; i < b; i++)
            CHECK(prepack_row_token(row, (size_t)i) ==
                  token_of(seed, id, start + (uint32_t)(i - a), max_id));
        seen[id] += (uint64_t)(b - a);
    }
}

static void run(const uint8_t *h, const uint32_t *len, size_t n,
                const char *dir)
{
    uint32_t L = 1 + h[0] % 96;
    prepack_plan_options po = {.max_seq_len = L,
                               .algo = (prepack_algo)(h[1] % 3),
                               .overlong = (prepack_overlong)(h[1] / 3 % 4),
                               .max_seqs_per_row = h[2] % 4 == 0 ? 0 : h[2] % 7,
                               .shuffle_rows = h[2] & 0x80,
                               .shuffle_seed = h[7]};
    uint32_t max_id = (h[5] & 1) ? 70000 : 65535;
    int masked = (h[5] & 2) != 0;
    uint32_t seed = h[6];
    prepack_store *s = NULL;
    CHECK(prepack_store_create(&s, NULL, NULL) == PREPACK_OK);
    uint32_t tok[256];
    uint8_t mask[256];
    size_t id = 0; /* empty sequences are skipped, so ids count the rest */
    for (size_t i = 0; i < n; i++) {
        for (uint32_t k = 0; k < len[i]; k++) {
            tok[k] = token_of(seed, id, k, max_id);
            mask[k] = (uint8_t)(tok[k] & 1);
        }
        CHECK(prepack_store_add(s, tok, len[i], masked ? mask : NULL, NULL) ==
              PREPACK_OK);
        CHECK(prepack_store_end_sequence(s, NULL) == PREPACK_OK);
        id += len[i] > 0;
    }
    CHECK(prepack_store_finish(s, NULL) == PREPACK_OK);
    /* ids are numbered over non-empty sequences only */
    size_t m = prepack_store_sequence_count(s);
    const uint32_t *slen = prepack_store_lengths(s);
    prepack_plan *plan = NULL;
    prepack_diag d;
    int rc = prepack_plan_create(&plan, slen, m, &po, NULL);
    if (rc != PREPACK_OK) {
        CHECK(po.overlong == PREPACK_OVERLONG_ERROR && rc == PREPACK_EOVERLONG);
        prepack_store_free(s);
        return;
    }
    prepack_writer_options wo = {.rows_per_frame = 1 + h[3] % 8,
                                 .shard_rows = 1 + h[4] % 16,
                                 .threads = 1 + (h[4] >> 7)};
    /* Thousands of one-row shards (L = 1, long sequences) are legitimate
     * but cost seconds of file system calls: keep to 64 shards, so the
     * fuzzer and the corpus replay stay fast. */
    if (prepack_plan_row_count(plan) / wo.shard_rows > 64) {
        prepack_plan_free(plan);
        prepack_store_free(s);
        return;
    }
    prepack_writer *w = NULL;
    prepack_row_builder *b = NULL;
    CHECK(prepack_row_builder_create(&b, plan, s, &d) == PREPACK_OK);
    CHECK(prepack_writer_create(&w, dir, L, prepack_store_dtype(s), &wo, &d) ==
          PREPACK_OK);
    size_t rows = prepack_plan_row_count(plan);
    prepack_row row;
    for (size_t r = 0; r < rows; r++) {
        CHECK(prepack_row_builder_get(b, r, &row) == PREPACK_OK);
        CHECK(prepack_writer_add(w, &row, &d) == PREPACK_OK);
    }
    prepack_report report;
    CHECK(prepack_report_compute(plan, slen, m, 0, &report) == PREPACK_OK);
    prepack_manifest_info info = {.plan = &po, .store = s, .report = &report};
    CHECK(prepack_writer_finish(w, &info, &d) == PREPACK_OK);
    prepack_writer_free(w);

    prepack_reader *rd = NULL;
    rc = prepack_reader_open(&rd, dir, NULL, &d);
    if (rc != PREPACK_OK)
        fprintf(stderr, "%s\n", d.message);
    CHECK(rc == PREPACK_OK);
    CHECK(prepack_reader_row_count(rd) == rows);
    CHECK(prepack_reader_verify(rd, NULL, NULL) == 0);
    uint64_t *seen = calloc(m ? m : 1, sizeof *seen);
    CHECK(seen != NULL);
    prepack_row got;
    for (size_t r = 0; r < rows; r++) {
        CHECK(prepack_row_builder_get(b, r, &row) == PREPACK_OK);
        CHECK(prepack_reader_row(rd, r, &got, &d) == PREPACK_OK);
        CHECK(rows_equal(&row, &got));
        CHECK(got.num_tokens <= L);
        check_tokens(&got, slen, seed, max_id, seen);
    }
    /* split and error keep every token; truncate keeps L of each; drop
     * keeps whole sequences or none */
    for (size_t i = 0; i < m; i++) {
        switch (po.overlong) {
        case PREPACK_OVERLONG_ERROR:
        case PREPACK_OVERLONG_SPLIT:
            CHECK(seen[i] == slen[i]);
            break;
        case PREPACK_OVERLONG_TRUNCATE:
            CHECK(seen[i] == (slen[i] < L ? slen[i] : L));
            break;
        default:
            CHECK(seen[i] == (slen[i] <= L ? slen[i] : 0));
        }
    }
    free(seen);
    prepack_reader_free(rd);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    uint32_t len[MAX_SEQS];
    size_t n = 0;
    for (size_t i = HEADER; i < size && n < MAX_SEQS; i++)
        len[n++] = data[i];
    fuzz_dir dir;
    if (fuzz_dir_make(&dir) != 0)
        return 0;
    char set[128];
    snprintf(set, sizeof set, "%s/set", dir.path);
    run(data, len, n, set);
    fuzz_remove_tree(set); /* the writer's shards and manifest */
    fuzz_dir_remove(&dir);
    return 0;
}
