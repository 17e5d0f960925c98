/* The set's id table: counted, ranked, and the frame that stores it
 * (id_table.h). */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "shards/id_table.h"
#include "shards/shard_format.h"

struct pp_id_table {
    const prepack_allocator *alloc;
    unsigned width;
    uint32_t limit;   /* ids below this are counted and may be ranked */
    uint32_t *counts; /* [limit] until made */
    uint16_t *rank;   /* [limit]: rank + 1, 0 = not in the table */
    unsigned char *ids; /* [nids * width], rank order */
    size_t nids;
    int made;
};

pp_id_table *pp_id_table_create(unsigned width, const prepack_allocator *a)
{
    pp_id_table *t = pp_calloc(a, 1, sizeof *t);
    if (!t)
        return NULL;
    t->alloc = a;
    t->width = width;
    t->limit = width == 2 ? 1u << 16 : PP_ID_TABLE_ID_LIMIT;
    /* zeroed pages cost nothing until touched: a vocabulary of 200 K ids
     * touches 800 KB of the 16 MB a uint32 set's counts may span */
    t->counts = pp_calloc(a, t->limit, sizeof *t->counts);
    t->rank = pp_calloc(a, t->limit, sizeof *t->rank);
    if (!t->counts || !t->rank) {
        pp_id_table_free(t);
        return NULL;
    }
    return t;
}

void pp_id_table_free(pp_id_table *t)
{
    if (!t)
        return;
    pp_free(t->alloc, t->counts);
    pp_free(t->alloc, t->rank);
    pp_free(t->alloc, t->ids);
    pp_free(t->alloc, t);
}

void pp_id_table_count(pp_id_table *t, const void *ids, size_t n)
{
    if (t->width == 2) {
        const uint16_t *p = ids;
        for (size_t i = 0; i < n; i++)
            t->counts[p[i]]++;
        return;
    }
    const uint32_t *p = ids;
    for (size_t i = 0; i < n; i++)
        if (p[i] < t->limit)
            t->counts[p[i]]++;
}

/* (count, id) as one key that sorts most counted first, then by id. */
static uint64_t rank_key(uint32_t count, uint32_t id)
{
    return (uint64_t)(UINT32_MAX - count) << 32 | id;
}

static int by_key(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The n ranked ids as the index stores them. */
static int store_ids(pp_id_table *t, const uint64_t *keys, size_t n)
{
    unsigned char *ids = pp_alloc(t->alloc, n ? n : 1, t->width);
    if (!ids)
        return PREPACK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = (uint32_t)keys[i];
        for (unsigned b = 0; b < t->width; b++)
            ids[i * t->width + b] = (unsigned char)(id >> (8 * b));
    }
    t->ids = ids;
    t->nids = n;
    return PREPACK_OK;
}

int pp_id_table_make(pp_id_table *t)
{
    size_t seen = 0;
    for (uint32_t id = 0; id < t->limit; id++)
        seen += t->counts[id] != 0;
    uint64_t *keys = pp_alloc(t->alloc, seen ? seen : 1, sizeof *keys);
    if (!keys)
        return PREPACK_ENOMEM;
    size_t k = 0;
    for (uint32_t id = 0; id < t->limit; id++)
        if (t->counts[id])
            keys[k++] = rank_key(t->counts[id], id);
    qsort(keys, seen, sizeof *keys, by_key);
    size_t n = seen < PP_ID_TABLE_MAX ? seen : PP_ID_TABLE_MAX;
    for (size_t i = 0; i < n; i++)
        t->rank[(uint32_t)keys[i]] = (uint16_t)(i + 1);
    int rc = store_ids(t, keys, n);
    pp_free(t->alloc, keys);
    if (rc != PREPACK_OK)
        return rc;
    pp_free(t->alloc, t->counts);
    t->counts = NULL;
    t->made = 1;
    return PREPACK_OK;
}

int pp_id_table_made(const pp_id_table *t)
{
    return t->made;
}

size_t pp_id_table_encode(const pp_id_table *t, unsigned char *out,
                          const void *ids, size_t n)
{
    return pp_encode_id_codes(out, ids, n, t->width, t->rank, t->limit);
}

const unsigned char *pp_id_table_ids(const pp_id_table *t, size_t *n)
{
    *n = t->nids;
    return t->ids;
}
