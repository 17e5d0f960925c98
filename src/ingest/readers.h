/* The input readers ingest.c dispatches to: each reads one input of its
 * format into the store, checking every id, and names the file and the
 * line or record of any error. */
#ifndef PP_INGEST_READERS_H
#define PP_INGEST_READERS_H

#include "prepack.h"

/* llm.c's header magics (little-endian int32 at byte 0): the detector and
 * the reader both know them from here. */
#define PP_LLMC_GPT2_MAGIC 20240520u   /* version 1: uint16 tokens */
#define PP_LLMC_LLAMA3_MAGIC 20240801u /* version 7: uint32 tokens */

/* JSON lines, plain or compressed (jsonl.cpp, through simdjson). */
int pp_ingest_jsonl(prepack_store *s, const char *path,
                    const prepack_ingest_options *o, prepack_diag *diag);
/* Megatron X.idx + X.bin, given the prefix X (megatron.c). */
int pp_ingest_megatron(prepack_store *s, const char *prefix,
                       const prepack_ingest_options *o, prepack_diag *diag);
/* ---- parts of inputs, for the scan tasks of a job in steps (src/steps) -- */

/* What of an input one scan task reads. whole: all of it, as
 * prepack_ingest_file (and the checks that need the whole file).
 * Otherwise JSONL: the lines that start in bytes [begin, end) of a plain
 * file; Megatron: sequences [begin, end) of its .idx, whose document
 * entries below `begin` are checked and skipped; llm.c and raw: the
 * sequences whose first token is in bytes [begin, end). */
typedef struct pp_input_part {
    int whole;
    uint64_t begin, end;
    /* Megatron, filled in: the .idx's sequences, the furthest .bin byte
     * the part's sequences reach, the .bin's size; the trailing-bytes
     * check (pp_megatron_check_reach) needs every part's reach. */
    uint64_t sequences_total, bin_reached, bin_size;
    /* JSONL, filled in: the "group" values of the part's first and last
     * records (malloc'd, the caller frees them; NULL: no record, or none
     * named a group), so that a group cut between two scan tasks' parts
     * is joined again by the plan. */
    char *first_group, *last_group;
    size_t first_group_len, last_group_len;
} pp_input_part;

/* Reads a part of one input (begin_input is done here, not the empty
 * input check, which needs every part). */
int pp_ingest_part(prepack_store *s, const char *path, prepack_format format,
                   const prepack_ingest_options *o, pp_input_part *part,
                   prepack_diag *diag);
int pp_ingest_jsonl_part(prepack_store *s, const char *path,
                         const prepack_ingest_options *o, uint64_t begin,
                         uint64_t end, pp_input_part *part, prepack_diag *diag);
int pp_ingest_megatron_part(prepack_store *s, const char *prefix,
                            const prepack_ingest_options *o,
                            pp_input_part *part, prepack_diag *diag);
/* llm.c and raw token files: the sequences that start in bytes
 * [begin, end) of the file (a file is cut where a document starts). */
int pp_ingest_tokens_part(prepack_store *s, const char *path,
                          prepack_format format,
                          const prepack_ingest_options *o, pp_input_part *part,
                          prepack_diag *diag);
/* A .bin with bytes past the furthest its sequences reach: an error
 * unless allow_trailing. */
int pp_megatron_check_reach(const char *bin_path, const char *idx_path,
                            uint64_t bin_size, uint64_t sequences,
                            uint64_t reached, int allow_trailing,
                            prepack_diag *diag);
/* X, X.bin or X.idx -> X into buf. */
void pp_megatron_prefix(const char *path, char *buf, size_t cap);

/* llm.c .bin and raw uint16 token files (tokens.c). */
int pp_ingest_tokens(prepack_store *s, const char *path, prepack_format format,
                     const prepack_ingest_options *o, prepack_diag *diag);

/* The simdjson version the JSONL reader was built with (its header is
 * C++, so jsonl.cpp answers for version.c). */
const char *pp_simdjson_version(void);

#endif
