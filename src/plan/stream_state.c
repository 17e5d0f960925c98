/* A stream packer's state as bytes, and back (docs/STREAM.md):
 *
 *   "PPSTRM" 0 1, the options (u32 L, window, lookahead, overlong,
 *   max_seqs_per_row), i32 has_tokens, u64 next row and arrival numbers,
 *   six u64 counters; u64 n + the lookahead's items; u64 n + the open rows
 *   (u64 number, u32 room, u64 items, the items); u64 n + the closed rows
 *   not yet popped; u64 XXH64 of everything before.
 *   An item: u64 id, u64 arrival, u32 offset, u32 length, u8 flags (1:
 *   tokens follow, 2: a mask follows), the u32 tokens, the mask bytes.
 *
 * All little-endian. Behaviour depends on the items' (length, arrival)
 * and the rows' (room, number), never on where they sit in memory, so a
 * restored stream continues exactly as the saved one would. */
#include <string.h>

#include <xxhash.h>

#include "common/alloc.h"
#include "common/bytes.h"
#include "common/error.h"
#include "plan/stream.h"

static const unsigned char MAGIC[8] = {'P', 'P', 'S', 'T', 'R', 'M', 0, 1};

/* ---- writing ------------------------------------------------------------ */

typedef struct out_buf {
    unsigned char *p;
    size_t cap, n; /* n counts every byte, written or not */
} out_buf;

static void put(out_buf *b, const void *data, size_t n)
{
    if (b->p && b->n + n <= b->cap)
        memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_le(out_buf *b, uint64_t v, unsigned width)
{
    unsigned char t[8];
    for (unsigned i = 0; i < width; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    put(b, t, width);
}

static void put_item(out_buf *b, const item *it)
{
    put_le(b, it->id, 8);
    put_le(b, it->arrival, 8);
    put_le(b, it->off, 4);
    put_le(b, it->len, 4);
    put_le(b, (it->tokens ? 1u : 0u) | (it->mask ? 2u : 0u), 1);
    for (uint32_t i = 0; it->tokens && i < it->len; i++)
        put_le(b, it->tokens[i], 4);
    if (it->mask)
        put(b, it->mask, it->len);
}

static void put_row(out_buf *b, const row *r)
{
    put_le(b, r->number, 8);
    put_le(b, r->room, 4);
    put_le(b, r->n, 8);
    for (size_t i = 0; i < r->n; i++)
        put_item(b, &r->items[i]);
}

int prepack_stream_save(const prepack_stream *s, void *buf, size_t cap,
                        size_t *size, prepack_diag *diag)
{
    if (!s || !size || (!buf && cap))
        return pp_invalid_argument(diag);
    out_buf b = {buf, cap, 0};
    const prepack_stream_options *o = &s->o;
    put(&b, MAGIC, sizeof MAGIC);
    put_le(&b, o->max_seq_len, 4);
    put_le(&b, o->window, 4);
    put_le(&b, o->lookahead, 4);
    put_le(&b, (uint32_t)o->overlong, 4);
    put_le(&b, o->max_seqs_per_row, 4);
    put_le(&b, (uint32_t)s->has_tokens, 4);
    put_le(&b, s->next_row, 8);
    put_le(&b, s->next_arrival, 8);
    const prepack_stream_stats *st = &s->st;
    const uint64_t counters[6] = {st->sequences, st->items, st->tokens,
                                  st->rows, st->dropped, st->truncated_tokens};
    for (int i = 0; i < 6; i++)
        put_le(&b, counters[i], 8);
    put_le(&b, s->nheap, 8);
    for (size_t i = 0; i < s->nheap; i++)
        put_item(&b, &s->heap[i]);
    put_le(&b, s->nopen, 8);
    for (size_t i = 0; i < s->nopen; i++)
        put_row(&b, &s->slots[s->open[i].slot]);
    put_le(&b, s->nready, 8);
    for (size_t i = 0; i < s->nready; i++)
        put_row(&b, &s->ready[(s->ready_head + i) % s->ready_cap]);
    *size = b.n + 8;
    if (!buf || *size > cap)
        return buf ? pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                             "the state needs %zu bytes, the buffer holds %zu",
                             *size, cap)
                   : PREPACK_OK;
    put_le(&b, XXH64(buf, b.n, 0), 8);
    return PREPACK_OK;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct in_buf {
    const unsigned char *p;
    size_t n, at;
    int bad;
} in_buf;

static uint64_t get_le(in_buf *b, unsigned width)
{
    if (b->bad || b->n - b->at < width) {
        b->bad = 1;
        return 0;
    }
    uint64_t v = pp_load_le(b->p + b->at, width);
    b->at += width;
    return v;
}

static int corrupt(prepack_diag *diag, const char *what)
{
    return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                   "stream state: %s", what);
}

/* One item, its data copied; *why says what is wrong. */
static int get_item(in_buf *b, prepack_stream *s, item *it, const char **why)
{
    memset(it, 0, sizeof *it);
    it->id = get_le(b, 8);
    it->arrival = get_le(b, 8);
    it->off = (uint32_t)get_le(b, 4);
    it->len = (uint32_t)get_le(b, 4);
    unsigned flags = (unsigned)get_le(b, 1);
    int tokens = flags & 1, mask = (flags & 2) != 0;
    if (b->bad || it->len == 0 || it->len > s->o.max_seq_len || flags > 3 ||
        it->arrival >= s->next_arrival || tokens != (s->has_tokens == 1)) {
        *why = "an item is not one this stream could hold";
        return PREPACK_ECORRUPT;
    }
    size_t need = (size_t)it->len * (tokens ? 4 : 0) + (mask ? it->len : 0);
    if (b->n - b->at < need) {
        *why = "cut short";
        return PREPACK_ECORRUPT;
    }
    if (tokens) {
        it->tokens = pp_alloc(s->alloc, it->len, sizeof *it->tokens);
        if (!it->tokens)
            return PREPACK_ENOMEM;
        for (uint32_t i = 0; i < it->len; i++)
            it->tokens[i] = (uint32_t)get_le(b, 4);
    }
    if (mask) {
        it->mask = pp_alloc(s->alloc, it->len, 1);
        if (!it->mask) {
            pp_stream_item_free(s->alloc, it);
            return PREPACK_ENOMEM;
        }
        memcpy(it->mask, b->p + b->at, it->len);
        b->at += it->len;
    }
    return PREPACK_OK;
}

/* A row: its items sum to L - room. open: it must still take more. */
static int get_row(in_buf *b, prepack_stream *s, row *r, int open,
                   const char **why)
{
    memset(r, 0, sizeof *r);
    r->number = get_le(b, 8);
    uint64_t room = get_le(b, 4), n = get_le(b, 8);
    uint64_t L = s->o.max_seq_len;
    if (b->bad || room > L || n == 0 || n > L || r->number >= s->next_row) {
        *why = "a row is not one this stream could hold";
        return PREPACK_ECORRUPT;
    }
    r->items = pp_calloc(s->alloc, (size_t)n, sizeof *r->items);
    if (!r->items)
        return PREPACK_ENOMEM;
    r->cap = (size_t)n;
    uint64_t used = 0;
    for (uint64_t i = 0; i < n; i++) {
        int rc = get_item(b, s, &r->items[i], why);
        if (rc != PREPACK_OK)
            return rc;
        r->n++;
        used += r->items[i].len;
    }
    r->room = (uint32_t)room;
    int done = room == 0 ||
               (s->o.max_seqs_per_row && n >= s->o.max_seqs_per_row);
    if (used + room != L || (open && done)) {
        *why = "a row's room does not match its items";
        return PREPACK_ECORRUPT;
    }
    return PREPACK_OK;
}

static int get_header(in_buf *b, prepack_stream *s, prepack_diag *diag)
{
    if (b->n < sizeof MAGIC + 8 || memcmp(b->p, MAGIC, sizeof MAGIC) != 0)
        return corrupt(diag, "not a prepack stream state (or another version)");
    if (XXH64(b->p, b->n - 8, 0) != pp_load_le(b->p + b->n - 8, 8))
        return corrupt(diag, "checksum mismatch (damaged or cut short)");
    b->n -= 8;
    b->at = sizeof MAGIC;
    const prepack_stream_options *o = &s->o;
    uint64_t want[5] = {o->max_seq_len, o->window, o->lookahead,
                        (uint64_t)o->overlong, o->max_seqs_per_row};
    for (int i = 0; i < 5; i++)
        if (get_le(b, 4) != want[i])
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "stream state: saved with other options (max_seq_"
                           "len, window, lookahead, overlong, "
                           "max_seqs_per_row must be the same)");
    uint32_t has = (uint32_t)get_le(b, 4);
    s->has_tokens = has == UINT32_MAX ? -1 : (int)has;
    s->next_row = get_le(b, 8);
    s->next_arrival = get_le(b, 8);
    uint64_t *counters[6] = {&s->st.sequences, &s->st.items,
                             &s->st.tokens, &s->st.rows,
                             &s->st.dropped, &s->st.truncated_tokens};
    for (int i = 0; i < 6; i++)
        *counters[i] = get_le(b, 8);
    if (b->bad || (s->has_tokens != -1 && s->has_tokens != 0 &&
                   s->has_tokens != 1))
        return corrupt(diag, "a bad header");
    return PREPACK_OK;
}

static int fail_with(int rc, const char *why, prepack_diag *diag)
{
    return rc == PREPACK_ENOMEM ? pp_out_of_memory(diag) : corrupt(diag, why);
}

static int get_body(in_buf *b, prepack_stream *s, prepack_diag *diag)
{
    const char *why = "cut short";
    uint64_t n = get_le(b, 8);
    if (b->bad || (n && n >= s->o.lookahead))
        return corrupt(diag, "as many buffered items as the lookahead");
    for (uint64_t i = 0; i < n; i++) {
        item it;
        int rc = get_item(b, s, &it, &why);
        if (rc == PREPACK_OK && pp_grow(s->alloc, (void **)&s->heap,
                                        &s->heap_cap, s->nheap + 1,
                                        sizeof *s->heap) != PREPACK_OK) {
            pp_stream_item_free(s->alloc, &it);
            rc = PREPACK_ENOMEM;
        }
        if (rc != PREPACK_OK)
            return fail_with(rc, why, diag);
        s->heap[s->nheap++] = it; /* a heap below */
    }
    n = get_le(b, 8);
    if (b->bad || n > s->o.window)
        return corrupt(diag, "more open rows than the window");
    for (uint64_t i = 0; i < n; i++) {
        size_t slot = s->free_slots[--s->nfree];
        int rc = get_row(b, s, &s->slots[slot], 1, &why);
        if (rc != PREPACK_OK)
            return fail_with(rc, why, diag);
        pp_stream_index_insert(s, slot);
    }
    n = get_le(b, 8);
    if (b->bad || n > (b->n - b->at) / 21)
        return corrupt(diag, "cut short");
    for (uint64_t i = 0; i < n; i++) {
        row r;
        int rc = get_row(b, s, &r, 0, &why);
        if (rc == PREPACK_OK && pp_stream_ready_push(s, &r) != PREPACK_OK)
            rc = PREPACK_ENOMEM;
        if (rc != PREPACK_OK) {
            pp_stream_row_free(s->alloc, &r);
            return fail_with(rc, why, diag);
        }
    }
    if (b->at != b->n)
        return corrupt(diag, "bytes after the last row");
    return PREPACK_OK;
}

int prepack_stream_restore(prepack_stream **out, const void *buf, size_t n,
                           const prepack_stream_options *o, prepack_diag *diag)
{
    if (!out || (!buf && n))
        return pp_invalid_argument(diag);
    prepack_stream *s = NULL;
    int rc = prepack_stream_create(&s, o, diag);
    if (rc != PREPACK_OK)
        return rc;
    in_buf b = {buf, n, 0, 0};
    rc = get_header(&b, s, diag);
    if (rc == PREPACK_OK)
        rc = get_body(&b, s, diag);
    if (rc == PREPACK_OK)
        pp_stream_heapify(s);
    if (rc != PREPACK_OK) {
        prepack_stream_free(s);
        return rc;
    }
    *out = s;
    return PREPACK_OK;
}
