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
 * restored stream continues exactly as the saved one would.
 *
 * The bytes are untrusted and their XXH64 is no key: reading bounds each
 * count by the bytes left before it sizes anything, then the decoded
 * state is held to the live packer's invariants (stream_check.c). */
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

/* ---- reading: the bytes into a stream, bounded by the bytes ------------- */

/* The fewest bytes an item and a row take: a count read from the state
 * is bounded by the bytes left to hold it before it sizes anything. */
enum { ITEM_MIN = 8 + 8 + 4 + 4 + 1, ROW_MIN = 8 + 4 + 8 };

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

/* Whether n records of at least `least` bytes each can follow. */
static int fits(const in_buf *b, uint64_t n, size_t least)
{
    return !b->bad && n <= (b->n - b->at) / least;
}

static int corrupt(prepack_diag *diag, const char *what)
{
    return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                   "stream state: %s", what);
}

/* One item, its data copied; what it means is checked later
 * (pp_stream_check). *why says what is wrong. */
static int get_item(in_buf *b, prepack_stream *s, item *it, const char **why)
{
    memset(it, 0, sizeof *it);
    it->id = get_le(b, 8);
    it->arrival = get_le(b, 8);
    it->off = (uint32_t)get_le(b, 4);
    it->len = (uint32_t)get_le(b, 4);
    unsigned flags = (unsigned)get_le(b, 1);
    int tokens = flags & 1, mask = (flags & 2) != 0;
    size_t need = (size_t)it->len * (tokens ? 4 : 0) + (mask ? it->len : 0);
    if (b->bad || flags > 3 || b->n - b->at < need) {
        *why = b->bad || flags <= 3 ? "cut short" : "an item's unknown flags";
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

/* A row and its items (r->n counts those read, for freeing). */
static int get_row(in_buf *b, prepack_stream *s, row *r, const char **why)
{
    memset(r, 0, sizeof *r);
    r->number = get_le(b, 8);
    r->room = (uint32_t)get_le(b, 4);
    uint64_t n = get_le(b, 8);
    if (!fits(b, n, ITEM_MIN)) {
        *why = "a row holds more items than the bytes left";
        return PREPACK_ECORRUPT;
    }
    r->items = pp_calloc(s->alloc, (size_t)n, sizeof *r->items);
    if (!r->items)
        return PREPACK_ENOMEM;
    r->cap = (size_t)n;
    for (uint64_t i = 0; i < n; i++) {
        int rc = get_item(b, s, &r->items[i], why);
        if (rc != PREPACK_OK)
            return rc;
        r->n++;
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

static int get_lookahead(in_buf *b, prepack_stream *s, prepack_diag *diag)
{
    const char *why = "cut short";
    uint64_t n = get_le(b, 8);
    if (!fits(b, n, ITEM_MIN))
        return corrupt(diag, "more buffered items than the bytes left");
    for (uint64_t i = 0; i < n; i++) {
        item it;
        int rc = get_item(b, s, &it, &why);
        if (rc == PREPACK_OK && pp_grow(s->alloc, (void **)&s->heap,
                                        &s->heap_cap, s->nheap + 1,
                                        sizeof *s->heap) != PREPACK_OK)
            rc = PREPACK_ENOMEM;
        if (rc != PREPACK_OK) {
            pp_stream_item_free(s->alloc, &it); /* NULLs when get_item failed */
            return fail_with(rc, why, diag);
        }
        s->heap[s->nheap++] = it; /* a heap once checked */
    }
    return PREPACK_OK;
}

static int get_rows(in_buf *b, prepack_stream *s, prepack_diag *diag)
{
    const char *why = "cut short";
    uint64_t n = get_le(b, 8);
    if (!fits(b, n, ROW_MIN) || n > s->o.window) /* the slots hold window */
        return corrupt(diag, "more open rows than the window");
    for (uint64_t i = 0; i < n; i++) {
        size_t slot = s->free_slots[--s->nfree];
        int rc = get_row(b, s, &s->slots[slot], &why);
        if (rc != PREPACK_OK)
            return fail_with(rc, why, diag);
        pp_stream_index_insert(s, slot);
    }
    n = get_le(b, 8);
    if (!fits(b, n, ROW_MIN))
        return corrupt(diag, "more ready rows than the bytes left");
    for (uint64_t i = 0; i < n; i++) {
        row r;
        int rc = get_row(b, s, &r, &why);
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
    *out = NULL;
    prepack_stream *s = NULL;
    int rc = prepack_stream_create(&s, o, diag);
    if (rc != PREPACK_OK)
        return rc;
    in_buf b = {buf, n, 0, 0};
    rc = get_header(&b, s, diag);
    if (rc == PREPACK_OK)
        rc = get_lookahead(&b, s, diag);
    if (rc == PREPACK_OK)
        rc = get_rows(&b, s, diag);
    if (rc == PREPACK_OK)
        rc = pp_stream_check(s, diag);
    if (rc != PREPACK_OK) {
        prepack_stream_free(s);
        return rc;
    }
    pp_stream_heapify(s);
    *out = s;
    return PREPACK_OK;
}
