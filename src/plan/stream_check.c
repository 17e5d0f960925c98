/* A restored stream's state against what a live packer keeps true
 * (docs/STREAM.md, "Resuming"). The state's bytes are untrusted: a
 * crafted state can carry a correct XXH64, so after decoding, every
 * field is held to the packer's own invariants before the stream is used:
 *
 *   items: length 1..L; tokens exactly when the stream has them; mask
 *     bytes 0 or 1; a chunk's offset 0 (a multiple of L under SPLIT);
 *     an arrival number below the next one, each at most once; the
 *     lookahead holds the latest arrivals and fewer than K of them;
 *   rows: 1..max_seqs_per_row items whose lengths sum to L - room; an
 *     open one can still take more; a number below the next one, each
 *     at most once; at most `window` open;
 *   counters: below 2^63; arrivals = items; rows opened = closed +
 *     open; held tokens counted; items per kept sequence as the overlong
 *     policy gives them; truncated tokens only under TRUNCATE.
 *
 * Each rule is one that pushing, placing and popping keep, so a state
 * that passes stays one that passes as the stream goes on.
 *
 * Failing any is PREPACK_ECORRUPT naming the row or item and the rule. */
#include <stdio.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "common/error.h"
#include "plan/stream.h"

static int broken(prepack_diag *diag, uint64_t record, const char *where,
                  const char *why)
{
    return pp_fail(diag, PREPACK_ECORRUPT, record, "stream state: %s: %s",
                   where, why);
}

static int mask_is_binary(const item *it)
{
    for (uint32_t i = 0; it->mask && i < it->len; i++)
        if (it->mask[i] > 1)
            return 0;
    return 1;
}

/* Where a chunk of a sequence can start under the stream's policy. */
static int offset_ok(const prepack_stream *s, const item *it)
{
    if (s->o.overlong != PREPACK_OVERLONG_SPLIT)
        return it->off == 0;
    return it->off % s->o.max_seq_len == 0 &&
           (uint64_t)it->off + it->len <= UINT32_MAX;
}

static const char *item_fault(const prepack_stream *s, const item *it)
{
    if (it->len == 0 || it->len > s->o.max_seq_len)
        return "an item's length is not 1..max_seq_len";
    if ((it->tokens != NULL) != (s->has_tokens == 1))
        return "an item's tokens do not match the stream's (all or none)";
    if (it->arrival >= s->next_arrival)
        return "an item arrived after the last arrival counted";
    if (!offset_ok(s, it))
        return "an item starts where no chunk of a sequence starts";
    if (!mask_is_binary(it))
        return "an item's loss mask holds a byte other than 0 and 1";
    return NULL;
}

static int check_item(const prepack_stream *s, const item *it,
                      const char *where, prepack_diag *diag)
{
    const char *why = item_fault(s, it);
    if (!why)
        return PREPACK_OK;
    char at[96];
    snprintf(at, sizeof at, "%s, sequence %llu (arrival %llu)", where,
             (unsigned long long)it->id, (unsigned long long)it->arrival);
    return broken(diag, it->id, at, why);
}

static const char *row_fault(const prepack_stream *s, const row *r, int open)
{
    uint32_t most = s->o.max_seqs_per_row;
    uint64_t used = 0;
    for (size_t i = 0; i < r->n; i++)
        used += r->items[i].len;
    if (r->n == 0)
        return "a row holds no item";
    if (most && r->n > most)
        return "a row holds more items than max_seqs_per_row";
    if (used + r->room != s->o.max_seq_len)
        return "a row's room is not max_seq_len less its items";
    if (open && (r->room == 0 || (most && r->n == most)))
        return "an open row can take nothing more (it would have closed)";
    if (r->number >= s->next_row)
        return "a row opened after the last row counted";
    return NULL;
}

static int check_row(const prepack_stream *s, const row *r, int open,
                     prepack_diag *diag)
{
    char where[64];
    snprintf(where, sizeof where, "%s row %llu", open ? "open" : "closed",
             (unsigned long long)r->number);
    const char *why = row_fault(s, r, open);
    if (why)
        return broken(diag, PREPACK_NO_RECORD, where, why);
    for (size_t i = 0; i < r->n; i++) {
        int rc = check_item(s, &r->items[i], where, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    return PREPACK_OK;
}

static const row *ready_row(const prepack_stream *s, size_t i)
{
    return &s->ready[(s->ready_head + i) % s->ready_cap];
}

static const row *open_row(const prepack_stream *s, size_t i)
{
    return &s->slots[s->open[i].slot];
}

/* The lookahead: fewer than K items, the latest nheap arrivals (it is
 * placed whole once K have come, so nothing older can wait). */
static int check_lookahead(const prepack_stream *s, prepack_diag *diag)
{
    if (s->nheap && s->nheap >= s->o.lookahead)
        return broken(diag, PREPACK_NO_RECORD, "the lookahead",
                      "as many items as it places at once (or more)");
    for (size_t i = 0; i < s->nheap; i++) {
        const item *it = &s->heap[i];
        int rc = check_item(s, it, "the lookahead", diag);
        if (rc != PREPACK_OK)
            return rc;
        if (s->next_arrival - it->arrival > s->nheap)
            return broken(diag, it->id, "the lookahead",
                          "an item older than the last placement");
    }
    return PREPACK_OK;
}

/* ---- every arrival and every row number at most once ------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Whether the n values hold one twice (they are sorted). */
static int has_repeat(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (v[i] == v[i - 1])
            return 1;
    return 0;
}

static size_t held_items(const prepack_stream *s)
{
    size_t n = s->nheap;
    for (size_t i = 0; i < s->nopen; i++)
        n += open_row(s, i)->n;
    for (size_t i = 0; i < s->nready; i++)
        n += ready_row(s, i)->n;
    return n;
}

static size_t put_arrivals(const row *r, uint64_t *v)
{
    for (size_t j = 0; j < r->n; j++)
        v[j] = r->items[j].arrival;
    return r->n;
}

static int check_unique(const prepack_stream *s, prepack_diag *diag)
{
    size_t n = held_items(s), rows = s->nopen + s->nready, k = 0;
    uint64_t *v = pp_alloc(s->alloc, n > rows ? n : rows, sizeof *v);
    if (!v)
        return pp_out_of_memory(diag);
    for (size_t i = 0; i < s->nheap; i++)
        v[k++] = s->heap[i].arrival;
    for (size_t i = 0; i < s->nopen; i++)
        k += put_arrivals(open_row(s, i), v + k);
    for (size_t i = 0; i < s->nready; i++)
        k += put_arrivals(ready_row(s, i), v + k);
    int twice = has_repeat(v, k);
    const char *why = "an item (its arrival number) held twice";
    if (!twice) {
        for (k = 0; k < s->nopen; k++)
            v[k] = open_row(s, k)->number;
        for (size_t i = 0; i < s->nready; i++)
            v[k++] = ready_row(s, i)->number;
        twice = has_repeat(v, k);
        why = "a row number held twice";
    }
    pp_free(s->alloc, v);
    return twice ? broken(diag, PREPACK_NO_RECORD, "the rows", why)
                 : PREPACK_OK;
}

/* ---- the counters ------------------------------------------------------- */

/* Items against the sequences kept (pushed, not dropped): one each under
 * TRUNCATE and DROP, at least one under SPLIT, at most one under ERROR
 * (a refused sequence is counted, not placed). */
static int items_match_sequences(const prepack_stream *s)
{
    const prepack_stream_stats *st = &s->st;
    if (st->dropped > st->sequences)
        return 0;
    uint64_t kept = st->sequences - st->dropped;
    switch (s->o.overlong) {
    case PREPACK_OVERLONG_SPLIT:
        return st->items >= kept;
    case PREPACK_OVERLONG_ERROR:
        return st->items <= kept;
    default:
        return st->items == kept;
    }
}

/* Whether tokens fit in items of 1..L tokens each. */
static int tokens_fit_items(uint64_t tokens, uint64_t items, uint32_t L)
{
    uint64_t least_items = tokens / L + (tokens % L != 0);
    return tokens >= items && least_items <= items;
}

/* A live stream counts far below 2^63 (2^63 items at a billion a second
 * take 292 years); a crafted counter just below 2^64 would wrap within a
 * few pushes and break the rules below after the restore. */
static int counters_far_from_wrapping(const prepack_stream *s)
{
    const prepack_stream_stats *st = &s->st;
    const uint64_t c[8] = {s->next_row, s->next_arrival, st->sequences,
                           st->items, st->tokens, st->rows, st->dropped,
                           st->truncated_tokens};
    for (int i = 0; i < 8; i++)
        if (c[i] >> 63)
            return 0;
    return 1;
}

static const char *counter_fault(const prepack_stream *s)
{
    const prepack_stream_stats *st = &s->st;
    if (!counters_far_from_wrapping(s))
        return "a counter of 2^63 or more";
    if (s->has_tokens == -1 && s->next_arrival != 0)
        return "items, yet no sequence was ever pushed";
    if (s->next_arrival != st->items)
        return "the arrivals and the items counted differ";
    if (!items_match_sequences(s))
        return "the items do not match the sequences pushed and dropped";
    if (!tokens_fit_items(st->tokens, st->items, s->o.max_seq_len))
        return "the tokens counted do not fit the items counted";
    if (st->truncated_tokens && s->o.overlong != PREPACK_OVERLONG_TRUNCATE)
        return "truncated tokens under a policy that does not truncate";
    if (st->rows > s->next_row || s->next_row - st->rows != s->nopen)
        return "the rows opened are not the rows closed and open";
    return NULL;
}

/* The tokens held are within those counted. (The items held need no
 * such check: their arrivals, distinct and below next_arrival = items,
 * bound them; and the ready rows' numbers, distinct and below next_row =
 * rows + open, bound the ready rows by the rows closed.) */
static const char *held_fault(const prepack_stream *s)
{
    uint64_t tokens = 0;
    for (size_t i = 0; i < s->nheap; i++)
        tokens += s->heap[i].len;
    for (size_t i = 0; i < s->nopen; i++)
        for (size_t j = 0; j < open_row(s, i)->n; j++)
            tokens += open_row(s, i)->items[j].len;
    for (size_t i = 0; i < s->nready; i++)
        for (size_t j = 0; j < ready_row(s, i)->n; j++)
            tokens += ready_row(s, i)->items[j].len;
    if (tokens > s->st.tokens)
        return "more tokens held than counted";
    return NULL;
}

int pp_stream_check(const prepack_stream *s, prepack_diag *diag)
{
    const char *why = counter_fault(s);
    if (why)
        return broken(diag, PREPACK_NO_RECORD, "the counters", why);
    int rc = check_lookahead(s, diag);
    for (size_t i = 0; rc == PREPACK_OK && i < s->nopen; i++)
        rc = check_row(s, open_row(s, i), 1, diag);
    for (size_t i = 0; rc == PREPACK_OK && i < s->nready; i++)
        rc = check_row(s, ready_row(s, i), 0, diag);
    if (rc != PREPACK_OK)
        return rc;
    why = held_fault(s);
    if (why)
        return broken(diag, PREPACK_NO_RECORD, "the counters", why);
    return check_unique(s, diag);
}
