/* Prepacking a batch of prompts for prefill: the planner over their
 * lengths (first fit by default), then rows padded to the capacity with the
 * per-token and per-prompt maps that unpack logits and KV caches. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"

/* One block: the struct, then every array. */
static prepack_prefill *alloc_block(size_t R, size_t C, size_t N)
{
    size_t bytes[] = {sizeof(prepack_prefill),
                      R * C * 4,
                      R * C * 4,
                      R * C * 4,
                      R * 4,
                      (N + 1) * 4,
                      (R + 1) * 4,
                      N * 4,
                      N * 4,
                      N * 4,
                      N * 4,
                      N * 8};
    void *part[sizeof bytes / sizeof *bytes];
    prepack_prefill *f =
        pp_alloc_parts(bytes, sizeof bytes / sizeof *bytes, part);
    if (!f)
        return NULL;
    f->input_ids = part[1];
    f->position_ids = part[2];
    f->prompt_index = part[3];
    f->row_tokens = part[4];
    f->cu_seqlens = part[5];
    f->row_first = part[6];
    f->order = part[7];
    f->prompt_row = part[8];
    f->prompt_start = part[9];
    f->prompt_length = part[10];
    f->last_index = part[11];
    return f;
}

static void lay_out(prepack_prefill *f, const prepack_plan *plan,
                    const uint32_t *const *tokens, uint32_t pad_id)
{
    size_t C = f->capacity;
    uint32_t *ids = (uint32_t *)f->input_ids;
    int32_t *pos = (int32_t *)f->position_ids,
            *who = (int32_t *)f->prompt_index;
    int32_t *rt = (int32_t *)f->row_tokens, *cu = (int32_t *)f->cu_seqlens;
    int32_t *rf = (int32_t *)f->row_first;
    uint32_t *order = (uint32_t *)f->order, *prow = (uint32_t *)f->prompt_row;
    uint32_t *pstart = (uint32_t *)f->prompt_start;
    uint32_t *plen = (uint32_t *)f->prompt_length;
    uint64_t *last = (uint64_t *)f->last_index;
    size_t k = 0, flat = 0;
    for (size_t r = 0; r < f->rows; r++) {
        uint32_t *row = ids + r * C;
        size_t t = 0;
        rf[r] = (int32_t)k;
        for (size_t j = 0; j < prepack_plan_row_size(plan, r); j++, k++) {
            prepack_item it = prepack_plan_item(plan, r, j);
            size_t i = (size_t)it.seq_id;
            memcpy(row + t, tokens[i], (size_t)it.length * 4);
            for (uint32_t q = 0; q < it.length; q++) {
                pos[r * C + t + q] = (int32_t)q;
                who[r * C + t + q] = (int32_t)i;
            }
            order[k] = (uint32_t)i;
            prow[i] = (uint32_t)r;
            pstart[i] = (uint32_t)t;
            plen[i] = it.length;
            last[i] = r * C + t + it.length - 1;
            cu[k] = (int32_t)(flat + t);
            t += it.length;
        }
        for (size_t q = t; q < C; q++) { /* padding */
            row[q] = pad_id;
            who[r * C + q] = -1;
        }
        rt[r] = (int32_t)t;
        flat += t;
    }
    rf[f->rows] = (int32_t)k;
    cu[k] = (int32_t)flat;
}

int prepack_prefill_create(prepack_prefill **out, const uint32_t *const *tokens,
                           const uint32_t *lengths, size_t n,
                           const prepack_prefill_options *o, prepack_diag *diag)
{
    prepack_prefill_options none = {0};
    if (!out || (n && (!tokens || !lengths)))
        return pp_invalid_argument(diag);
    *out = NULL;
    if (!o)
        o = &none;
    uint32_t longest = 0;
    for (size_t i = 0; i < n; i++) {
        if (lengths[i] == 0)
            return pp_fail(diag, PREPACK_EINVAL, i, "prompt %zu is empty", i);
        longest = lengths[i] > longest ? lengths[i] : longest;
    }
    prepack_plan_options po = {
        .max_seq_len = o->capacity ? o->capacity : (longest ? longest : 1),
        .algo = o->algo};
    prepack_plan *plan = NULL;
    int rc = prepack_plan_create(&plan, lengths, n, &po, diag);
    if (rc != PREPACK_OK)
        return rc;
    size_t C = po.max_seq_len;
    size_t rows = prepack_plan_row_count(plan);
    if ((uint64_t)rows * C > INT32_MAX) {
        prepack_plan_free(plan);
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "%zu rows of %zu tokens: too large", rows, C);
    }
    prepack_prefill *f = alloc_block(rows, C, n);
    if (!f) {
        prepack_plan_free(plan);
        return pp_out_of_memory(diag);
    }
    f->rows = rows;
    f->capacity = (uint32_t)C;
    f->num_prompts = n;
    lay_out(f, plan, tokens, o->pad_id);
    prepack_plan_free(plan);
    *out = f;
    return PREPACK_OK;
}

void prepack_prefill_free(prepack_prefill *p)
{
    pp_free(NULL, p);
}
