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
/* llm.c .bin and raw uint16 token files (tokens.c). */
int pp_ingest_tokens(prepack_store *s, const char *path, prepack_format format,
                     const prepack_ingest_options *o, prepack_diag *diag);

/* The simdjson version the JSONL reader was built with (its header is
 * C++, so jsonl.cpp answers for version.c). */
const char *pp_simdjson_version(void);

#endif
