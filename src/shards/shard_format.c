/* Shard set file names and the encoding of token ids in rows
 * (shard_format.h). */
#include <stdio.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
/* x86-64 compilers that take a function's target: the SSSE3 decoder,
 * chosen at run time (the library is built for plain x86-64) */
#if defined(__x86_64__) && defined(__GNUC__)
#define PP_SSSE3_DECODER 1
#include <tmmintrin.h>
#else
#define PP_SSSE3_DECODER 0
#endif

#include "common/bytes.h"
#include "shards/shard_format.h"

void pp_shard_name(char out[PP_SHARD_NAME_MAX], size_t i)
{
    snprintf(out, PP_SHARD_NAME_MAX, "shard-%05zu.zst", i);
}

int pp_is_shard_name(const char *s, size_t n)
{
    static const char prefix[] = "shard-", suffix[] = ".zst";
    size_t p = sizeof prefix - 1, q = sizeof suffix - 1;
    if (n < p + 1 + q || n >= PP_SHARD_NAME_MAX || memcmp(s, prefix, p) != 0 ||
        memcmp(s + n - q, suffix, q) != 0)
        return 0;
    for (size_t i = p; i < n - q; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int pp_is_set_file(const char *name)
{
    size_t n = strlen(name), t = sizeof PP_TMP_SUFFIX - 1;
    if (n > t && strcmp(name + n - t, PP_TMP_SUFFIX) == 0)
        n -= t; /* a temporary name is its final name's */
    return (n == sizeof PP_MANIFEST_NAME - 1 &&
            memcmp(name, PP_MANIFEST_NAME, n) == 0) ||
           pp_is_shard_name(name, n);
}

/* ---- token ids in rows --------------------------------------------------- */

_Static_assert(PP_ID_TABLE_MAX ==
                   PP_ID_ONE_BYTE + (PP_ID_ESCAPE - PP_ID_ONE_BYTE) * 256,
               "two-byte codes: 63 lead bytes of 256 ranks each");

/* One id's code at p: its rank + 1 r from the table (0: none). */
static inline unsigned char *put_code(unsigned char *p, uint32_t id,
                                      uint32_t r, unsigned width)
{
    if (r - 1 < PP_ID_ONE_BYTE) { /* r = 0 wraps past it */
        *p++ = (unsigned char)(r - 1);
    } else if (r) {
        uint32_t v = r - 1 - PP_ID_ONE_BYTE;
        p[0] = (unsigned char)(PP_ID_ONE_BYTE + (v >> 8));
        p[1] = (unsigned char)v;
        p += 2;
    } else {
        *p++ = PP_ID_ESCAPE;
        for (unsigned b = 0; b < width; b++)
            *p++ = (unsigned char)(id >> (8 * b));
    }
    return p;
}

size_t pp_encode_id_codes(unsigned char *out, const void *ids, size_t n,
                          unsigned width, const uint16_t *rank,
                          uint32_t ranked)
{
    unsigned char *p = out;
    if (width == 2 && ranked >= 1u << 16) { /* every uint16 id has a slot */
        const uint16_t *in = ids;
        for (size_t i = 0; i < n; i++)
            p = put_code(p, in[i], rank[in[i]], 2);
        return (size_t)(p - out);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t id = width == 2 ? ((const uint16_t *)ids)[i]
                                 : ((const uint32_t *)ids)[i];
        p = put_code(p, id, id < ranked ? rank[id] : 0, width);
    }
    return (size_t)(p - out);
}

/* The 64 bytes at p as two masks, bit k for byte k: *leads where it has
 * its top two bits set (>= 192: the lead of a longer code), *escapes
 * where it is PP_ID_ESCAPE. */
static inline void lead_and_escape_bytes_of_64(const unsigned char *p,
                                               uint64_t *leads,
                                               uint64_t *escapes)
{
    uint64_t lead = 0, esc = 0;
#if defined(__SSE2__)
    const __m128i top = _mm_set1_epi8((char)0xC0);
    const __m128i all = _mm_set1_epi8((char)0xFF);
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k));
        uint32_t l = (uint32_t)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_and_si128(v, top), top));
        uint32_t e = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, all));
        lead |= (uint64_t)l << (16 * k);
        esc |= (uint64_t)e << (16 * k);
    }
#else
    for (int k = 0; k < 64; k++) {
        lead |= (uint64_t)(p[k] >= PP_ID_ONE_BYTE) << k;
        esc |= (uint64_t)(p[k] == PP_ID_ESCAPE) << k;
    }
#endif
    *leads = lead;
    *escapes = esc;
}

/* Of 64 bytes whose lead bits are `leads`, the first beginning a code
 * and every lead taken for a two-byte code's: the bytes that begin a
 * code, and in *carry whether the last code runs on into the next byte.
 * A byte is a code's second when the byte before it is a lead that begins
 * a code. A run of leads begins with a code, so from the run's first
 * every other byte does, and the seconds are the bytes after the run's
 * first, third, ...: the odd bits of the run and the one past it when it
 * starts on an even bit, the even ones when on an odd bit. Adding the
 * start bit of each run that starts on an odd bit to the leads carries
 * through that run (as simdjson finds the characters escaped by runs of
 * backslashes), which tells the two kinds apart without a loop. */
static inline uint64_t code_starts_of_64(uint64_t leads, int *carry)
{
    const uint64_t even = UINT64_C(0x5555555555555555);
    uint64_t odd_run_starts = leads & ~even & ~(leads << 1);
    uint64_t sum = odd_run_starts + leads;
    *carry = sum < leads; /* a run starting on an odd bit reaches bit 63 */
    uint64_t seconds = (even ^ (sum << 1)) & (leads << 1);
    return ~seconds;
}

/* The rank a code starting at each of the 64 bytes at p would have,
 * were it a one- or two-byte code (65 bytes read, p[0] to p[64]): one pass with
 * no branch that the compiler vectorizes, so a block's loop over its
 * codes does one lookup a code. Escapes and bytes that begin no code get
 * values never looked up; every value is below 2^15. */
static inline void ranks_of_64(const unsigned char *p, uint16_t ranks[64])
{
    for (int b = 0; b < 64; b++) {
        uint32_t pair = (uint32_t)p[b] << 8 | p[b + 1];
        ranks[b] = (uint16_t)(p[b] < PP_ID_ONE_BYTE
                                  ? p[b]
                                  : pair - ((PP_ID_ONE_BYTE << 8) -
                                            PP_ID_ONE_BYTE));
    }
}

/* After a block that an escape cut short before EARLY_ESCAPE codes, the
 * next CODES_AFTER_AN_EARLY_ESCAPE codes go one at a time: rows dense in
 * escapes (ids past the table) would otherwise scan 64 bytes for each
 * (18.4 ns a token at one escape a code, 3.8 with this; random codes
 * with 1-5% escapes the same or faster). */
enum { EARLY_ESCAPE = 8, CODES_AFTER_AN_EARLY_ESCAPE = 32 };

/* The codes of a block: out[k] = table[ranks[b]] for the k-th bit b set
 * in take, the largest rank in *top; the codes taken. One lookup a code,
 * a loop that waits on nothing but the next bit. */
#define TAKE_CODES_ONE_BY_ONE(T)                                             \
    static inline size_t take_codes_##T(T *out, const uint16_t ranks[64],     \
                                        uint64_t take, const T *table,       \
                                        uint32_t *top)                       \
    {                                                                        \
        size_t k = 0;                                                        \
        uint32_t most = 0;                                                   \
        for (; take; take &= take - 1) {                                     \
            uint32_t r = ranks[__builtin_ctzll(take)];                       \
            most = r > most ? r : most;                                      \
            out[k++] = table[r];                                             \
        }                                                                    \
        *top = most;                                                         \
        return k;                                                            \
    }
TAKE_CODES_ONE_BY_ONE(uint16_t)
TAKE_CODES_ONE_BY_ONE(uint32_t)

#if PP_SSSE3_DECODER
/* take_codes with SSSE3: the ranks of the bytes that begin a code moved
 * together four lanes at a time (pshufb through lanes_of_mask, a 4-bit
 * group of take), then looked up four at a time with no test a code. On
 * rows of Zipf-distributed ranks, 1.4x the loop above with no escapes,
 * 1.1-1.2x at 2% of codes escaped, the same at 10-30% (where blocks end
 * early at an escape). Writes out[0 .. the codes taken rounded up to 4):
 * DECODE_BLOCKS takes a block only while 64 slots of out remain. */
#define Z 0x80, 0x80 /* pshufb: a zero lane */
#define L(i) 2 * (i), 2 * (i) + 1
static const unsigned char lanes_of_mask[16][8] = {
    {Z, Z, Z, Z},          {L(0), Z, Z, Z},       {L(1), Z, Z, Z},
    {L(0), L(1), Z, Z},    {L(2), Z, Z, Z},       {L(0), L(2), Z, Z},
    {L(1), L(2), Z, Z},    {L(0), L(1), L(2), Z}, {L(3), Z, Z, Z},
    {L(0), L(3), Z, Z},    {L(1), L(3), Z, Z},    {L(0), L(1), L(3), Z},
    {L(2), L(3), Z, Z},    {L(0), L(2), L(3), Z}, {L(1), L(2), L(3), Z},
    {L(0), L(1), L(2), L(3)}};
#undef Z
#undef L
static const unsigned char codes_in_group[16] = {0, 1, 1, 2, 1, 2, 2, 3,
                                                 1, 2, 2, 3, 2, 3, 3, 4};

#define TAKE_CODES_FOUR_AT_A_TIME(T)                                         \
    __attribute__((target("ssse3"))) static inline size_t                    \
        take_codes_ssse3_##T(T *out, const uint16_t ranks[64], uint64_t take, \
                             const T *table, uint32_t *top)                  \
    {                                                                        \
        uint16_t picked[64 + 4];                                             \
        __m128i most = _mm_setzero_si128();                                  \
        size_t k = 0;                                                        \
        for (int g = 0; g < 16; g++, take >>= 4) {                           \
            unsigned m = (unsigned)take & 15;                                \
            __m128i v = _mm_loadl_epi64((const void *)(ranks + 4 * g));      \
            __m128i s = _mm_loadl_epi64((const void *)lanes_of_mask[m]);     \
            __m128i c = _mm_shuffle_epi8(v, s);                              \
            _mm_storel_epi64((void *)(picked + k), c);                       \
            most = _mm_max_epi16(most, c);                                   \
            k += codes_in_group[m];                                          \
        }                                                                    \
        _mm_storel_epi64((void *)(picked + k), _mm_setzero_si128());         \
        /* lanes 0-3 of `most` hold the ranks' largest (below 2^15, so the  \
         * signed max is right); lanes 4-7 copies of byte 0, never folded   \
         * in: the two shifts bring lanes 0-3 alone into lane 0 */          \
        most = _mm_max_epi16(most, _mm_srli_si128(most, 4));                 \
        most = _mm_max_epi16(most, _mm_srli_si128(most, 2));                 \
        *top = (uint32_t)_mm_extract_epi16(most, 0);                         \
        for (size_t j = 0; j < k; j += 4) {                                  \
            out[j] = table[picked[j]];                                       \
            out[j + 1] = table[picked[j + 1]];                               \
            out[j + 2] = table[picked[j + 2]];                               \
            out[j + 3] = table[picked[j + 3]];                               \
        }                                                                    \
        return k;                                                            \
    }
TAKE_CODES_FOUR_AT_A_TIME(uint16_t)
TAKE_CODES_FOUR_AT_A_TIME(uint32_t)
#endif

/* pp_decode_id_codes at one width (T: uint16_t or uint32_t), so the
 * loops hold no test of it: NAME_code takes the next code alone; NAME
 * takes 64 bytes at a time while 64 tokens and 64 + W bytes remain (so
 * TAKE may write any of the next 64 slots of out), then code by code.
 *
 * A block finds the bytes that begin a code from a mask
 * (code_starts_of_64) and every byte's rank were it to begin one
 * (ranks_of_64), then TAKE looks up the ranks of the bytes that do: a
 * code-by-code loop waits on each code's length before the next (4.7 ns
 * a token on real text against 2.9 for masks and a lookup table, before
 * ranks_of_64 and the SSSE3 take). An escape that begins a code ends its
 * block. A block reads up to byte 63 + W (an escape's id at its last
 * byte); its lookups stay within PP_ID_TABLE_MAX slots, which the table
 * has, and a rank past the table is refused by the block's largest.
 * NAME_code returns the codes it took (1), or -1 for bytes that are not
 * a code. */
#define DECODE_CODE(NAME, T, W)                                              \
    static inline int NAME##_code(T *out, const unsigned char **at,          \
                                  const unsigned char *end, const T *table,  \
                                  size_t ntable)                             \
    {                                                                        \
        const unsigned char *p = *at;                                        \
        if (p == end)                                                        \
            return -1;                                                       \
        uint32_t b = *p, r;                                                  \
        if (b == PP_ID_ESCAPE) {                                             \
            if (end - p < 1 + (W))                                           \
                return -1;                                                   \
            *out = (T)pp_load_le(p + 1, (W));                                \
            *at = p + 1 + (W);                                               \
            return 1;                                                        \
        }                                                                    \
        if (b < PP_ID_ONE_BYTE) {                                            \
            r = b;                                                           \
            *at = p + 1;                                                     \
        } else {                                                             \
            if (end - p < 2)                                                 \
                return -1;                                                   \
            r = PP_ID_ONE_BYTE + ((b - PP_ID_ONE_BYTE) << 8 | p[1]);         \
            *at = p + 2;                                                     \
        }                                                                    \
        if (r >= ntable)                                                     \
            return -1;                                                       \
        *out = table[r];                                                     \
        return 1;                                                            \
    }

#define DECODE_BLOCKS(NAME, CODE, T, W, TAKE, ATTRIBUTES)                    \
    ATTRIBUTES static int NAME(T *out, const unsigned char *p,               \
                               const unsigned char *end, size_t n,           \
                               const T *table, size_t ntable)                \
    {                                                                        \
        size_t i = 0;                                                        \
        for (;;) {                                                           \
            int early = 0; /* a block an escape cut short */                 \
            while (!early && n - i >= 64 && end - p >= 64 + (W)) {           \
                int carry;                                                   \
                uint64_t leads, escapes;                                     \
                lead_and_escape_bytes_of_64(p, &leads, &escapes);            \
                uint64_t starts = code_starts_of_64(leads, &carry);          \
                uint64_t esc = escapes & starts & (0 - (escapes & starts));  \
                uint64_t take = esc ? starts & (esc - 1) : starts;           \
                uint32_t top = 0;                                            \
                size_t k = 0; /* none where an escape begins the block */    \
                if (take) {                                                  \
                    uint16_t ranks[64];                                      \
                    ranks_of_64(p, ranks);                                   \
                    k = TAKE(out + i, ranks, take, table, &top);             \
                }                                                            \
                if (k && top >= ntable)                                      \
                    return -1;                                               \
                i += k;                                                      \
                if (esc) {                                                   \
                    p += __builtin_ctzll(esc);                               \
                    out[i++] = (T)pp_load_le(p + 1, (W));                    \
                    p += 1 + (W);                                            \
                    early = k < EARLY_ESCAPE;                                \
                } else {                                                     \
                    p += 64 + carry;                                         \
                }                                                            \
            }                                                                \
            /* after an early escape, a stretch of codes one at a time;     \
             * else the row's tail */                                        \
            size_t stop = early && n - i > CODES_AFTER_AN_EARLY_ESCAPE       \
                              ? i + CODES_AFTER_AN_EARLY_ESCAPE              \
                              : n;                                           \
            while (i < stop) {                                               \
                if (CODE(out + i, &p, end, table, ntable) < 0)               \
                    return -1;                                               \
                i++;                                                         \
            }                                                                \
            if (i == n)                                                      \
                return p == end ? 0 : -1;                                    \
        }                                                                    \
    }

DECODE_CODE(code16, uint16_t, 2)
DECODE_CODE(code32, uint32_t, 4)
DECODE_BLOCKS(decode16, code16_code, uint16_t, 2, take_codes_uint16_t, )
DECODE_BLOCKS(decode32, code32_code, uint32_t, 4, take_codes_uint32_t, )
#if PP_SSSE3_DECODER
DECODE_BLOCKS(decode16_ssse3, code16_code, uint16_t, 2,
              take_codes_ssse3_uint16_t, __attribute__((target("ssse3"))))
DECODE_BLOCKS(decode32_ssse3, code32_code, uint32_t, 4,
              take_codes_ssse3_uint32_t, __attribute__((target("ssse3"))))
#endif

int pp_decode_id_codes_portable(void *out, unsigned width,
                                const unsigned char *in, size_t nbytes,
                                size_t n, const void *table, size_t ntable)
{
    return width == 2 ? decode16(out, in, in + nbytes, n, table, ntable)
                      : decode32(out, in, in + nbytes, n, table, ntable);
}

int pp_decode_id_codes(void *out, unsigned width, const unsigned char *in,
                       size_t nbytes, size_t n, const void *table,
                       size_t ntable)
{
#if PP_SSSE3_DECODER
    if (__builtin_cpu_supports("ssse3"))
        return width == 2
                   ? decode16_ssse3(out, in, in + nbytes, n, table, ntable)
                   : decode32_ssse3(out, in, in + nbytes, n, table, ntable);
#endif
    return pp_decode_id_codes_portable(out, width, in, nbytes, n, table,
                                       ntable);
}

unsigned pp_stored_id_bytes(uint32_t version, unsigned width, size_t nbytes,
                            size_t tokens)
{
    if (version >= PP_FIRST_ID3_VERSION && width == 4 && tokens > 0 &&
        nbytes % 3 == 0 && nbytes / 3 == tokens)
        return 3;
    return width;
}

void pp_decode_ids(void *out, unsigned width, const void *in, unsigned stored,
                   size_t n)
{
    if (stored == width) {
        memcpy(out, in, n * width);
        return;
    }
    const unsigned char *p = in; /* 3 bytes into uint32 */
    uint32_t *o = out;
    for (size_t i = 0; i < n; i++, p += 3)
        o[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}
