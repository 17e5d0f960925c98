/* The input files a plan-only set reads its tokens from (docs/FORMAT.md,
 * version 2): the identity the writer records for each, and the check and
 * mapping the reader makes at open. */
#ifndef PP_SHARDS_SOURCES_H
#define PP_SHARDS_SOURCES_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

/* One source (an input file a plan-only set's rows reference) as the
 * manifest's "sources" lists it. */
typedef struct pp_set_source {
    char *path; /* absolute */
    unsigned width;
    int is_signed;
    uint64_t bytes, sample_xxh64;
    char *index; /* the file that located its sequences (Megatron .idx), or
                    NULL; then index_bytes and index_xxh64 (whole file) */
    uint64_t index_bytes, index_xxh64;
    /* from the manifest's input of the same number (a plan-only set lists
     * one input per source): its sequence ids, so a Megatron reference
     * can be checked against its index entry */
    uint64_t first_sequence, sequences;
    int has_input;
} pp_set_source;

/* The store's sources after source 0 (in order: the
 * numbers rows use) with their identities, measured now. */
int pp_sources_describe(const prepack_store *s, const prepack_allocator *a,
                        pp_set_source **out, size_t *n, prepack_diag *diag);
void pp_sources_free(const prepack_allocator *a, pp_set_source *s, size_t n);

/* A source checked against its identity, held open: rows read
 * it with pread through the descriptor that was checked (never a map: a
 * file cut short after the open is then an error, not SIGBUS). Entries
 * naming one file (the same device and inode) share the first one's
 * descriptor and its hashes, so a file listed many times is opened for
 * good and hashed once. */
typedef struct pp_mapped_source {
    int fd;      /* -1 when none */
    int owns_fd; /* 0: an earlier entry's descriptor */
    uint64_t size, dev, ino, sample;
    int has_index; /* then the index's identity and its whole hash */
    uint64_t index_dev, index_ino, index_hash;
    int index_fd;         /* Megatron: the .idx held open (-1: none) */
    int owns_index_fd;    /* 0: an earlier entry's descriptor */
    uint64_t index_count; /* its entries */
    uint64_t first_sequence, sequences; /* its input's sequence ids */
    unsigned width;
    int is_signed;
    const char *path;
} pp_mapped_source;

/* Opens and checks each file (size, sampled hash, the index's size and
 * hash, and its width against what the file says it holds: a Megatron
 * index's dtype code, an llm.c header); a changed, moved or missing one,
 * or a width the file contradicts, is an error naming it. */
int pp_sources_open(const pp_set_source *s, size_t n, pp_mapped_source *out,
                    prepack_diag *diag);
void pp_sources_close(pp_mapped_source *m, size_t n);

/* Whether a Megatron source's reference is where its index puts it:
 * sequence `id` (its input's first_sequence onward) is index entry e, and
 * its chunk from token `start`, `len` tokens, must lie at pointer[e] +
 * start x width within size[e] tokens. 0: it is; -1: the index cannot
 * be read; 1: it is not (*why says how). */
int pp_set_source_check_entry(const pp_mapped_source *m, uint64_t id,
                              uint64_t at, uint32_t start, uint32_t len,
                              const char **why);

/* What pp_set_source_read found. */
enum { PP_SET_SOURCE_OK, PP_SET_SOURCE_SHORT, PP_SET_SOURCE_RANGE };

/* `len` tokens at byte `at` of m (which the caller checked lie inside
 * its recorded size, aligned) as out_width-byte ids into out; scratch
 * holds len x 8 bytes. PP_SET_SOURCE_SHORT: the file ends first (or errno);
 * PP_SET_SOURCE_RANGE: token *bad (its index) is negative or past what
 * out_width holds, *value its id. */
int pp_set_source_read(const pp_mapped_source *m, uint64_t at, uint32_t len,
                   unsigned out_width, void *out, unsigned char *scratch,
                   uint32_t *bad, int64_t *value);

#endif
