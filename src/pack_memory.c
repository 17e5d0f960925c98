/* Packing sequences held in memory: plan them, then lay each row's tokens
 * and metadata out in one allocation. No store, no files. */
#include <string.h>

#include "internal.h"

/* The packed result and its arrays, allocated as one block. */
typedef struct packed_block {
    prepack_packed pub; /* first: its address is the block's */
} packed_block;

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static uint32_t longest(const uint32_t *lengths, size_t n)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++)
        m = lengths[i] > m ? lengths[i] : m;
    return m;
}

/* Carves the arrays out of one block sized for R rows, S sequences, T
 * tokens and n inputs. */
static packed_block *alloc_block(size_t R, size_t S, size_t T, size_t n)
{
    size_t sizes[] = {align8(sizeof(packed_block)),
                      align8(T * 4),           /* input_ids */
                      align8((R + 1) * 4),     /* row_start */
                      align8((S + 1) * 4),     /* cu_seqlens */
                      align8(T * 4),           /* position_ids */
                      align8(S * 8),           /* seq_ids */
                      align8(n * 4),           /* seq_row */
                      align8(n * 4)};          /* seq_offset */
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        total += sizes[i];
    unsigned char *p = pp_calloc(NULL, 1, total);
    if (!p)
        return NULL;
    packed_block *b = (packed_block *)(void *)p;
    unsigned char *at = p + sizes[0];
    b->pub.input_ids = (const uint32_t *)(void *)at;
    b->pub.row_start = (const int32_t *)(void *)(at += sizes[1]);
    b->pub.cu_seqlens = (const int32_t *)(void *)(at += sizes[2]);
    b->pub.position_ids = (const int32_t *)(void *)(at += sizes[3]);
    b->pub.seq_ids = (const uint64_t *)(void *)(at += sizes[4]);
    b->pub.seq_row = (const uint32_t *)(void *)(at += sizes[5]);
    b->pub.seq_offset = (const uint32_t *)(void *)(at += sizes[6]);
    return b;
}

static void lay_out(packed_block *b, const prepack_plan *plan,
                    const uint32_t *const *tokens, size_t n)
{
    prepack_packed *p = &b->pub;
    uint32_t *ids = (uint32_t *)p->input_ids;
    int32_t *rs = (int32_t *)p->row_start, *cu = (int32_t *)p->cu_seqlens;
    int32_t *pos = (int32_t *)p->position_ids;
    uint64_t *sid = (uint64_t *)p->seq_ids;
    uint32_t *srow = (uint32_t *)p->seq_row, *soff = (uint32_t *)p->seq_offset;
    for (size_t i = 0; i < n; i++)
        srow[i] = UINT32_MAX;
    size_t t = 0, k = 0;
    for (size_t r = 0; r < p->rows; r++) {
        rs[r] = (int32_t)t;
        for (size_t j = 0; j < prepack_plan_row_size(plan, r); j++, k++) {
            prepack_item it = prepack_plan_item(plan, r, j);
            memcpy(ids + t, tokens[it.seq_id], (size_t)it.length * 4);
            for (uint32_t q = 0; q < it.length; q++)
                pos[t + q] = (int32_t)q;
            sid[k] = it.seq_id;
            srow[it.seq_id] = (uint32_t)r;
            soff[it.seq_id] = (uint32_t)(t - (size_t)rs[r]);
            cu[k] = (int32_t)t;
            p->max_seqlen = it.length > p->max_seqlen ? it.length
                                                      : p->max_seqlen;
            t += it.length;
        }
    }
    rs[p->rows] = (int32_t)t;
    cu[k] = (int32_t)t;
}

int prepack_pack_sequences(prepack_packed **out, const uint32_t *const *tokens,
                           const uint32_t *lengths, size_t n,
                           const prepack_pack_options *o, prepack_diag *diag)
{
    prepack_pack_options none = {0};
    if (!out || (n && (!tokens || !lengths)))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "invalid argument");
    *out = NULL;
    if (!o)
        o = &none;
    if (o->overlong == PREPACK_OVERLONG_SPLIT)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the split policy needs a token store; use error, "
                       "truncate or drop");
    prepack_plan_options po = {.max_seq_len = o->max_seq_len,
                               .algo = o->algo,
                               .overlong = o->overlong,
                               .max_seqs_per_row = o->max_seqs_per_row,
                               .diag = diag};
    if (po.max_seq_len == 0)
        po.max_seq_len = longest(lengths, n) ? longest(lengths, n) : 1;
    prepack_plan *plan = NULL;
    int rc = prepack_plan_create(&plan, lengths, n, &po);
    if (rc != PREPACK_OK)
        return rc;
    if ((uint64_t)plan->stats.tokens > INT32_MAX) {
        prepack_plan_free(plan);
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "%llu tokens: more than int32 cu_seqlens hold",
                       (unsigned long long)plan->stats.tokens);
    }
    packed_block *b = alloc_block(plan->rows, plan->items,
                                  (size_t)plan->stats.tokens, n);
    if (!b) {
        prepack_plan_free(plan);
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    }
    b->pub.rows = plan->rows;
    b->pub.num_seqs = plan->items;
    b->pub.num_tokens = (size_t)plan->stats.tokens;
    b->pub.max_seq_len = po.max_seq_len;
    lay_out(b, plan, tokens, n);
    prepack_plan_free(plan);
    *out = &b->pub;
    return PREPACK_OK;
}

void prepack_packed_free(prepack_packed *p)
{
    pp_free(NULL, p); /* the block starts with it */
}
