/* Rows: building them from a plan and a store, and the fields a varlen
 * attention kernel derives from cu_seqlens (positions, document ids,
 * labels, the dense mask), each in O(width) or O(width^2) for the mask. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"
#include "ingest/store.h"
#include "plan/plan.h"

#define IGNORE_INDEX INT64_C(-100) /* PyTorch cross-entropy's ignore_index */

uint32_t prepack_row_token(const prepack_row *row, size_t i)
{
    return row->token_dtype == PREPACK_DTYPE_UINT16
               ? ((const uint16_t *)row->input_ids)[i]
               : ((const uint32_t *)row->input_ids)[i];
}

static uint32_t seq_length(const prepack_row *row, size_t j)
{
    return (uint32_t)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]);
}

uint32_t prepack_row_max_seqlen(const prepack_row *row)
{
    uint32_t max = 0;
    for (size_t j = 0; j < row->num_seqs; j++)
        max = seq_length(row, j) > max ? seq_length(row, j) : max;
    return max;
}

void prepack_row_position_ids(const prepack_row *row, int64_t *out,
                              size_t width)
{
    for (size_t j = 0; j < row->num_seqs; j++)
        for (int32_t i = row->cu_seqlens[j]; i < row->cu_seqlens[j + 1]; i++)
            out[i] = i - row->cu_seqlens[j];
    for (size_t i = row->num_tokens; i < width; i++)
        out[i] = 0;
}

void prepack_row_doc_ids(const prepack_row *row, int64_t first_doc,
                         int64_t *out, size_t width)
{
    for (size_t j = 0; j < row->num_seqs; j++)
        for (int32_t i = row->cu_seqlens[j]; i < row->cu_seqlens[j + 1]; i++)
            out[i] = first_doc + (int64_t)j;
    for (size_t i = row->num_tokens; i < width; i++)
        out[i] = -1;
}

/* n of the row's tokens from token `first` on, as int64: one loop a
 * width (prepack_row_token per token costs a call and a test each, most
 * of a batch's time when the labels used it). */
static void tokens_int64(const prepack_row *row, size_t first, size_t n,
                         int64_t *out)
{
    if (row->token_dtype == PREPACK_DTYPE_UINT16) {
        const uint16_t *t = (const uint16_t *)row->input_ids + first;
        for (size_t i = 0; i < n; i++)
            out[i] = t[i];
    } else {
        const uint32_t *t = (const uint32_t *)row->input_ids + first;
        for (size_t i = 0; i < n; i++)
            out[i] = t[i];
    }
}

void prepack_row_input_ids(const prepack_row *row, int64_t pad_id,
                           int64_t *out, size_t width)
{
    tokens_int64(row, 0, row->num_tokens, out);
    for (size_t i = row->num_tokens; i < width; i++)
        out[i] = pad_id;
}

/* out[i] = -100 where token i + shift is not trained (loss mask 0). */
static void mask_untrained(const prepack_row *row, size_t shift, int64_t *out)
{
    if (!row->loss_mask)
        return;
    for (size_t i = 0; i + shift < row->num_tokens; i++)
        if (!row->loss_mask[i + shift])
            out[i] = IGNORE_INDEX;
}

void prepack_row_labels(const prepack_row *row, int64_t *out, size_t width)
{
    size_t T = row->num_tokens;
    if (T > 1)
        tokens_int64(row, 1, T - 1, out); /* out[i] = token i + 1 */
    mask_untrained(row, 1, out);
    for (size_t j = 0; j < row->num_seqs; j++) /* nothing after it in its
                                                  sequence */
        out[row->cu_seqlens[j + 1] - 1] = IGNORE_INDEX;
    for (size_t i = T; i < width; i++)
        out[i] = IGNORE_INDEX;
}

void prepack_row_labels_unshifted(const prepack_row *row, int64_t *out,
                                  size_t width)
{
    tokens_int64(row, 0, row->num_tokens, out);
    mask_untrained(row, 0, out);
    for (size_t j = 0; j < row->num_seqs; j++) /* nothing before it
                                                  predicts it */
        out[row->cu_seqlens[j]] = IGNORE_INDEX;
    for (size_t i = row->num_tokens; i < width; i++)
        out[i] = IGNORE_INDEX;
}

void prepack_row_dense_mask(const prepack_row *row, uint8_t *out, size_t width)
{
    memset(out, 0, width * width);
    for (size_t j = 0; j < row->num_seqs; j++) {
        size_t first = (size_t)row->cu_seqlens[j];
        size_t end = (size_t)row->cu_seqlens[j + 1];
        for (size_t q = first; q < end; q++)
            memset(out + q * width + first, 1, q - first + 1);
    }
}

/* ---- the row builder ---------------------------------------------------- */

struct prepack_row_builder {
    const prepack_plan *plan;
    const prepack_store *store;
    const prepack_allocator *alloc;
    unsigned width;    /* token bytes: 2 or 4 */
    void *tokens;      /* [L] */
    int32_t *cu;       /* [L + 1] */
    uint64_t *seq_ids; /* [L] */
    uint8_t *mask;     /* [L] or NULL */
    uint32_t *starts;  /* [L] or NULL */
    uint32_t *ref_source; /* [L], on the first get_references */
    uint64_t *ref_offset; /* [L] */
};

void prepack_row_builder_free(prepack_row_builder *b)
{
    if (!b)
        return;
    const prepack_allocator *a = b->alloc;
    pp_free(a, b->tokens);
    pp_free(a, b->cu);
    pp_free(a, b->seq_ids);
    pp_free(a, b->mask);
    pp_free(a, b->starts);
    pp_free(a, b->ref_source);
    pp_free(a, b->ref_offset);
    pp_free(a, b);
}

int prepack_row_builder_create(prepack_row_builder **out,
                               const prepack_plan *plan,
                               const prepack_store *store, prepack_diag *diag)
{
    if (!out || !plan || !store)
        return pp_invalid_argument(diag);
    *out = NULL;
    prepack_plan_stats st;
    prepack_plan_get_stats(plan, &st);
    if (st.sequences != prepack_store_sequence_count(store))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the plan has %llu sequences, the store %zu",
                       (unsigned long long)st.sequences,
                       prepack_store_sequence_count(store));
    const prepack_allocator *a = pp_store_allocator(store);
    prepack_row_builder *b = pp_calloc(a, 1, sizeof *b);
    if (!b)
        return pp_out_of_memory(diag);
    size_t L = st.max_seq_len;
    b->plan = plan;
    b->store = store;
    b->alloc = a;
    b->width = (unsigned)prepack_dtype_width(prepack_store_dtype(store));
    b->tokens = pp_alloc(a, L, b->width);
    b->cu = pp_alloc(a, L + 1, sizeof *b->cu);
    b->seq_ids = pp_alloc(a, L, sizeof *b->seq_ids);
    int ok = b->tokens && b->cu && b->seq_ids;
    if (ok && prepack_store_has_loss_mask(store))
        ok = (b->mask = pp_alloc(a, L, 1)) != NULL;
    if (ok && pp_plan_has_offsets(plan))
        ok = (b->starts = pp_alloc(a, L, sizeof *b->starts)) != NULL;
    if (!ok) {
        prepack_row_builder_free(b);
        return pp_out_of_memory(diag);
    }
    *out = b;
    return PREPACK_OK;
}

static void copy_mask(const prepack_row_builder *b, const prepack_item *it,
                      uint8_t *out)
{
    const uint8_t *m = prepack_store_loss_mask(b->store, (size_t)it->seq_id);
    if (m)
        memcpy(out, m + it->offset, it->length);
    else
        memset(out, 1, it->length);
}

/* ---- plan-only rows: where the tokens are -------------------------------- */

static int alloc_references(prepack_row_builder *b)
{
    if (b->ref_source)
        return PREPACK_OK;
    prepack_plan_stats st;
    prepack_plan_get_stats(b->plan, &st);
    b->ref_source = pp_alloc(b->alloc, st.max_seq_len, sizeof *b->ref_source);
    b->ref_offset = pp_alloc(b->alloc, st.max_seq_len, sizeof *b->ref_offset);
    if (b->ref_source && b->ref_offset)
        return PREPACK_OK;
    pp_free(b->alloc, b->ref_source);
    pp_free(b->alloc, b->ref_offset);
    b->ref_source = NULL;
    b->ref_offset = NULL;
    return PREPACK_ENOMEM;
}

/* Where item `it` (the row's j-th) starts in the file it references;
 * PREPACK_EINVAL when its tokens were parsed from text (no file holds
 * them). */
static int item_ref(prepack_row_builder *b, const prepack_item *it, size_t j)
{
    uint32_t src;
    uint64_t at;
    pp_store_location(b->store, (size_t)it->seq_id, &src, &at);
    if (src == 0)
        return PREPACK_EINVAL;
    pp_store_source info;
    pp_store_source_get(b->store, src, &info);
    b->ref_source[j] = src - 1;
    b->ref_offset[j] = at + (uint64_t)it->offset * info.width;
    return PREPACK_OK;
}

/* Row r's fields; its tokens copied (references NULL) or located. */
static int build_row(prepack_row_builder *b, size_t r, prepack_row *row,
                     prepack_row_references *references)
{
    if (r >= prepack_plan_row_count(b->plan))
        return PREPACK_EINVAL;
    size_t k = prepack_plan_row_size(b->plan, r);
    int32_t t = 0;
    b->cu[0] = 0;
    for (size_t j = 0; j < k; j++) {
        prepack_item it = prepack_plan_item(b->plan, r, j);
        if (references && item_ref(b, &it, j) != PREPACK_OK)
            return PREPACK_EINVAL;
        if (!references)
            pp_store_copy_range(b->store, (size_t)it.seq_id, it.offset,
                                it.length, b->width,
                                (unsigned char *)b->tokens +
                                    (size_t)t * b->width);
        if (b->mask)
            copy_mask(b, &it, b->mask + t);
        if (b->starts)
            b->starts[j] = it.offset;
        b->seq_ids[j] = it.seq_id;
        t += (int32_t)it.length;
        b->cu[j + 1] = t;
    }
    row->num_tokens = (size_t)t;
    row->num_seqs = k;
    row->token_dtype =
        b->width == 2 ? PREPACK_DTYPE_UINT16 : PREPACK_DTYPE_UINT32;
    row->input_ids = references ? NULL : b->tokens;
    row->cu_seqlens = b->cu;
    row->seq_ids = b->seq_ids;
    row->loss_mask = b->mask;
    row->seq_starts = b->starts;
    if (references) {
        references->source = b->ref_source;
        references->offset = b->ref_offset;
    }
    return PREPACK_OK;
}

int prepack_row_builder_get(prepack_row_builder *b, size_t r, prepack_row *row)
{
    return build_row(b, r, row, NULL);
}

int prepack_row_builder_get_references(prepack_row_builder *b, size_t r,
                                       prepack_row *row,
                                       prepack_row_references *references)
{
    if (!b || !row || !references)
        return PREPACK_EINVAL;
    if (alloc_references(b) != PREPACK_OK)
        return PREPACK_ENOMEM;
    return build_row(b, r, row, references);
}
