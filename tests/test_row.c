/* Rows and their derived fields, and the proof that the masks are right:
 * causal attention computed one sequence at a time must equal attention
 * over each packed row, through the dense block-diagonal mask and through
 * cu_seqlens, to 1e-12 for every token. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_util.h"

/* ---- a hand-made row ------------------------------------------------------ */

static void test_derived_fields(void **state)
{
    (void)state;
    /* sequences [5 6 7] and [8 9]; token 2 (7) and token 3 (8) untrained */
    uint16_t ids[] = {5, 6, 7, 8, 9};
    int32_t cu[] = {0, 3, 5};
    uint64_t seq[] = {40, 41};
    uint8_t mask[] = {1, 1, 0, 0, 1};
    prepack_row row = {5, 2, PREPACK_DTYPE_UINT16, ids, cu, seq, mask, NULL};
    enum { W = 7 };
    int64_t out[W];

    assert_int_equal(prepack_row_max_seqlen(&row), 3);
    assert_int_equal(prepack_row_token(&row, 3), 8);

    prepack_row_position_ids(&row, out, W);
    int64_t pos[W] = {0, 1, 2, 0, 1, 0, 0};
    assert_memory_equal(out, pos, sizeof pos);

    prepack_row_doc_ids(&row, 10, out, W);
    int64_t doc[W] = {10, 10, 10, 11, 11, -1, -1};
    assert_memory_equal(out, doc, sizeof doc);

    /* shifted: 5 -> 6; 6 -> 7 untrained; 7 ends its sequence; 8 -> 9 */
    prepack_row_labels(&row, out, W);
    int64_t lab[W] = {6, -100, -100, 9, -100, -100, -100};
    assert_memory_equal(out, lab, sizeof lab);

    /* unshifted (Hugging Face): -100 at sequence starts and masked tokens */
    prepack_row_labels_unshifted(&row, out, W);
    int64_t hf[W] = {-100, 6, -100, -100, 9, -100, -100};
    assert_memory_equal(out, hf, sizeof hf);

    uint8_t m[W * W];
    prepack_row_dense_mask(&row, m, W);
    for (int q = 0; q < W; q++)
        for (int k = 0; k < W; k++) {
            int same = q < 5 && k < 5 && (q < 3) == (k < 3);
            assert_int_equal(m[q * W + k], same && k <= q);
        }
    /* no mask: every token trained */
    row.loss_mask = NULL;
    prepack_row_labels(&row, out, W);
    int64_t all[W] = {6, 7, -100, 9, -100, -100, -100};
    assert_memory_equal(out, all, sizeof all);

    prepack_row_input_ids(&row, -3, out, W);
    int64_t wide[W] = {5, 6, 7, 8, 9, -3, -3};
    assert_memory_equal(out, wide, sizeof wide);
}

/* Each token's label by the definition: the next token of the same
 * sequence where trained (shift 1), or the token itself but at a
 * sequence's start (shift 0); -100 otherwise and on padding. */
static int64_t reference_label(const prepack_row *row, size_t i, int shift)
{
    if (i >= row->num_tokens)
        return -100;
    size_t j = 0;
    while ((size_t)row->cu_seqlens[j + 1] <= i)
        j++;
    size_t t = i + (size_t)shift;
    int inside = shift ? t < (size_t)row->cu_seqlens[j + 1]
                       : i > (size_t)row->cu_seqlens[j];
    if (!inside || (row->loss_mask && !row->loss_mask[t]))
        return -100;
    return prepack_row_token(row, t);
}

/* Random rows of both widths, masks with values past 1, one-token
 * sequences and padding: the per-width loops of input_ids and both
 * labels against the per-token definitions. */
static void test_derived_fields_match_their_definitions(void **state)
{
    (void)state;
    srand(11);
    enum { CAP = 64 };
    uint32_t ids32[CAP];
    uint16_t ids16[CAP];
    int32_t cu[CAP + 1];
    uint8_t mask[CAP];
    int64_t out[CAP + 8];
    for (int trial = 0; trial < 400; trial++) {
        size_t T = 1 + (size_t)rand() % CAP, k = 0, width = T + (size_t)rand() % 8;
        cu[0] = 0;
        while ((size_t)cu[k] < T) {
            size_t l = 1 + (size_t)rand() % 9;
            cu[k + 1] = (int32_t)((size_t)cu[k] + l < T ? (size_t)cu[k] + l : T);
            k++;
        }
        for (size_t i = 0; i < T; i++) {
            ids32[i] = (uint32_t)rand() * 7u;
            ids16[i] = (uint16_t)ids32[i];
            mask[i] = (uint8_t)(rand() % 3); /* 2: trained, as 1 */
        }
        int wide = trial % 2;
        prepack_row row = {T, k, wide ? PREPACK_DTYPE_UINT32 : PREPACK_DTYPE_UINT16,
                           wide ? (void *)ids32 : (void *)ids16, cu, NULL,
                           trial % 3 ? mask : NULL, NULL};
        prepack_row_input_ids(&row, 99, out, width);
        for (size_t i = 0; i < width; i++)
            assert_int_equal(out[i], i < T ? (int64_t)prepack_row_token(&row, i) : 99);
        prepack_row_labels(&row, out, width);
        for (size_t i = 0; i < width; i++)
            assert_int_equal(out[i], reference_label(&row, i, 1));
        prepack_row_labels_unshifted(&row, out, width);
        for (size_t i = 0; i < width; i++)
            assert_int_equal(out[i], reference_label(&row, i, 0));
    }
}

/* ---- attention, three ways --------------------------------------------------- */

enum { D = 8 };

/* Causal softmax attention of query q over keys/values [first, q]. */
static void attend(const double *Q, const double *K, const double *V, size_t q,
                   size_t first, double *out)
{
    double scale = 1.0 / sqrt((double)D), mx = -INFINITY, sum = 0;
    double *w = malloc((q - first + 1) * sizeof *w);
    for (size_t k = first; k <= q; k++) {
        double s = 0;
        for (size_t d = 0; d < D; d++)
            s += Q[q * D + d] * K[k * D + d];
        w[k - first] = s * scale;
        mx = w[k - first] > mx ? w[k - first] : mx;
    }
    for (size_t k = first; k <= q; k++)
        sum += w[k - first] = exp(w[k - first] - mx);
    for (size_t d = 0; d < D; d++) {
        double acc = 0;
        for (size_t k = first; k <= q; k++)
            acc += w[k - first] * V[k * D + d];
        out[d] = acc / sum;
    }
    free(w);
}

/* Attention over a row of `width` positions through a dense mask. */
static void attend_masked(const double *Q, const double *K, const double *V,
                          const uint8_t *mask, size_t width, size_t q,
                          double *out)
{
    double scale = 1.0 / sqrt((double)D), mx = -INFINITY, sum = 0;
    double *w = malloc(width * sizeof *w);
    for (size_t k = 0; k < width; k++) {
        w[k] = -INFINITY;
        if (!mask[q * width + k])
            continue;
        double s = 0;
        for (size_t d = 0; d < D; d++)
            s += Q[q * D + d] * K[k * D + d];
        w[k] = s * scale;
        mx = w[k] > mx ? w[k] : mx;
    }
    for (size_t k = 0; k < width; k++)
        sum += w[k] = mask[q * width + k] ? exp(w[k] - mx) : 0.0;
    for (size_t d = 0; d < D; d++) {
        double acc = 0;
        for (size_t k = 0; k < width; k++)
            acc += w[k] * V[k * D + d];
        out[d] = acc / sum;
    }
    free(w);
}

/* Random sequences in a store (with loss masks), planned and built into
 * rows; each row checked against its sequences. */
static void test_rows_attention_and_labels(void **state)
{
    (void)state;
    enum { N = 120, L = 64 };
    rng r = {77};
    prepack_store_options so = {.tmp_dir = NULL};
    prepack_store *store = NULL;
    assert_int_equal(prepack_store_create(&store, &so, NULL), PREPACK_OK);
    uint32_t *seq[N];
    uint32_t len[N];
    uint8_t *msk[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = rng_range(&r, 1, 100); /* some over L: split */
        seq[i] = malloc(len[i] * sizeof **seq);
        msk[i] = malloc(len[i]);
        for (uint32_t k = 0; k < len[i]; k++) {
            seq[i][k] = rng_range(&r, 0, 70000);
            msk[i][k] = (uint8_t)(rng_range(&r, 0, 3) != 0);
        }
        assert_int_equal(prepack_store_add(store, seq[i], len[i], msk[i], NULL),
                         PREPACK_OK);
        assert_int_equal(prepack_store_end_sequence(store, NULL), PREPACK_OK);
    }
    assert_int_equal(prepack_store_finish(store, NULL), PREPACK_OK);
    prepack_plan_options o = {.max_seq_len = L,
                              .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_plan *plan = NULL;
    assert_int_equal(
        prepack_plan_create(&plan, prepack_store_lengths(store), N, &o, NULL),
        PREPACK_OK);
    prepack_row_builder *b = NULL;
    assert_int_equal(prepack_row_builder_create(&b, plan, store, NULL),
                     PREPACK_OK);

    /* Q, K, V per token of each sequence, indexed by its position in the
     * source sequence, so a chunk sees exactly its own slice. */
    double *q[N], *kk[N], *v[N];
    for (size_t i = 0; i < N; i++) {
        q[i] = malloc(len[i] * D * sizeof(double));
        kk[i] = malloc(len[i] * D * sizeof(double));
        v[i] = malloc(len[i] * D * sizeof(double));
        for (size_t e = 0; e < len[i] * D; e++) {
            q[i][e] = (double)rng_range(&r, 0, 2000000) / 1e6 - 1;
            kk[i][e] = (double)rng_range(&r, 0, 2000000) / 1e6 - 1;
            v[i][e] = (double)rng_range(&r, 0, 2000000) / 1e6 - 1;
        }
    }
    double *Q = malloc(L * D * sizeof *Q), *K = malloc(L * D * sizeof *K),
           *V = malloc(L * D * sizeof *V);
    uint8_t *mask = malloc(L * L);
    int64_t lab[L], doc[L];
    size_t tokens_seen = 0;
    double worst = 0;
    for (size_t rr = 0; rr < prepack_plan_row_count(plan); rr++) {
        prepack_row row;
        assert_int_equal(prepack_row_builder_get(b, rr, &row), PREPACK_OK);
        assert_true(row.num_tokens <= L);
        assert_non_null(row.seq_starts);
        assert_non_null(row.loss_mask);
        assert_int_equal(row.cu_seqlens[0], 0);
        assert_int_equal(row.cu_seqlens[row.num_seqs], (int32_t)row.num_tokens);
        /* the row's Q, K, V: each chunk's slice of its sequence's */
        for (size_t j = 0; j < row.num_seqs; j++) {
            size_t s = (size_t)row.seq_ids[j], off = row.seq_starts[j];
            size_t first = (size_t)row.cu_seqlens[j];
            size_t n = (size_t)(row.cu_seqlens[j + 1] - row.cu_seqlens[j]);
            assert_true(row.cu_seqlens[j + 1] > row.cu_seqlens[j]);
            for (size_t t = 0; t < n; t++) { /* tokens and mask, in place */
                assert_int_equal(prepack_row_token(&row, first + t),
                                 seq[s][off + t]);
                assert_int_equal(row.loss_mask[first + t], msk[s][off + t]);
            }
            memcpy(Q + first * D, q[s] + off * D, n * D * sizeof *Q);
            memcpy(K + first * D, kk[s] + off * D, n * D * sizeof *K);
            memcpy(V + first * D, v[s] + off * D, n * D * sizeof *V);
            tokens_seen += n;
        }
        for (size_t t = row.num_tokens; t < L; t++) /* padding: garbage */
            for (size_t d = 0; d < D; d++)
                Q[t * D + d] = K[t * D + d] = V[t * D + d] = 1e3;
        prepack_row_dense_mask(&row, mask, L);
        prepack_row_labels(&row, lab, L);
        prepack_row_doc_ids(&row, 0, doc, L);
        for (size_t j = 0; j < row.num_seqs; j++) {
            size_t s = (size_t)row.seq_ids[j], off = row.seq_starts[j];
            size_t first = (size_t)row.cu_seqlens[j];
            size_t end = (size_t)row.cu_seqlens[j + 1];
            for (size_t t = first; t < end; t++) {
                double ref[D], dense[D], varlen[D];
                /* (ref) the chunk alone, as its own sequence */
                attend(q[s] + off * D, kk[s] + off * D, v[s] + off * D,
                       t - first, 0, ref);
                /* (a) the packed row under the dense mask */
                attend_masked(Q, K, V, mask, L, t, dense);
                /* (b) the packed row, keys from cu_seqlens */
                attend(Q, K, V, t, first, varlen);
                for (size_t d = 0; d < D; d++) {
                    double e1 = fabs(ref[d] - dense[d]);
                    double e2 = fabs(ref[d] - varlen[d]);
                    worst = e1 > worst ? e1 : worst;
                    worst = e2 > worst ? e2 : worst;
                }
                /* labels never cross a boundary */
                if (lab[t] != -100) {
                    assert_true(t + 1 < end);
                    assert_int_equal(doc[t + 1], doc[t]);
                    assert_int_equal(lab[t], seq[s][off + t - first + 1]);
                    assert_int_equal(row.loss_mask[t + 1], 1);
                } else if (t + 1 < end) {
                    assert_int_equal(row.loss_mask[t + 1], 0);
                }
            }
        }
        for (size_t t = row.num_tokens; t < L; t++)
            assert_int_equal(lab[t], -100);
    }
    if (worst > 1e-12)
        fail_msg("attention differs by %g", worst);
    assert_int_equal(tokens_seen, prepack_store_token_count(store));

    for (size_t i = 0; i < N; i++) {
        free(seq[i]);
        free(msk[i]);
        free(q[i]);
        free(kk[i]);
        free(v[i]);
    }
    free(Q);
    free(K);
    free(V);
    free(mask);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(store);
}

static void test_builder_errors(void **state)
{
    (void)state;
    prepack_store *store = NULL;
    assert_int_equal(prepack_store_create(&store, NULL, NULL), PREPACK_OK);
    uint32_t t[] = {1, 2};
    assert_int_equal(prepack_store_add(store, t, 2, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_finish(store, NULL), PREPACK_OK);
    uint32_t other[] = {2, 3};
    prepack_plan_options o = {.max_seq_len = 8};
    prepack_plan *plan = NULL;
    assert_int_equal(prepack_plan_create(&plan, other, 2, &o, NULL),
                     PREPACK_OK);
    prepack_row_builder *b = (prepack_row_builder *)&o;
    prepack_diag d = {0};
    assert_int_equal(prepack_row_builder_create(&b, plan, store, &d),
                     PREPACK_EINVAL);
    assert_null(b);
    assert_non_null(strstr(d.message, "2 sequences, the store 1"));
    prepack_plan_free(plan);
    assert_int_equal(
        prepack_plan_create(&plan, prepack_store_lengths(store), 1, &o, NULL),
        PREPACK_OK);
    assert_int_equal(prepack_row_builder_create(&b, plan, store, &d),
                     PREPACK_OK);
    prepack_row row;
    assert_int_equal(prepack_row_builder_get(b, 1, &row), PREPACK_EINVAL);
    assert_int_equal(prepack_row_builder_get(b, 0, &row), PREPACK_OK);
    assert_int_equal(row.num_tokens, 2);
    assert_null(row.loss_mask);
    assert_null(row.seq_starts);
    assert_int_equal(row.token_dtype, PREPACK_DTYPE_UINT16);
    prepack_row_builder_free(b);
    prepack_row_builder_free(NULL);
    prepack_plan_free(plan);
    prepack_store_free(store);
}

/* prepack_pack_sequences: every sequence at its (row, offset), whole. */
static void test_pack_in_memory(void **state)
{
    (void)state;
    enum { N = 500 };
    rng r = {11};
    uint32_t *seq[N], len[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = rng_range(&r, 0, 140); /* empty and overlong too */
        seq[i] = malloc((len[i] + 1) * sizeof **seq);
        for (uint32_t k = 0; k < len[i]; k++)
            seq[i][k] = rng_range(&r, 0, 1u << 20);
    }
    for (int pol = 1; pol <= 3; pol += 2) { /* truncate, drop */
        prepack_pack_options o = {.max_seq_len = 128,
                                  .overlong = (prepack_overlong)pol};
        prepack_packed *p = NULL;
        prepack_diag d = {0};
        assert_int_equal(prepack_pack_sequences(
                             &p, (const uint32_t *const *)seq, len, N, &o, &d),
                         PREPACK_OK);
        assert_int_equal(p->cu_seqlens[0], 0);
        assert_int_equal(p->cu_seqlens[p->num_seqs], (int32_t)p->num_tokens);
        assert_int_equal(p->row_start[p->rows], (int32_t)p->num_tokens);
        size_t placed = 0;
        for (size_t i = 0; i < N; i++) {
            int kept = len[i] > 0 && (len[i] <= 128 || pol == 1);
            if (!kept) {
                assert_int_equal(p->seq_row[i], UINT32_MAX);
                continue;
            }
            placed++;
            uint32_t n = len[i] < 128 ? len[i] : 128;
            assert_true(p->seq_row[i] < p->rows);
            size_t at = (size_t)p->row_start[p->seq_row[i]] + p->seq_offset[i];
            assert_true(at + n <= (size_t)p->row_start[p->seq_row[i] + 1]);
            for (uint32_t k = 0; k < n; k++) {
                assert_int_equal(p->input_ids[at + k], seq[i][k]);
                assert_int_equal(p->position_ids[at + k], (int32_t)k);
            }
        }
        assert_int_equal(placed, p->num_seqs);
        for (size_t row = 0; row < p->rows; row++)
            assert_true(p->row_start[row + 1] - p->row_start[row] <= 128);
        prepack_packed_free(p);
    }
    /* split: every token of every sequence exactly once, each chunk's
     * tokens where seq_starts says, the first chunk's row in seq_row */
    prepack_pack_options split = {.max_seq_len = 64,
                                  .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_packed *p = NULL;
    assert_int_equal(prepack_pack_sequences(&p, (const uint32_t *const *)seq,
                                            len, N, &split, NULL),
                     PREPACK_OK);
    uint64_t total = 0, got = 0;
    for (size_t i = 0; i < N; i++)
        total += len[i];
    assert_int_equal(p->num_tokens, total);
    for (size_t k = 0; k < p->num_seqs; k++) {
        uint64_t id = p->seq_ids[k];
        uint32_t n = (uint32_t)(p->cu_seqlens[k + 1] - p->cu_seqlens[k]);
        assert_true(n <= 64 && p->seq_starts[k] + n <= len[id]);
        for (uint32_t q = 0; q < n; q++)
            assert_int_equal(p->input_ids[(size_t)p->cu_seqlens[k] + q],
                             seq[id][p->seq_starts[k] + q]);
        if (p->seq_starts[k] == 0)
            assert_int_equal((size_t)p->row_start[p->seq_row[id]] +
                                 p->seq_offset[id],
                             (size_t)p->cu_seqlens[k]);
        got += n;
    }
    assert_int_equal(got, total);
    prepack_packed_free(p);
    /* capacity 0: the longest sequence */
    assert_int_equal(prepack_pack_sequences(&p, (const uint32_t *const *)seq,
                                            len, N, NULL, NULL),
                     PREPACK_OK);
    assert_int_equal(p->max_seq_len, 140);
    prepack_packed_free(p);
    prepack_packed_free(NULL);
    for (size_t i = 0; i < N; i++)
        free(seq[i]);
}

/* prepack_prefill_create: rows [R, C] and the maps back to each prompt. */
static void test_prefill(void **state)
{
    (void)state;
    enum { N = 64 };
    rng r = {12};
    uint32_t *p[N], len[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = rng_range(&r, 1, 300);
        p[i] = malloc(len[i] * sizeof **p);
        for (uint32_t k = 0; k < len[i]; k++)
            p[i][k] = rng_range(&r, 0, 128000);
    }
    prepack_prefill_options o = {.pad_id = 7};
    prepack_prefill *f = NULL;
    assert_int_equal(prepack_prefill_create(&f, (const uint32_t *const *)p, len,
                                            N, &o, NULL),
                     PREPACK_OK);
    size_t C = f->capacity;
    assert_int_equal(C, 300 > C ? C : 300); /* the longest prompt */
    int *seen = calloc(N, sizeof *seen);
    for (size_t k = 0; k < N; k++)
        seen[f->order[k]]++;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(seen[i], 1); /* a permutation */
        size_t r0 = f->prompt_row[i], s0 = f->prompt_start[i];
        assert_int_equal(f->prompt_length[i], len[i]);
        assert_int_equal(f->last_index[i], r0 * C + s0 + len[i] - 1);
        for (uint32_t k = 0; k < len[i]; k++) {
            size_t at = r0 * C + s0 + k;
            assert_int_equal(f->input_ids[at], p[i][k]);
            assert_int_equal(f->position_ids[at], (int32_t)k);
            assert_int_equal(f->prompt_index[at], (int32_t)i);
        }
    }
    size_t tokens = 0;
    for (size_t row = 0; row < f->rows; row++) {
        for (size_t q = (size_t)f->row_tokens[row]; q < C; q++) {
            assert_int_equal(f->input_ids[row * C + q], 7);
            assert_int_equal(f->prompt_index[row * C + q], -1);
        }
        tokens += (size_t)f->row_tokens[row];
    }
    assert_int_equal(f->cu_seqlens[N], (int32_t)tokens);
    assert_int_equal(f->row_first[f->rows], N);
    prepack_prefill_free(f);
    len[3] = 0;
    assert_int_equal(prepack_prefill_create(&f, (const uint32_t *const *)p, len,
                                            N, &o, NULL),
                     PREPACK_EINVAL);
    for (size_t i = 0; i < N; i++)
        free(p[i]);
    free(seen);
}

/* Prefill places prompts as the planner does with the same algorithm and
 * capacity: row by row, item by item. */
static void test_prefill_follows_the_planner(void **state)
{
    (void)state;
    enum { N = 40 };
    rng r = {5};
    uint32_t *p[N], len[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = rng_range(&r, 1, 90);
        p[i] = calloc(len[i], sizeof **p);
    }
    for (int algo = 0; algo < 3; algo++) {
        prepack_prefill_options o = {.capacity = 100,
                                     .algo = (prepack_algo)algo};
        prepack_prefill *f = NULL;
        assert_int_equal(prepack_prefill_create(&f, (const uint32_t *const *)p,
                                                len, N, &o, NULL),
                         PREPACK_OK);
        prepack_plan_options po = {.max_seq_len = 100,
                                   .algo = (prepack_algo)algo};
        prepack_plan *plan = NULL;
        assert_int_equal(prepack_plan_create(&plan, len, N, &po, NULL),
                         PREPACK_OK);
        assert_int_equal(f->rows, prepack_plan_row_count(plan));
        size_t k = 0;
        for (size_t row = 0; row < f->rows; row++) {
            assert_int_equal(f->row_first[row], (int32_t)k);
            for (size_t j = 0; j < prepack_plan_row_size(plan, row); j++, k++)
                assert_int_equal(f->order[k],
                                 prepack_plan_item(plan, row, j).seq_id);
        }
        prepack_plan_free(plan);
        prepack_prefill_free(f);
    }
    prepack_prefill_options bad = {.algo = (prepack_algo)7};
    prepack_prefill *f = NULL;
    assert_int_equal(prepack_prefill_create(&f, (const uint32_t *const *)p, len,
                                            N, &bad, NULL),
                     PREPACK_EINVAL);
    for (size_t i = 0; i < N; i++)
        free(p[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_follows_the_planner),
        cmocka_unit_test(test_derived_fields),
        cmocka_unit_test(test_derived_fields_match_their_definitions),
        cmocka_unit_test(test_rows_attention_and_labels),
        cmocka_unit_test(test_builder_errors),
        cmocka_unit_test(test_pack_in_memory),
        cmocka_unit_test(test_prefill),
    };
    return cmocka_run_group_tests_name("row", tests, NULL, NULL);
}
