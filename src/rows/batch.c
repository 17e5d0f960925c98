/* Batches: rows laid out flat (varlen) or padded, each sequence padded to
 * a multiple for context parallelism on request, with every derived field
 * a training step feeds. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"
#include "rows/batch.h"

/* Buffers a reader keeps for its batches (growing, never shrinking). */
struct pp_batch_buffers {
    int64_t *ids, *pos, *doc, *lab;
    int32_t *cu;
    uint64_t *seq;
    uint8_t *attn, *dense;
    size_t tokens_cap, seqs_cap, dense_cap;
    int external; /* the caller's arrays: never grown or freed here */
    int32_t *pcu; /* flat with pad_multiple: the physical cu_seqlens */
    /* pad_multiple: the row padded, each row's fields derived from it
     * (always the library's, growing) */
    uint32_t *row_ids;
    int32_t *row_cu;
    uint8_t *row_mask;
    size_t row_tokens_cap, row_seqs_cap;
};

void pp_batch_buffers_free(const prepack_allocator *a, pp_batch_buffers *b)
{
    if (!b)
        return;
    pp_free(a, b->row_ids);
    pp_free(a, b->row_cu);
    pp_free(a, b->row_mask);
    if (b->external) {
        pp_free(a, b);
        return;
    }
    pp_free(a, b->pcu);
    pp_free(a, b->ids);
    pp_free(a, b->pos);
    pp_free(a, b->doc);
    pp_free(a, b->lab);
    pp_free(a, b->cu);
    pp_free(a, b->seq);
    pp_free(a, b->attn);
    pp_free(a, b->dense);
    pp_free(a, b);
}

static int grow_to(const prepack_allocator *a, void **p, size_t need,
                   size_t elem)
{
    void *q = pp_realloc(a, *p, need, elem);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

/* Room for `tokens` token slots, `seqs` sequences and `dense` mask bytes;
 * capacities double, so a flat batch grown row by row costs O(total). */
static int reserve(const prepack_allocator *a, pp_batch_buffers *b,
                   size_t tokens, size_t seqs, size_t dense)
{
    if (b->external)
        return tokens <= b->tokens_cap && seqs + 1 <= b->seqs_cap + 1 &&
                       dense <= b->dense_cap
                   ? 0
                   : -1;
    if (tokens > b->tokens_cap) {
        size_t cap = tokens > 2 * b->tokens_cap ? tokens : 2 * b->tokens_cap;
        if (grow_to(a, (void **)&b->ids, cap, sizeof *b->ids) ||
            grow_to(a, (void **)&b->pos, cap, sizeof *b->pos) ||
            grow_to(a, (void **)&b->doc, cap, sizeof *b->doc) ||
            grow_to(a, (void **)&b->lab, cap, sizeof *b->lab) ||
            grow_to(a, (void **)&b->attn, cap, 1))
            return -1;
        b->tokens_cap = cap;
    }
    if (seqs + 1 > b->seqs_cap) {
        size_t cap = seqs + 1 > 2 * b->seqs_cap ? seqs + 1 : 2 * b->seqs_cap;
        if (grow_to(a, (void **)&b->cu, cap, sizeof *b->cu) ||
            grow_to(a, (void **)&b->pcu, cap, sizeof *b->pcu) ||
            grow_to(a, (void **)&b->seq, cap, sizeof *b->seq))
            return -1;
        b->seqs_cap = cap;
    }
    if (dense > b->dense_cap) {
        if (grow_to(a, (void **)&b->dense, dense, 1))
            return -1;
        b->dense_cap = dense;
    }
    return 0;
}

/* The row's labels that are not -100 (prepack_row_labels'), from the
 * row alone: every token but its sequence's first is some label's target,
 * trained unless the loss mask says not (cu_seqlens strictly rising, as
 * the reader and pad_row keep it, so each sequence's first token is in
 * the row). A byte a token, or nothing, instead of reading back the int64
 * labels just written: 16-row batches on a real set 6.3 -> 5.4 ns a
 * token. */
static uint64_t trained_labels(const prepack_row *row)
{
    if (!row->loss_mask)
        return row->num_tokens - row->num_seqs;
    uint64_t k = 0;
    for (size_t i = 0; i < row->num_tokens; i++)
        k += row->loss_mask[i] != 0;
    for (size_t j = 0; j < row->num_seqs; j++)
        k -= row->loss_mask[row->cu_seqlens[j]] != 0;
    return k;
}

/* Appends one row at token slot `at` (width slots in the padded form). */
static void put_row(pp_batch_buffers *b, const prepack_row *row, size_t at,
                    size_t width, size_t first_seq, int padded, int64_t pad_id)
{
    prepack_row_input_ids(row, pad_id, b->ids + at, width);
    prepack_row_position_ids(row, b->pos + at, width);
    if (b->doc) /* the caller's arrays may go without */
        prepack_row_doc_ids(row, padded ? 0 : (int64_t)first_seq, b->doc + at,
                            width);
    prepack_row_labels(row, b->lab + at, width);
    if (b->attn) { /* the caller's flat batches may go without */
        memset(b->attn + at, 1, row->num_tokens);
        memset(b->attn + at + row->num_tokens, 0, width - row->num_tokens);
    }
    for (size_t j = 0; j < row->num_seqs; j++) {
        b->seq[first_seq + j] = row->seq_ids[j];
        b->cu[first_seq + j + 1] =
            (int32_t)(at + (size_t)row->cu_seqlens[j + 1]);
    }
}

/* Room in the scratch row for `tokens` tokens and `seqs` sequences. */
static int reserve_row(const prepack_allocator *a, pp_batch_buffers *b,
                       size_t tokens, size_t seqs)
{
    if (tokens > b->row_tokens_cap) {
        size_t cap =
            tokens > 2 * b->row_tokens_cap ? tokens : 2 * b->row_tokens_cap;
        if (grow_to(a, (void **)&b->row_ids, cap, sizeof *b->row_ids) ||
            grow_to(a, (void **)&b->row_mask, cap, 1))
            return -1;
        b->row_tokens_cap = cap;
    }
    if (seqs + 1 > b->row_seqs_cap) {
        if (grow_to(a, (void **)&b->row_cu, seqs + 1, sizeof *b->row_cu))
            return -1;
        b->row_seqs_cap = seqs + 1;
    }
    return 0;
}

static size_t round_up(size_t n, size_t m)
{
    return (n + m - 1) / m * m;
}

/* The tokens of the row with each sequence padded to a multiple of m, or
 * SIZE_MAX past `limit`: summed with a bound at each step, since m is the
 * caller's (any uint32) and k x m can pass any array, or size_t. */
static size_t padded_length(const prepack_row *row, size_t m, size_t limit)
{
    size_t T = 0;
    for (size_t j = 0; j < row->num_seqs; j++) {
        size_t n = (size_t)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]);
        size_t up = round_up(n, m);
        if (up > limit - T)
            return SIZE_MAX;
        T += up;
    }
    return T;
}

/* The row with each sequence followed by padding up to a multiple of m
 * tokens (T of them, padded_length's), never trained, as _collate.py's
 * _pad_rows lays it out: every field is derived from it (the padding's
 * ids are set to pad_id after). */
static int pad_row(const prepack_allocator *a, pp_batch_buffers *b,
                   const prepack_row *row, size_t m, size_t T,
                   prepack_row *out)
{
    size_t k = row->num_seqs;
    if (reserve_row(a, b, T, k))
        return -1;
    memset(b->row_ids, 0, T * sizeof *b->row_ids);
    memset(b->row_mask, 0, T);
    b->row_cu[0] = 0;
    for (size_t j = 0; j < k; j++) {
        size_t from = (size_t)row->cu_seqlens[j], at = (size_t)b->row_cu[j];
        size_t n = (size_t)row->cu_seqlens[j + 1] - from;
        for (size_t i = 0; i < n; i++)
            b->row_ids[at + i] = prepack_row_token(row, from + i);
        if (row->loss_mask)
            memcpy(b->row_mask + at, row->loss_mask + from, n);
        else
            memset(b->row_mask + at, 1, n);
        b->row_cu[j + 1] = (int32_t)(at + round_up(n, m));
    }
    *out = *row;
    out->num_tokens = T;
    out->token_dtype = PREPACK_DTYPE_UINT32;
    out->input_ids = b->row_ids;
    out->cu_seqlens = b->row_cu;
    out->loss_mask = b->row_mask;
    return 0;
}

/* After put_row of a padded row (at token slot `at`): pad_id on the
 * padding, attention_mask 0 there (padded form), and the flat form's
 * cu_seqlens back to the real lengths with the physical ones beside. */
static void mark_padding(pp_batcher *bt, const prepack_row *real,
                         const prepack_row *padded, size_t at)
{
    pp_batch_buffers *b = bt->b;
    for (size_t j = 0; j < real->num_seqs; j++) {
        size_t n = (size_t)(real->cu_seqlens[j + 1] - real->cu_seqlens[j]);
        size_t lo = at + (size_t)padded->cu_seqlens[j] + n;
        size_t hi = at + (size_t)padded->cu_seqlens[j + 1];
        for (size_t t = lo; t < hi; t++)
            b->ids[t] = bt->o.pad_id;
        if (bt->o.padded) {
            memset(b->attn + lo, 0, hi - lo);
            continue;
        }
        size_t s = bt->seqs + j + 1;
        b->pcu[s] = b->cu[s];
        b->cu[s] = (int32_t)(bt->real_tokens + (size_t)real->cu_seqlens[j + 1]);
    }
    bt->real_tokens += real->num_tokens;
}

int pp_batch_begin(pp_batcher *bt, pp_batch_buffers **bufs,
                   const prepack_allocator *a, size_t rows,
                   uint32_t max_seq_len, const prepack_batch_options *o,
                   prepack_diag *diag)
{
    memset(bt, 0, sizeof *bt);
    if (o)
        bt->o = *o;
    if (!*bufs && !(*bufs = pp_calloc(a, 1, sizeof **bufs)))
        return pp_out_of_memory(diag);
    bt->b = *bufs;
    bt->alloc = a;
    bt->rows = rows;
    bt->max_seq_len = max_seq_len;
    /* cu_seqlens always holds its leading 0, a batch of no rows too */
    if (reserve(a, bt->b, 0, 0, 0))
        return pp_out_of_memory(diag);
    bt->b->cu[0] = bt->b->pcu[0] = 0;
    return PREPACK_OK;
}

int pp_batch_begin_into(pp_batcher *bt, pp_batch_buffers **ext,
                        const prepack_allocator *a,
                        const prepack_batch_arrays *dst, size_t rows,
                        uint32_t max_seq_len, const prepack_batch_options *o,
                        prepack_diag *diag)
{
    if (!dst->input_ids || !dst->position_ids || !dst->labels ||
        !dst->cu_seqlens || !dst->seq_ids ||
        (o && o->padded && !dst->attention_mask) ||
        (o && o->padded && o->dense_mask && !dst->dense_mask) ||
        (o && !o->padded && o->pad_multiple > 1 && !dst->cu_seqlens_padded))
        return pp_invalid_argument(diag);
    if (!*ext && !(*ext = pp_calloc(a, 1, sizeof **ext)))
        return pp_out_of_memory(diag);
    pp_batch_buffers *b = *ext;
    *b = (pp_batch_buffers){dst->input_ids,
                            dst->position_ids,
                            dst->doc_ids,
                            dst->labels,
                            dst->cu_seqlens,
                            dst->seq_ids,
                            dst->attention_mask,
                            dst->dense_mask,
                            dst->tokens_cap,
                            dst->seqs_cap,
                            dst->dense_cap,
                            1,
                            dst->cu_seqlens_padded,
                            b->row_ids,
                            b->row_cu,
                            b->row_mask,
                            b->row_tokens_cap,
                            b->row_seqs_cap};
    memset(bt, 0, sizeof *bt);
    if (o)
        bt->o = *o;
    bt->b = b;
    bt->alloc = a;
    bt->rows = rows;
    bt->max_seq_len = max_seq_len;
    b->cu[0] = 0;
    if (b->pcu)
        b->pcu[0] = 0;
    return PREPACK_OK;
}

/* A row of the padded form that padding made longer than L. */
static int too_long(const pp_batcher *bt, const prepack_row *row,
                    prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                   "row %zu of the batch has %zu tokens with its sequences "
                   "padded to multiples of %u, more than max_seq_len %zu",
                   bt->added, row->num_tokens, bt->o.pad_multiple,
                   bt->max_seq_len);
}

/* A row the caller's arrays cannot take. */
static int no_room(const pp_batcher *bt, prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                   "row %zu of the batch does not fit the arrays given "
                   "(%zu tokens, %zu sequences)",
                   bt->added, bt->b->tokens_cap, bt->b->seqs_cap);
}

/* The flat form's offsets are int32: a batch past 2^31 - 1 tokens. */
static int past_int32(const pp_batcher *bt, prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                   "row %zu takes the flat batch past %d tokens (sequences "
                   "padded to multiples of %u), more than its int32 "
                   "cu_seqlens hold",
                   bt->added, INT32_MAX,
                   bt->o.pad_multiple > 1 ? bt->o.pad_multiple : 1);
}

/* The most tokens the next row may take: L padded, the room left in the
 * caller's arrays, and the flat form's int32 offsets. */
static size_t room_for_row(const pp_batcher *bt)
{
    if (bt->o.padded)
        return bt->max_seq_len;
    size_t room = (size_t)INT32_MAX - bt->tokens;
    if (bt->b->external && bt->b->tokens_cap - bt->tokens < room)
        room = bt->b->tokens_cap - bt->tokens;
    return room;
}

/* The row padded for context parallelism into *padded, refused by its
 * length before anything is allocated for it. */
static int pad_for_cp(pp_batcher *bt, const prepack_row *real,
                      prepack_row *padded, prepack_diag *diag)
{
    size_t m = bt->o.pad_multiple, room = room_for_row(bt);
    size_t T = padded_length(real, m, room);
    if (T == SIZE_MAX) {
        prepack_row over = *real;
        over.num_tokens = padded_length(real, m, SIZE_MAX);
        return bt->o.padded        ? too_long(bt, &over, diag)
               : bt->b->external && room < (size_t)INT32_MAX - bt->tokens
                   ? no_room(bt, diag)
                   : past_int32(bt, diag);
    }
    if (pad_row(bt->alloc, bt->b, real, m, T, padded))
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory for a batch of %zu rows", bt->rows);
    return PREPACK_OK;
}

int pp_batch_add_row(pp_batcher *bt, const prepack_row *real,
                     prepack_diag *diag)
{
    const prepack_batch_options *o = &bt->o;
    size_t L = bt->max_seq_len, n = bt->rows, i = bt->added;
    prepack_row padded;
    const prepack_row *row = real;
    if (o->pad_multiple > 1) {
        int rc = pad_for_cp(bt, real, &padded, diag);
        if (rc != PREPACK_OK)
            return rc;
        row = &padded;
    }
    size_t width = o->padded ? L : row->num_tokens;
    size_t at = o->padded ? i * L : bt->tokens;
    size_t dense = o->padded && o->dense_mask ? n * L * L : 0;
    if (!o->padded && at + width > (size_t)INT32_MAX)
        return past_int32(bt, diag);
    if (reserve(bt->alloc, bt->b, at + width, bt->seqs + row->num_seqs, dense))
        return bt->b->external
                   ? no_room(bt, diag)
                   : pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                             "out of memory for a batch of %zu rows", n);
    put_row(bt->b, row, at, width, bt->seqs, o->padded, o->pad_id);
    bt->loss_tokens += trained_labels(row);
    if (row != real)
        mark_padding(bt, real, row, at);
    if (dense)
        prepack_row_dense_mask(row, bt->b->dense + i * L * L, L);
    uint32_t m = prepack_row_max_seqlen(row);
    bt->longest = m > bt->longest ? m : bt->longest;
    bt->tokens = at + width;
    bt->seqs += row->num_seqs;
    bt->added++;
    return PREPACK_OK;
}

void pp_batch_finish(const pp_batcher *bt, prepack_batch *out)
{
    const prepack_batch_options *o = &bt->o;
    const pp_batch_buffers *b = bt->b;
    memset(out, 0, sizeof *out);
    out->rows = bt->added;
    out->width = o->padded ? bt->max_seq_len : bt->tokens;
    out->num_seqs = bt->seqs;
    out->max_seqlen = bt->longest;
    out->input_ids = b->ids;
    out->position_ids = b->pos;
    out->doc_ids = b->doc;
    out->labels = b->lab;
    out->cu_seqlens = o->padded ? NULL : b->cu;
    out->seq_ids = b->seq;
    out->attention_mask = o->padded ? b->attn : NULL;
    out->dense_mask = o->padded && o->dense_mask ? b->dense : NULL;
    out->cu_seqlens_padded = !o->padded && o->pad_multiple > 1 ? b->pcu : NULL;
    out->num_loss_tokens = bt->loss_tokens;
}
