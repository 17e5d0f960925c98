// Counting a simdjson DOM array exactly. simdjson's array::size() saturates
// at 0xFFFFFF (2^24 - 1: its tape keeps 24 bits for the count), so a
// larger array must be counted by walking it; anything sized from size()
// alone overflows on a JSONL record of 16,777,216 ids. C++, for the two
// files that parse JSON (ingest/jsonl.cpp, shards/manifest_read.cpp).
#ifndef PP_COMMON_JSON_COUNT_H
#define PP_COMMON_JSON_COUNT_H

#include <cstddef>

#include <simdjson.h>

inline size_t pp_json_array_count(simdjson::dom::array a)
{
    size_t n = a.size();
    if (n < 0xFFFFFF)
        return n; // exact below the saturation point
    n = 0;
    for (simdjson::dom::element e : a) {
        (void)e;
        n++;
    }
    return n;
}

#endif
