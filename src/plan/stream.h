/* The stream packer's state, shared by its two files: stream.c (pushing,
 * placing, popping) and stream_state.c (saving and restoring it). */
#ifndef PP_PLAN_STREAM_H
#define PP_PLAN_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

typedef struct item {
    uint64_t id;      /* the caller's sequence id */
    uint64_t arrival; /* order of arrival: the lookahead's tie-break */
    uint32_t off;     /* first token within the sequence (split chunks) */
    uint32_t len;
    uint32_t *tokens; /* len, or NULL (a length-only stream) */
    uint8_t *mask;    /* len, or NULL (every token trained) */
} item;

typedef struct row {
    uint64_t number; /* opening order: best fit's tie-break */
    uint32_t room;
    size_t n, cap;
    item *items;
} row;

/* An open row's place in the sorted index. */
typedef struct open_ref {
    uint32_t room;
    uint64_t number;
    size_t slot; /* into rows */
} open_ref;

struct prepack_stream {
    prepack_stream_options o;
    prepack_allocator alloc_copy;
    const prepack_allocator *alloc;
    int has_tokens; /* -1 unknown (nothing pushed), 0 lengths, 1 tokens */
    uint64_t next_row, next_arrival;
    prepack_stream_stats st;
    /* the lookahead: a max-heap by (len, then earlier arrival) */
    item *heap;
    size_t nheap, heap_cap;
    /* open rows: slots, the free ones listed, and the index */
    row *slots;
    size_t nslots;
    size_t *free_slots;
    size_t nfree;
    open_ref *open;
    size_t nopen;
    /* closed rows, oldest first (a ring) */
    row *ready;
    size_t ready_head, nready, ready_cap;
    /* the popped row's arrays */
    uint32_t *out_tokens;
    int32_t *out_cu;
    uint64_t *out_ids;
    uint8_t *out_mask;
    uint32_t *out_starts;
};

void pp_stream_item_free(const prepack_allocator *a, item *it);
void pp_stream_row_free(const prepack_allocator *a, row *r);
/* Appends a closed row to the ready ring (the ring takes its items). */
int pp_stream_ready_push(prepack_stream *s, const row *r);
/* Restores the lookahead's heap order over s->heap[0 .. nheap). */
void pp_stream_heapify(prepack_stream *s);
/* Puts open row `slot` into the sorted index. */
void pp_stream_index_insert(prepack_stream *s, size_t slot);
/* A restored state against every invariant a live packer keeps
 * (stream_check.c): PREPACK_OK, or PREPACK_ECORRUPT naming what breaks
 * which (PREPACK_ENOMEM for its scratch). */
int pp_stream_check(const prepack_stream *s, prepack_diag *diag);

#endif
