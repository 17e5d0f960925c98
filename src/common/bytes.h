/* Fixed-width integers at unaligned addresses, in a stated byte order.
 * On-disk formats (shards, Megatron .idx, llm.c headers, msgpack) are
 * read and written through these, never by casting a pointer or by
 * fwrite of a struct. */
#ifndef PP_COMMON_BYTES_H
#define PP_COMMON_BYTES_H

#include <stdint.h>

/* The little-endian unsigned integer of `width` (1..8) bytes at p. */
static inline uint64_t pp_load_le(const unsigned char *p, unsigned width)
{
    uint64_t v = 0;
    for (unsigned i = width; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* The big-endian one (msgpack's lengths). */
static inline uint64_t pp_load_be(const unsigned char *p, unsigned width)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

static inline uint32_t pp_load_le32(const unsigned char *p)
{
    return (uint32_t)pp_load_le(p, 4);
}

static inline void pp_store_le32(unsigned char *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void pp_store_le64(unsigned char *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void pp_store_be32(unsigned char *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * (3 - i)));
}

#endif
