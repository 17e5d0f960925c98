/* The shard set's on-disk format in one place (docs/FORMAT.md): the
 * writer and the reader both include this, so the two sides cannot
 * disagree on a magic number, a size or a file name.
 *
 * A shard is zstd frames of msgpack rows closed by a seek table in a
 * skippable frame, after zstd's seekable format:
 *
 *   u32 PP_SKIPPABLE_MAGIC, u32 body size
 *   per frame: u32 compressed, u32 decompressed, u32 XXH64 low 32 bits
 *   u32 frame count, u8 descriptor (PP_SEEK_CHECKSUMS), u32 PP_SEEKABLE_MAGIC
 */
#ifndef PP_SHARDS_SHARD_FORMAT_H
#define PP_SHARDS_SHARD_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define PP_SKIPPABLE_MAGIC 0x184D2A5Eu
#define PP_SEEKABLE_MAGIC 0x8F92EAB1u

enum {
    PP_SEEK_HEADER_BYTES = 8, /* skippable magic, body size */
    PP_SEEK_ENTRY_BYTES = 12, /* per frame */
    PP_SEEK_FOOTER_BYTES = 9, /* frame count, descriptor, seekable magic */
    PP_SEEK_CHECKSUMS = 0x80, /* descriptor bit 7: checksums present */
    /* The smallest zstd frame: magic, header descriptor, one window or
     * size byte, one empty block's header. A seek table entry costs at
     * least this much file besides its own 12 bytes. */
    PP_MIN_FRAME_BYTES = 9
};

/* The seek table's size, skippable frame header included, for n frames. */
static inline uint64_t pp_seek_table_bytes(uint64_t frames)
{
    return frames * PP_SEEK_ENTRY_BYTES + PP_SEEK_FOOTER_BYTES +
           PP_SEEK_HEADER_BYTES;
}

/* A plan-only row's reference, per sequence (ref_source u32, ref_offset
 * u64): no more than L sequences, so it bounds a row as a token width of
 * 12 bytes would. */
enum { PP_REF_BYTES = 12 };

/* The most bytes one row of at most L tokens `width` bytes wide packs to:
 * L tokens, L + 1 cu_seqlens, L sequence ids and starts, L mask bytes,
 * and the map's keys and headers. */
static inline uint64_t pp_row_bytes_bound(uint64_t L, uint64_t width)
{
    return L * (width + 4 + 8 + 4 + 1) + 4 + 128;
}

/* The most bytes a frame of `rows` such rows decompresses to (the array
 * header included): the writer keeps frames under 4 GiB with it, and the
 * reader refuses a seek table claiming more before allocating for it. */
static inline uint64_t pp_frame_bytes_bound(uint64_t rows, uint64_t L,
                                            uint64_t width)
{
    return rows * pp_row_bytes_bound(L, width) + 16;
}

/* The most bytes `compressed` bytes of zstd frame can decompress to: a
 * block yields at most 128 KiB and costs at least 4 bytes (an RLE block's
 * header and byte). A seek table claiming more is damaged: refused before
 * a buffer is sized from it. */
static inline uint64_t pp_zstd_expansion_bound(uint64_t compressed)
{
    return compressed * (128 * 1024 / 4);
}

/* ---- token ids in rows -------------------------------------------------- */

/* Versions and what their rows' input_ids hold (docs/FORMAT.md):
 *   1: token_dtype's width a token; 2: a plan-only set (references);
 *   3: a uint32 row's ids in 3 bytes where all fit, else 4 (the bin's
 *      length says which);
 *   4: id codes (below): every set that holds its tokens, since the
 *      writer of this version. */
enum { PP_FIRST_ID3_VERSION = 3, PP_FIRST_ID_CODE_VERSION = 4 };

/* The version a set is written as: the writer and the steps' finalize
 * both ask here, so a set's version has one rule. */
static inline uint32_t pp_set_version(int references)
{
    return references ? 2 : PP_FIRST_ID_CODE_VERSION;
}

/* Id codes (version 4). Each shard's index (below) holds the set's id
 * table: up to PP_ID_TABLE_MAX ids, the most frequent first. A token is coded
 *   rank r < 192 in the table:       1 byte, r;
 *   rank r < PP_ID_TABLE_MAX:        2 bytes, 192 + (r - 192) / 256 and
 *                                    (r - 192) % 256;
 *   any id (in the table or not):    PP_ID_ESCAPE, then the id in
 *                                    token_dtype's width, little-endian.
 * Frequent tokens take one byte, so zstd sees fewer bytes for the same
 * text and its frames reach further (docs/BENCHMARKS.md). */
enum {
    PP_ID_ONE_BYTE = 192,
    PP_ID_ESCAPE = 255,
    PP_ID_TABLE_MAX = 16320, /* ranks a code of one or two bytes holds */
    /* ids at or past this (2^22) are never in a table: the writer looks
     * ranks up in an array of this many entries */
    PP_ID_TABLE_ID_LIMIT = 0x400000
};

/* The most bytes a token takes on disk in a set of `version` and token
 * width `width`: what bounds a row's and a frame's bytes. */
static inline unsigned pp_stored_token_bound(uint32_t version, unsigned width)
{
    return version >= PP_FIRST_ID_CODE_VERSION ? width + 1 : width;
}

/* A version 4 shard's index: a skippable frame between its last zstd
 * frame and its seek table, holding the set's id table and a hash of
 * each frame's compressed bytes (checked before zstd reads them):
 *   u32 PP_INDEX_MAGIC, u32 body size = PP_INDEX_HEAD + n * width + 8 F
 *   body: u32 n, u32 F (the seek table's frames),
 *         u64 XXH64 (seed 0) of the rest of the body,
 *         n ids of `width` bytes (the table, rank order),
 *         F u64: XXH64 (seed 0) of each frame's compressed bytes */
#define PP_INDEX_MAGIC 0x184D2A5Du
enum { PP_INDEX_HEAD = 16, PP_INDEX_FRAME_HEAD = 8 };

static inline uint64_t pp_index_frame_bytes(uint64_t n, unsigned width,
                                            uint64_t frames)
{
    return PP_INDEX_FRAME_HEAD + PP_INDEX_HEAD + n * width + 8 * frames;
}

/* The n ids (`width`-byte host integers) in codes (version 4) at out
 * (room for n * (width + 1) bytes), ranked by `rank` (rank[id] + 1, or
 * 0 for an id not in the table; ids at or past `ranked` have none): the
 * bytes written. */
size_t pp_encode_id_codes(unsigned char *out, const void *ids, size_t n,
                          unsigned width, const uint16_t *rank,
                          uint32_t ranked);
/* Decodes exactly n tokens from the nbytes of codes at in into out
 * (`width`-byte host integers) through table (ntable ids, host integers
 * of `width` bytes too, in an array of PP_ID_TABLE_MAX: the decoder may
 * read any slot before it refuses a rank): 0, or -1 when the bytes are
 * not n codes (cut short, left over, a rank past the table). */
int pp_decode_id_codes(void *out, unsigned width, const unsigned char *in,
                       size_t nbytes, size_t n, const void *table,
                       size_t ntable);
/* pp_decode_id_codes without the SSSE3 path it takes where the CPU has
 * it: what other machines run, which the tests hold to the same answers. */
int pp_decode_id_codes_portable(void *out, unsigned width,
                                const unsigned char *in, size_t nbytes,
                                size_t n, const void *table, size_t ntable);

/* The bytes a token of a row's input_ids bin of `nbytes` takes on disk,
 * for a row of `tokens` tokens (the end of its cu_seqlens) in a set of
 * `version` (1 to 3) and token width `width`: 3 only where version 3
 * allows it and the length says so, else `width` (the caller's checks of
 * the length against it then refuse any other). */
unsigned pp_stored_id_bytes(uint32_t version, unsigned width, size_t nbytes,
                            size_t tokens);
/* The one decoding of a row's token bytes to the native width (versions
 * 1 to 3): n tokens of `stored` bytes (2, 3 or 4, at most `width`) at `in`
 * into `out` as `width`-byte (2 or 4) little-endian values. The row
 * reader calls it (batches are built from its rows);
 * python/prepack/_format.py's decode_ids is its twin. */
void pp_decode_ids(void *out, unsigned width, const void *in, unsigned stored,
                   size_t n);

/* ---- file names ------------------------------------------------------ */

#define PP_MANIFEST_NAME "manifest.json"
/* The deepest a manifest nests (a set's is 4): both readers refuse more,
 * at the same depth, whatever their parsers' own limits. */
#define PP_MANIFEST_MAX_DEPTH 64
#define PP_TMP_SUFFIX ".tmp"     /* written under name + this, then renamed */
enum { PP_SHARD_NAME_MAX = 32 }; /* with its NUL */

/* shard-NNNNN.zst for shard i (at least five digits). */
void pp_shard_name(char out[PP_SHARD_NAME_MAX], size_t i);

/* Whether s[0..n) is a shard's name: "shard-", one or more digits,
 * ".zst", shorter than PP_SHARD_NAME_MAX. The one rule: a manifest may
 * name nothing else (so it cannot point outside its directory), and
 * overwrite and verify treat nothing else as a shard. */
int pp_is_shard_name(const char *s, size_t n);

/* Whether a file name is one a writer makes in a set's directory: the
 * manifest, a shard, or either's temporary name. What overwrite may
 * remove and what verify expects the manifest to list. */
int pp_is_set_file(const char *name);

#endif
