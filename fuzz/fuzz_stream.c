/* Fuzz target: the stream packer and its saved state. The first 4 bytes
 * choose the options (L 4..67, window 1..16, lookahead 0..15, the
 * overlong policy); each following byte pair pushes a sequence of that
 * many tokens (0xFF 0xFF: save the state, flip the byte the next pair
 * names, and restore it). Whatever the input, a restore either fails
 * cleanly or gives a stream whose rows keep the invariants, and a stream
 * saved and restored untouched saves the same bytes again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rows(prepack_stream *s, uint32_t L)
{
    prepack_row row;
    while (prepack_stream_pop(s, &row)) {
        if (row.num_tokens > L || row.num_seqs == 0 || row.cu_seqlens[0] != 0)
            abort();
        for (size_t j = 0; j < row.num_seqs; j++)
            if (row.cu_seqlens[j + 1] <= row.cu_seqlens[j])
                abort();
        if ((size_t)row.cu_seqlens[row.num_seqs] != row.num_tokens)
            abort();
    }
}

/* Saves s; restores the bytes as they are (must give the same bytes) or
 * with byte `flip` changed (must fail cleanly or keep the invariants).
 * Returns the stream to go on with. */
static prepack_stream *round_trip(prepack_stream *s,
                                  const prepack_stream_options *o, long flip)
{
    size_t n = 0, again = 0;
    if (prepack_stream_save(s, NULL, 0, &n, NULL) != PREPACK_OK)
        abort();
    unsigned char *a = malloc(n), *b = malloc(n);
    if (!a || !b || prepack_stream_save(s, a, n, &n, NULL) != PREPACK_OK)
        abort();
    if (flip >= 0)
        a[(size_t)flip % n] ^= (unsigned char)(1u << (flip % 8));
    prepack_stream *t = NULL;
    int rc = prepack_stream_restore(&t, a, n, o, NULL);
    if (rc != PREPACK_OK) {
        if (flip < 0 || t)
            abort(); /* an untouched state must restore */
        free(a);
        free(b);
        return s;
    }
    if (flip < 0 && (prepack_stream_save(t, b, n, &again, NULL) != PREPACK_OK ||
                     again != n || memcmp(a, b, n) != 0))
        abort();
    free(a);
    free(b);
    prepack_stream_free(s);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    prepack_stream_options o = {.max_seq_len = 4u + data[0] % 64,
                                .window = 1u + data[1] % 16,
                                .lookahead = data[2] % 16u,
                                .overlong = (prepack_overlong)(1 + data[3] % 3)};
    prepack_stream *s = NULL;
    if (prepack_stream_create(&s, &o, NULL) != PREPACK_OK)
        return 0;
    uint32_t tokens[256];
    for (uint32_t i = 0; i < 256; i++)
        tokens[i] = i * 7;
    uint64_t id = 0;
    for (size_t i = 4; i + 1 < size; i += 2) {
        if (data[i] == 0xFF && data[i + 1] == 0xFF) {
            long flip = i + 3 < size ? (long)(data[i + 2] | data[i + 3] << 8)
                                     : -1;
            s = round_trip(s, &o, flip == 0xFFFF ? -1 : flip);
            i += 2;
            continue;
        }
        uint32_t n = data[i] % 200u;
        if (prepack_stream_push(s, id++, tokens, NULL, n, NULL) != PREPACK_OK)
            abort(); /* no policy here refuses a length under 256 */
        if (data[i + 1] & 1)
            check_rows(s, o.max_seq_len);
    }
    s = round_trip(s, &o, -1);
    if (prepack_stream_flush(s, NULL) != PREPACK_OK)
        abort();
    check_rows(s, o.max_seq_len);
    prepack_stream_free(s);
    return 0;
}
