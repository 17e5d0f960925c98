/* Fuzz target: the stream packer and its saved state. The first 4 bytes
 * choose the options (L 4..67, window 1..16, lookahead 0..15, the
 * overlong policy and max_seqs_per_row 0..4); each following byte pair
 * pushes a sequence of that many tokens (the second byte: bit 0 pops the
 * ready rows, bit 1 gives it a loss mask). Two commands work on the
 * state:
 *
 *   FF FF lo hi     save, flip a bit of byte (lo | hi << 8) (FFFF: none),
 *                   restore; with hi's top bit set the XXH64 is fixed up
 *                   after the flip, as a crafted state's would be
 *   FF FE lo hi v   save, set byte (lo | hi << 8) to v, fix up the XXH64,
 *                   restore
 *
 * Whatever the input, a restore either fails cleanly or gives a stream
 * whose rows keep the invariants (at most L tokens and max_seqs_per_row
 * sequences, masks 0/1, chunks where SPLIT starts them), whose own state
 * restores again, and which goes on packing; a stream saved and restored
 * untouched saves the same bytes again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_row(const prepack_row *row, const prepack_stream_options *o)
{
    uint32_t L = o->max_seq_len;
    if (row->num_tokens > L || row->num_seqs == 0 || row->cu_seqlens[0] != 0)
        abort();
    if (o->max_seqs_per_row && row->num_seqs > o->max_seqs_per_row)
        abort();
    if ((row->seq_starts != NULL) != (o->overlong == PREPACK_OVERLONG_SPLIT))
        abort();
    for (size_t j = 0; j < row->num_seqs; j++) {
        if (row->cu_seqlens[j + 1] <= row->cu_seqlens[j])
            abort();
        if (row->seq_starts && row->seq_starts[j] % L != 0)
            abort();
    }
    if ((size_t)row->cu_seqlens[row->num_seqs] != row->num_tokens)
        abort();
    for (size_t t = 0; row->loss_mask && t < row->num_tokens; t++)
        if (row->loss_mask[t] > 1)
            abort();
}

static void check_rows(prepack_stream *s, const prepack_stream_options *o)
{
    prepack_row row;
    while (prepack_stream_pop(s, &row))
        check_row(&row, o);
    prepack_stream_stats st;
    prepack_stream_get_stats(s, &st);
    if (st.open_rows > o->window ||
        (st.buffered && st.buffered >= o->lookahead))
        abort();
}

/* A state edit: byte `at` flipped (bit at % 8) or set to `value`
 * (set != 0), and the XXH64 recomputed when `fix`. at < 0: none. */
typedef struct edit {
    long at;
    int set, fix;
    unsigned char value;
} edit;

static void apply(unsigned char *a, size_t n, const edit *e)
{
    if (e->at < 0 || n < 8)
        return;
    size_t at = (size_t)e->at % n;
    if (e->set)
        a[at] = e->value;
    else
        a[at] ^= (unsigned char)(1u << (e->at % 8));
    if (!e->fix)
        return;
    XXH64_hash_t h = XXH64(a, n - 8, 0);
    for (int i = 0; i < 8; i++)
        a[n - 8 + (size_t)i] = (unsigned char)(h >> (8 * i));
}

static unsigned char *save(const prepack_stream *s, size_t *n)
{
    if (prepack_stream_save(s, NULL, 0, n, NULL) != PREPACK_OK)
        abort();
    unsigned char *a = malloc(*n);
    if (!a || prepack_stream_save(s, a, *n, n, NULL) != PREPACK_OK)
        abort();
    return a;
}

/* Saves s and restores the bytes as they are (must give the same bytes)
 * or edited (must fail cleanly, or give a stream that saves and restores
 * again). Returns the stream to go on with. */
static prepack_stream *round_trip(prepack_stream *s,
                                  const prepack_stream_options *o,
                                  const edit *e, int *crafted)
{
    size_t n = 0, again = 0;
    unsigned char *a = save(s, &n);
    apply(a, n, e);
    prepack_stream *t = NULL;
    int rc = prepack_stream_restore(&t, a, n, o, NULL);
    if (rc != PREPACK_OK) {
        if (e->at < 0 || t)
            abort(); /* an untouched state must restore */
        free(a);
        return s;
    }
    unsigned char *b = save(t, &again);
    if (e->at < 0 && (again != n || memcmp(a, b, n) != 0))
        abort();
    prepack_stream *u = NULL; /* what a restore accepts is a state */
    if (prepack_stream_restore(&u, b, again, o, NULL) != PREPACK_OK)
        abort();
    prepack_stream_free(u);
    free(a);
    free(b);
    prepack_stream_free(s);
    *crafted |= e->at >= 0;
    return t;
}

/* A command at data[i] (FF FF or FF FE): its edit; *used its bytes. */
static edit command(const uint8_t *data, size_t size, size_t i, size_t *used)
{
    edit e = {-1, 0, 0, 0};
    int set = data[i + 1] == 0xFE;
    *used = set ? 5 : 4;
    if (i + *used > size)
        return e;
    unsigned lo = data[i + 2], hi = data[i + 3];
    if (!set && lo == 0xFF && hi == 0xFF)
        return e;
    e.at = (long)(lo | (hi & 0x7F) << 8);
    e.set = set;
    e.fix = set || (hi & 0x80);
    e.value = set ? data[i + 4] : 0;
    return e;
}

static prepack_stream_options options(const uint8_t *data)
{
    prepack_stream_options o = {
        .max_seq_len = 4u + data[0] % 64,
        .window = 1u + data[1] % 16,
        .lookahead = data[2] % 16u,
        .overlong = (prepack_overlong)(1 + data[3] % 3),
        .max_seqs_per_row = (uint32_t)(data[3] >> 2) % 5u,
    };
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    prepack_stream_options o = options(data);
    prepack_stream *s = NULL;
    if (prepack_stream_create(&s, &o, NULL) != PREPACK_OK)
        return 0;
    uint32_t tokens[256];
    uint8_t mask[256];
    for (uint32_t i = 0; i < 256; i++) {
        tokens[i] = i * 7;
        mask[i] = (uint8_t)(i % 3 != 0);
    }
    uint64_t id = 0;
    int crafted = 0; /* an edited state was accepted: it may be lengths-only */
    for (size_t i = 4; i + 1 < size;) {
        if (data[i] == 0xFF && (data[i + 1] == 0xFF || data[i + 1] == 0xFE)) {
            size_t used = 0;
            edit e = command(data, size, i, &used);
            s = round_trip(s, &o, &e, &crafted);
            i += used;
            continue;
        }
        uint32_t n = data[i] % 200u;
        const uint8_t *m = data[i + 1] & 2 ? mask : NULL;
        int rc = prepack_stream_push(s, id++, tokens, m, n, NULL);
        if (rc != PREPACK_OK && !(crafted && rc == PREPACK_EINVAL))
            abort(); /* no policy here refuses a length under 256 */
        if (data[i + 1] & 1)
            check_rows(s, &o);
        i += 2;
    }
    edit none = {-1, 0, 0, 0};
    s = round_trip(s, &o, &none, &crafted);
    if (prepack_stream_flush(s, NULL) != PREPACK_OK)
        abort();
    check_rows(s, &o);
    prepack_stream_free(s);
    return 0;
}
