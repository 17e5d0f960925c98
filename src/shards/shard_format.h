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

/* ---- token ids in rows (format version 3) ------------------------------ */

/* Every uint32 set that holds its tokens is version 3: it stores a
 * row's input_ids in 3 bytes a token when all its ids are below 2^24
 * (vocabularies of up to 16 M ids: a quarter of the bytes gone before
 * zstd sees them), else in 4; the bin's length says which (3 T or 4 T
 * bytes, T the end of cu_seqlens). uint16 sets and versions 1 and 2
 * store the token_dtype's width. */
enum { PP_FIRST_ID3_VERSION = 3 };

/* Whether a set of token width `width` bytes stores 3-byte ids (version
 * 3): a uint32 set that holds its tokens. The writer and the steps'
 * finalize both ask here, so a set's version has one rule. */
static inline int pp_set_stores_ids3(unsigned width, int references)
{
    return width == 4 && !references;
}

/* The n ids in 3 little-endian bytes each, in one pass: 0 when every id
 * fits 24 bits, else nonzero (out is then not a row's encoding: store
 * the ids at 4 bytes). */
int pp_encode_ids3(unsigned char *out, const uint32_t *ids, size_t n);
/* The bytes a token of a row's input_ids bin of `nbytes` takes on disk,
 * for a row of `tokens` tokens (the end of its cu_seqlens) in a set of
 * `version` and token width `width`: 3 only where version 3 allows it and
 * the length says so, else `width` (the caller's checks of the length
 * against it then refuse any other). */
unsigned pp_stored_id_bytes(uint32_t version, unsigned width, size_t nbytes,
                            size_t tokens);
/* The one decoding of a row's token bytes to the native width: n tokens
 * of `stored` bytes (2, 3 or 4, at most `width`) at `in` into `out` as
 * `width`-byte (2 or 4) little-endian values. The row reader calls it
 * (batches are built from its rows); python/prepack/_format.py's
 * decode_ids is its twin. */
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
