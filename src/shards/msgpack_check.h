/* A structural check of msgpack bytes before msgpack-c allocates from
 * the counts in their headers (the reader's, for every frame). */
#ifndef PP_SHARDS_MSGPACK_CHECK_H
#define PP_SHARDS_MSGPACK_CHECK_H

#include <stddef.h>

/* The bytes one msgpack object at p[0..n) spans, or 0 when it is cut
 * short, uses an unknown type byte, nests over 32 deep, or has a container
 * claiming more elements than bytes remain. */
size_t pp_msgpack_span(const unsigned char *p, size_t n);

#endif
