/* Packing a stream: online best fit over a window of open rows, with an
 * optional lookahead whose items are placed K at a time, longest first
 * (docs/STREAM.md).
 *
 * Items own their tokens (and mask) until their row is popped. Open rows
 * are kept in an array sorted by (room, row number): best fit is a binary
 * search for the first room >= the item's length, "the fullest row" is
 * the first entry. A window is at most a few thousand rows, so moving
 * entries in that array costs less than a tree would, and it is trivially
 * the same after a save and a restore. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"
#include "plan/stream.h"

enum { DEFAULT_WINDOW = 256 };

/* ---- items ------------------------------------------------------------ */

void pp_stream_item_free(const prepack_allocator *a, item *it)
{
    pp_free(a, it->tokens);
    pp_free(a, it->mask);
    it->tokens = NULL;
    it->mask = NULL;
}

void pp_stream_row_free(const prepack_allocator *a, row *r)
{
    for (size_t i = 0; i < r->n; i++)
        pp_stream_item_free(a, &r->items[i]);
    pp_free(a, r->items);
    memset(r, 0, sizeof *r);
}

/* Whether a comes before b in the lookahead: longer, then earlier. */
static int heap_before(const item *a, const item *b)
{
    return a->len != b->len ? a->len > b->len : a->arrival < b->arrival;
}

static void heap_swap(item *h, size_t i, size_t j)
{
    item t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static int heap_push(prepack_stream *s, const item *it)
{
    if (pp_grow(s->alloc, (void **)&s->heap, &s->heap_cap, s->nheap + 1,
                sizeof *s->heap) != PREPACK_OK)
        return PREPACK_ENOMEM;
    size_t i = s->nheap++;
    s->heap[i] = *it;
    while (i > 0 && heap_before(&s->heap[i], &s->heap[(i - 1) / 2])) {
        heap_swap(s->heap, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    return PREPACK_OK;
}

static void sift_down(prepack_stream *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < s->nheap && heap_before(&s->heap[l], &s->heap[best]))
            best = l;
        if (r < s->nheap && heap_before(&s->heap[r], &s->heap[best]))
            best = r;
        if (best == i)
            break;
        heap_swap(s->heap, i, best);
        i = best;
    }
}

static item heap_pop(prepack_stream *s)
{
    item top = s->heap[0];
    s->heap[0] = s->heap[--s->nheap];
    sift_down(s, 0);
    return top;
}

void pp_stream_heapify(prepack_stream *s)
{
    for (size_t i = s->nheap / 2; i-- > 0;)
        sift_down(s, i);
}

/* ---- open rows ---------------------------------------------------------- */

static int ref_less(uint32_t room, uint64_t number, const open_ref *r)
{
    return room != r->room ? room < r->room : number < r->number;
}

/* The first index whose (room, number) is not less than the given. */
static size_t lower_bound(const prepack_stream *s, uint32_t room,
                          uint64_t number)
{
    size_t lo = 0, hi = s->nopen;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ref_less(s->open[mid].room, s->open[mid].number,
                     &(open_ref){room, number, 0}))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void pp_stream_index_insert(prepack_stream *s, size_t slot)
{
    const row *r = &s->slots[slot];
    size_t at = lower_bound(s, r->room, r->number);
    memmove(s->open + at + 1, s->open + at, (s->nopen - at) * sizeof *s->open);
    s->open[at] = (open_ref){r->room, r->number, slot};
    s->nopen++;
}

static void index_remove(prepack_stream *s, size_t at)
{
    memmove(s->open + at, s->open + at + 1,
            (s->nopen - at - 1) * sizeof *s->open);
    s->nopen--;
}

/* Whether a row can take nothing more. */
static int row_done(const prepack_stream *s, const row *r)
{
    return r->room == 0 ||
           (s->o.max_seqs_per_row && r->n >= s->o.max_seqs_per_row);
}

int pp_stream_ready_push(prepack_stream *s, const row *r)
{
    if (s->nready == s->ready_cap) {
        size_t cap = s->ready_cap ? 2 * s->ready_cap : 16;
        row *ring = pp_alloc(s->alloc, cap, sizeof *ring);
        if (!ring)
            return PREPACK_ENOMEM;
        for (size_t i = 0; i < s->nready; i++)
            ring[i] = s->ready[(s->ready_head + i) % s->ready_cap];
        pp_free(s->alloc, s->ready);
        s->ready = ring;
        s->ready_cap = cap;
        s->ready_head = 0;
    }
    s->ready[(s->ready_head + s->nready++) % s->ready_cap] = *r;
    return PREPACK_OK;
}

/* Moves an open row (not in the index) to the ready ring. */
static int close_slot(prepack_stream *s, size_t slot)
{
    if (pp_stream_ready_push(s, &s->slots[slot]) != PREPACK_OK)
        return PREPACK_ENOMEM;
    memset(&s->slots[slot], 0, sizeof s->slots[slot]);
    s->free_slots[s->nfree++] = slot;
    s->st.rows++;
    return PREPACK_OK;
}

static int row_add(prepack_stream *s, row *r, const item *it)
{
    if (pp_grow(s->alloc, (void **)&r->items, &r->cap, r->n + 1,
                sizeof *r->items) != PREPACK_OK)
        return PREPACK_ENOMEM;
    r->items[r->n++] = *it;
    r->room -= it->len;
    return PREPACK_OK;
}

/* After a row took an item: back into the index, or closed. */
static int settle(prepack_stream *s, size_t slot)
{
    if (row_done(s, &s->slots[slot]))
        return close_slot(s, slot);
    pp_stream_index_insert(s, slot);
    return PREPACK_OK;
}

/* Best fit among the open rows, else a new row (closing the fullest
 * first when the window is full). The item is the row's from here on. */
static int place(prepack_stream *s, const item *it)
{
    size_t at = lower_bound(s, it->len, 0);
    if (at < s->nopen) {
        size_t slot = s->open[at].slot;
        index_remove(s, at);
        if (row_add(s, &s->slots[slot], it) != PREPACK_OK)
            return PREPACK_ENOMEM;
        return settle(s, slot);
    }
    if (s->nopen == s->o.window) { /* the fullest row can gain least */
        size_t slot = s->open[0].slot;
        index_remove(s, 0);
        if (close_slot(s, slot) != PREPACK_OK)
            return PREPACK_ENOMEM;
    }
    size_t slot = s->free_slots[--s->nfree];
    row *r = &s->slots[slot];
    memset(r, 0, sizeof *r);
    r->number = s->next_row++;
    r->room = s->o.max_seq_len;
    if (row_add(s, r, it) != PREPACK_OK)
        return PREPACK_ENOMEM;
    return settle(s, slot);
}

/* ---- the handle --------------------------------------------------------- */

static int check_options(const prepack_stream_options *o, prepack_diag *diag)
{
    if (!o || o->max_seq_len == 0 || o->max_seq_len > PREPACK_MAX_SEQ_LEN_LIMIT)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "max_seq_len must be 1..%u", PREPACK_MAX_SEQ_LEN_LIMIT);
    if (!prepack_overlong_name(o->overlong))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "unknown overlong policy %d", (int)o->overlong);
    if (o->window > (1u << 20) || o->lookahead > (1u << 26))
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "window at most 2^20 rows, lookahead at most 2^26 "
                       "items");
    return pp_check_allocator(o->allocator, diag);
}

int prepack_stream_create(prepack_stream **out, const prepack_stream_options *o,
                          prepack_diag *diag)
{
    if (!out)
        return pp_invalid_argument(diag);
    *out = NULL;
    int rc = check_options(o, diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_stream *s = pp_calloc(o->allocator, 1, sizeof *s);
    if (!s)
        return pp_out_of_memory(diag);
    s->alloc = pp_allocator_keep(&s->alloc_copy, o->allocator);
    s->o = *o;
    s->o.allocator = NULL; /* s->alloc is the one in use */
    if (!s->o.window)
        s->o.window = DEFAULT_WINDOW;
    s->has_tokens = -1;
    size_t w = s->o.window, L = s->o.max_seq_len;
    s->slots = pp_calloc(s->alloc, w, sizeof *s->slots);
    s->free_slots = pp_alloc(s->alloc, w, sizeof *s->free_slots);
    s->open = pp_alloc(s->alloc, w, sizeof *s->open);
    s->out_tokens = pp_alloc(s->alloc, L, sizeof *s->out_tokens);
    s->out_cu = pp_alloc(s->alloc, L + 1, sizeof *s->out_cu);
    s->out_ids = pp_alloc(s->alloc, L, sizeof *s->out_ids);
    s->out_mask = pp_alloc(s->alloc, L, 1);
    s->out_starts = pp_alloc(s->alloc, L, sizeof *s->out_starts);
    if (!s->slots || !s->free_slots || !s->open || !s->out_tokens ||
        !s->out_cu || !s->out_ids || !s->out_mask || !s->out_starts) {
        prepack_stream_free(s);
        return pp_out_of_memory(diag);
    }
    for (size_t i = 0; i < w; i++) /* slot 0 taken first */
        s->free_slots[i] = w - 1 - i;
    s->nfree = w;
    *out = s;
    return PREPACK_OK;
}

void prepack_stream_free(prepack_stream *s)
{
    if (!s)
        return;
    const prepack_allocator *a = s->alloc;
    for (size_t i = 0; i < s->nheap; i++)
        pp_stream_item_free(a, &s->heap[i]);
    for (size_t i = 0; s->slots && i < s->o.window; i++)
        pp_stream_row_free(a, &s->slots[i]);
    for (size_t i = 0; i < s->nready; i++)
        pp_stream_row_free(a, &s->ready[(s->ready_head + i) % s->ready_cap]);
    pp_free(a, s->heap);
    pp_free(a, s->slots);
    pp_free(a, s->free_slots);
    pp_free(a, s->open);
    pp_free(a, s->ready);
    pp_free(a, s->out_tokens);
    pp_free(a, s->out_cu);
    pp_free(a, s->out_ids);
    pp_free(a, s->out_mask);
    pp_free(a, s->out_starts);
    prepack_allocator copy = s->alloc_copy;
    pp_free(a ? &copy : NULL, s);
}

/* Places every buffered item, longest first (ties: first to arrive). */
static int place_buffer(prepack_stream *s)
{
    while (s->nheap > 0) {
        item top = heap_pop(s);
        if (place(s, &top) != PREPACK_OK) {
            pp_stream_item_free(s->alloc, &top);
            return PREPACK_ENOMEM;
        }
    }
    return PREPACK_OK;
}

/* An item through the lookahead: placed at once without one; else it
 * waits, and once K wait they are all placed, longest first: decreasing
 * order within each K, as offline FFD and BFD place everything. (Placing
 * only the longest each time one more arrived kept the short items
 * waiting while the rows they would fill closed: 1.13x FFD's rows on
 * SQuAD at a window of 256 and K 10,000, where this gives 1.0001x at K
 * 100; docs/STREAM.md.) Takes the item: on a failure (out of memory)
 * what could not be stored is freed. */
static int enqueue(prepack_stream *s, item *it)
{
    s->st.items++;
    s->st.tokens += it->len;
    if (s->o.lookahead == 0) {
        int rc = place(s, it);
        if (rc != PREPACK_OK)
            pp_stream_item_free(s->alloc, it);
        return rc;
    }
    if (heap_push(s, it) != PREPACK_OK) {
        pp_stream_item_free(s->alloc, it);
        return PREPACK_ENOMEM;
    }
    return s->nheap < s->o.lookahead ? PREPACK_OK : place_buffer(s);
}

/* Item [off, off + len) of a sequence, its data copied. */
static int make_item(prepack_stream *s, uint64_t id, const uint32_t *tokens,
                     const uint8_t *mask, uint32_t off, uint32_t len, item *it)
{
    memset(it, 0, sizeof *it);
    it->id = id;
    it->arrival = s->next_arrival++;
    it->off = off;
    it->len = len;
    if (tokens) {
        it->tokens = pp_alloc(s->alloc, len, sizeof *it->tokens);
        if (!it->tokens)
            return PREPACK_ENOMEM;
        memcpy(it->tokens, tokens + off, (size_t)len * sizeof *tokens);
    }
    if (mask) {
        it->mask = pp_alloc(s->alloc, len, 1);
        if (!it->mask) {
            pp_stream_item_free(s->alloc, it);
            return PREPACK_ENOMEM;
        }
        memcpy(it->mask, mask + off, len);
    }
    return PREPACK_OK;
}

/* A loss mask is 0 or 1 a token, as ingest's (a restore checks the same,
 * stream_check.c). Returns the first other byte's index, or n. */
static uint32_t first_bad_mask(const uint8_t *mask, uint32_t n)
{
    for (uint32_t i = 0; mask && i < n; i++)
        if (mask[i] > 1)
            return i;
    return n;
}

int prepack_stream_push(prepack_stream *s, uint64_t id, const uint32_t *tokens,
                        const uint8_t *loss_mask, uint32_t n,
                        prepack_diag *diag)
{
    if (!s)
        return pp_invalid_argument(diag);
    int with = tokens != NULL;
    if (n > 0 && s->has_tokens >= 0 && s->has_tokens != with)
        return pp_fail(diag, PREPACK_EINVAL, id,
                       "sequence %llu: a stream takes tokens with every "
                       "sequence or with none",
                       (unsigned long long)id);
    uint32_t bad = first_bad_mask(loss_mask, n);
    if (bad < n)
        return pp_fail(diag, PREPACK_EINVAL, id,
                       "sequence %llu: loss_mask[%u] is %u, not 0 or 1",
                       (unsigned long long)id, bad, (unsigned)loss_mask[bad]);
    if (n > 0)
        s->has_tokens = with;
    s->st.sequences++;
    uint32_t L = s->o.max_seq_len, len = n;
    if (n == 0 || (n > L && s->o.overlong == PREPACK_OVERLONG_DROP)) {
        s->st.dropped++;
        return PREPACK_OK;
    }
    if (n > L && s->o.overlong == PREPACK_OVERLONG_ERROR)
        return pp_fail(diag, PREPACK_EOVERLONG, id,
                       "sequence %llu has %u tokens, more than max_seq_len %u",
                       (unsigned long long)id, n, L);
    if (n > L && s->o.overlong == PREPACK_OVERLONG_TRUNCATE) {
        s->st.truncated_tokens += n - L;
        len = L;
    }
    uint32_t step = s->o.overlong == PREPACK_OVERLONG_SPLIT ? L : len;
    for (uint32_t off = 0; off < len; off += step) {
        item it;
        uint32_t k = len - off < step ? len - off : step;
        if (make_item(s, id, tokens, loss_mask, off, k, &it) != PREPACK_OK ||
            enqueue(s, &it) != PREPACK_OK)
            return pp_out_of_memory(diag); /* the stream is then unusable */
    }
    return PREPACK_OK;
}

int prepack_stream_flush(prepack_stream *s, prepack_diag *diag)
{
    if (!s)
        return pp_invalid_argument(diag);
    if (place_buffer(s) != PREPACK_OK)
        return pp_out_of_memory(diag);
    /* open rows close in the index's order: fullest first */
    while (s->nopen > 0) {
        size_t slot = s->open[0].slot;
        index_remove(s, 0);
        if (close_slot(s, slot) != PREPACK_OK)
            return pp_out_of_memory(diag);
    }
    return PREPACK_OK;
}

size_t prepack_stream_ready(const prepack_stream *s)
{
    return s ? s->nready : 0;
}

int prepack_stream_pop(prepack_stream *s, prepack_row *out)
{
    if (!s || !out || s->nready == 0)
        return 0;
    row r = s->ready[s->ready_head];
    s->ready_head = (s->ready_head + 1) % s->ready_cap;
    s->nready--;
    int32_t t = 0;
    int masked = 0;
    for (size_t j = 0; j < r.n; j++)
        masked |= r.items[j].mask != NULL;
    s->out_cu[0] = 0;
    for (size_t j = 0; j < r.n; j++) {
        const item *it = &r.items[j];
        if (it->tokens)
            memcpy(s->out_tokens + t, it->tokens,
                   (size_t)it->len * sizeof *it->tokens);
        if (masked && it->mask)
            memcpy(s->out_mask + t, it->mask, it->len);
        else if (masked)
            memset(s->out_mask + t, 1, it->len);
        s->out_ids[j] = it->id;
        s->out_starts[j] = it->off;
        t += (int32_t)it->len;
        s->out_cu[j + 1] = t;
    }
    int tokens = r.n > 0 && r.items[0].tokens != NULL;
    size_t k = r.n;
    pp_stream_row_free(s->alloc, &r);
    memset(out, 0, sizeof *out);
    out->num_tokens = (size_t)t;
    out->num_seqs = k;
    out->token_dtype = PREPACK_DTYPE_UINT32;
    out->input_ids = tokens ? s->out_tokens : NULL;
    out->cu_seqlens = s->out_cu;
    out->seq_ids = s->out_ids;
    out->loss_mask = masked ? s->out_mask : NULL;
    out->seq_starts =
        s->o.overlong == PREPACK_OVERLONG_SPLIT ? s->out_starts : NULL;
    return 1;
}

void prepack_stream_get_stats(const prepack_stream *s,
                              prepack_stream_stats *out)
{
    if (!s || !out)
        return;
    *out = s->st;
    out->open_rows = s->nopen;
    out->buffered = s->nheap;
}
