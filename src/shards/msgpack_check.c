/* A structural check of msgpack bytes before msgpack-c sees them.
 *
 * msgpack-c's unpacker allocates each array and map from the count in its
 * header: a frame of a few bytes claiming 2^32 elements makes it ask for
 * ~100 GB. Here every header is read with its bounds checked and every
 * container count is held to the bytes left (each element takes at least
 * one byte), so once this passes, what msgpack-c allocates is bounded by a
 * small multiple of the frame's size. Nesting is limited as well: a shard
 * row needs three levels (frame array, row map, bin). */
#include "common/bytes.h"
#include "shards/msgpack_check.h"

enum { MAX_DEPTH = 32 };

/* The header of the object whose first byte is b: how many header bytes
 * follow b (*head), how many payload bytes follow those, or where the size
 * is stored (*size_bytes, big-endian), and for containers how many objects
 * they hold per counted entry (*per_entry: 1 array, 2 map; 0 otherwise).
 * Returns 0 for the one byte msgpack never uses. */
static int describe(unsigned char b, unsigned *size_bytes, uint64_t *payload,
                    unsigned *per_entry)
{
    *size_bytes = 0;
    *payload = 0;
    *per_entry = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 1;    /* fixints, nil, booleans */
    if (b <= 0x8f) { /* fixmap */
        *payload = b & 0x0f;
        *per_entry = 2;
        return 1;
    }
    if (b <= 0x9f) { /* fixarray */
        *payload = b & 0x0f;
        *per_entry = 1;
        return 1;
    }
    if (b <= 0xbf) { /* fixstr */
        *payload = b & 0x1f;
        return 1;
    }
    switch (b) {
    case 0xc4:
    case 0xd9:
        *size_bytes = 1;
        return 1; /* bin8, str8 */
    case 0xc5:
    case 0xda:
        *size_bytes = 2;
        return 1; /* bin16, str16 */
    case 0xc6:
    case 0xdb:
        *size_bytes = 4;
        return 1; /* bin32, str32 */
    case 0xc7:
        *size_bytes = 1;
        *payload = 1;
        return 1; /* ext8: + type */
    case 0xc8:
        *size_bytes = 2;
        *payload = 1;
        return 1;
    case 0xc9:
        *size_bytes = 4;
        *payload = 1;
        return 1;
    case 0xca:
        *payload = 4;
        return 1; /* float32 */
    case 0xcb:
        *payload = 8;
        return 1; /* float64 */
    case 0xcc:
    case 0xd0:
        *payload = 1;
        return 1;
    case 0xcd:
    case 0xd1:
        *payload = 2;
        return 1;
    case 0xce:
    case 0xd2:
        *payload = 4;
        return 1;
    case 0xcf:
    case 0xd3:
        *payload = 8;
        return 1;
    case 0xd4:
        *payload = 2;
        return 1; /* fixext1: type + 1 */
    case 0xd5:
        *payload = 3;
        return 1;
    case 0xd6:
        *payload = 5;
        return 1;
    case 0xd7:
        *payload = 9;
        return 1;
    case 0xd8:
        *payload = 17;
        return 1;
    case 0xdc:
        *size_bytes = 2;
        *per_entry = 1;
        return 1; /* array16 */
    case 0xdd:
        *size_bytes = 4;
        *per_entry = 1;
        return 1; /* array32 */
    case 0xde:
        *size_bytes = 2;
        *per_entry = 2;
        return 1; /* map16 */
    case 0xdf:
        *size_bytes = 4;
        *per_entry = 2;
        return 1; /* map32 */
    default:
        return 0; /* 0xc1 */
    }
}

size_t pp_msgpack_span(const unsigned char *p, size_t n)
{
    uint64_t pending[MAX_DEPTH]; /* objects still to read, per level */
    int depth = 0;
    size_t at = 0;
    pending[0] = 1;
    for (;;) {
        while (pending[depth] == 0) {
            if (depth == 0)
                return at;
            depth--;
        }
        pending[depth]--;
        if (at >= n)
            return 0;
        unsigned size_bytes, per_entry;
        uint64_t payload;
        if (!describe(p[at++], &size_bytes, &payload, &per_entry))
            return 0;
        if (size_bytes > n - at)
            return 0;
        uint64_t counted = size_bytes ? pp_load_be(p + at, size_bytes) : 0;
        at += size_bytes;
        if (per_entry) { /* a container: its elements come next */
            uint64_t objects = (size_bytes ? counted : payload) * per_entry;
            if (objects > n - at || (objects && depth + 1 == MAX_DEPTH))
                return 0;
            if (objects)
                pending[++depth] = objects;
            continue;
        }
        payload += counted; /* str, bin, ext: the stored size */
        if (payload > n - at)
            return 0;
        at += (size_t)payload;
    }
}
