/* Packing sequences held in memory: plan them, then lay each row's tokens
 * and metadata out in one allocation. No store, no files. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"

static uint32_t longest(const uint32_t *lengths, size_t n)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++)
        m = lengths[i] > m ? lengths[i] : m;
    return m;
}

/* The result and its arrays in one block, sized for R rows, S sequences,
 * T tokens and n inputs. */
static prepack_packed *alloc_block(size_t R, size_t S, size_t T, size_t n)
{
    size_t bytes[] = {sizeof(prepack_packed),      T * 4 /* input_ids */,
                      (R + 1) * 4 /* row_start */, (S + 1) * 4 /* cu */,
                      T * 4 /* position_ids */,    S * 8 /* seq_ids */,
                      n * 4 /* seq_row */,         n * 4 /* seq_offset */,
                      S * 4 /* seq_starts */};
    void *part[sizeof bytes / sizeof *bytes];
    prepack_packed *p =
        pp_alloc_parts(bytes, sizeof bytes / sizeof *bytes, part);
    if (!p)
        return NULL;
    p->input_ids = part[1];
    p->row_start = part[2];
    p->cu_seqlens = part[3];
    p->position_ids = part[4];
    p->seq_ids = part[5];
    p->seq_row = part[6];
    p->seq_offset = part[7];
    p->seq_starts = part[8];
    return p;
}

static void lay_out(prepack_packed *p, const prepack_plan *plan,
                    const uint32_t *const *tokens, size_t n)
{
    uint32_t *ids = (uint32_t *)p->input_ids;
    int32_t *rs = (int32_t *)p->row_start, *cu = (int32_t *)p->cu_seqlens;
    int32_t *pos = (int32_t *)p->position_ids;
    uint64_t *sid = (uint64_t *)p->seq_ids;
    uint32_t *srow = (uint32_t *)p->seq_row, *soff = (uint32_t *)p->seq_offset;
    uint32_t *starts = (uint32_t *)p->seq_starts;
    for (size_t i = 0; i < n; i++)
        srow[i] = UINT32_MAX;
    size_t t = 0, k = 0;
    for (size_t r = 0; r < p->rows; r++) {
        rs[r] = (int32_t)t;
        for (size_t j = 0; j < prepack_plan_row_size(plan, r); j++, k++) {
            prepack_item it = prepack_plan_item(plan, r, j);
            memcpy(ids + t, tokens[it.seq_id] + it.offset,
                   (size_t)it.length * 4);
            for (uint32_t q = 0; q < it.length; q++)
                pos[t + q] = (int32_t)q;
            sid[k] = it.seq_id;
            starts[k] = it.offset;
            if (it.offset == 0) { /* a sequence's row: its first chunk's */
                srow[it.seq_id] = (uint32_t)r;
                soff[it.seq_id] = (uint32_t)(t - (size_t)rs[r]);
            }
            cu[k] = (int32_t)t;
            p->max_seqlen =
                it.length > p->max_seqlen ? it.length : p->max_seqlen;
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
        return pp_invalid_argument(diag);
    *out = NULL;
    if (!o)
        o = &none;
    prepack_plan_options po = {.max_seq_len = o->max_seq_len,
                               .algo = o->algo,
                               .overlong = o->overlong,
                               .max_seqs_per_row = o->max_seqs_per_row};
    if (po.max_seq_len == 0)
        po.max_seq_len = longest(lengths, n) ? longest(lengths, n) : 1;
    prepack_plan *plan = NULL;
    int rc = prepack_plan_create(&plan, lengths, n, &po, diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_plan_stats st;
    prepack_plan_get_stats(plan, &st);
    if (st.tokens > INT32_MAX) {
        prepack_plan_free(plan);
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "%llu tokens: more than int32 cu_seqlens hold",
                       (unsigned long long)st.tokens);
    }
    size_t rows = prepack_plan_row_count(plan);
    size_t items = prepack_plan_item_count(plan);
    prepack_packed *b = alloc_block(rows, items, (size_t)st.tokens, n);
    if (!b) {
        prepack_plan_free(plan);
        return pp_out_of_memory(diag);
    }
    b->rows = rows;
    b->num_seqs = items;
    b->num_tokens = (size_t)st.tokens;
    b->max_seq_len = po.max_seq_len;
    lay_out(b, plan, tokens, n);
    prepack_plan_free(plan);
    *out = b;
    return PREPACK_OK;
}

void prepack_packed_free(prepack_packed *p)
{
    pp_free(NULL, p); /* the block starts with it (pp_alloc_parts) */
}
