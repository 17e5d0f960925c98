/* Shared by the prepack command's files. The CLI uses only prepack.h. */
#ifndef PREPACK_CLI_H
#define PREPACK_CLI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "prepack.h"

typedef struct progress progress;

/* Exit codes, documented in docs/CLI.md. */
enum { EXIT_OK = 0, EXIT_DATA = 1, EXIT_USAGE = 2 };

/* Subcommands: argv[0] is the subcommand's name. */
int cmd_stats(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
/* export: runs `python -m prepack export` (export.c) */
int cmd_export(int argc, char **argv);
/* scan, plan, write, finalize: pack in steps (steps.c) */
int cmd_step(int argc, char **argv);

/* ---- args.c: the options of stats and pack ------------------------------- */

typedef struct cmd_args {
    const char *cmd; /* "stats" or "pack" */
    int is_pack;
    const char *lengths_path; /* stats --lengths */
    char **inputs;
    int ninputs;
    prepack_plan_options plan;
    prepack_ingest_options ingest;
    prepack_store_options store;
    prepack_writer_options writer;
    const char *out_dir;  /* pack -o */
    const char *svg_path; /* --svg */
    uint32_t batch_size;
    int json;
    int quiet;          /* --quiet: no progress */
    progress *progress; /* set up by the command */
} cmd_args;

/* Parses argv (argv[0] = cmd) by the options of options.def. --help
 * prints help_head, then (given a help_tail) the options of pack or stats
 * from options.def and help_tail. Returns -1 when --help was printed, else
 * EXIT_OK or a usage error (already reported). */
int parse_cmd_args(int argc, char **argv, const char *cmd,
                   const char *help_head, const char *help_tail, cmd_args *a);
/* The options part of pack's (is_pack) or stats' --help, from options.def,
 * through the "-h, --help" line. */
void print_cmd_options(FILE *f, int is_pack);

/* The options that say how to read INPUTs (--format, --field, --doc-sep,
 * --sep-position), shared by stats, pack and verify: `name` without its
 * dashes. Returns EXIT_OK, or a usage error (reported) for a bad value;
 * -1 when `name` is not one of them. */
int apply_ingest_option(const char *cmd, const char *name, const char *val,
                        prepack_ingest_options *o);

/* ---- load.c: where lengths come from --------------------------------------- */

typedef struct lengths_source {
    uint32_t *owned;      /* parsed from a lengths file */
    prepack_store *store; /* or ingested from INPUTs */
    const uint32_t *lengths;
    size_t n;
} lengths_source;

int load_lengths(const cmd_args *a, lengths_source *src);
/* Ingests INPUTs, in order, into a new finished store (*out, freed by the
 * caller even on failure). A failure is reported; returns EXIT_DATA. */
int ingest_inputs(char *const *inputs, int n, const prepack_store_options *so,
                  const prepack_ingest_options *io, prepack_store **out);
void release_lengths(lengths_source *src);
/* Draws the report to --svg FILE, if asked. */
int write_svg(const cmd_args *a, const prepack_report *r,
              const prepack_plan *plan, const lengths_source *src);
/* Plans the rows and computes the report; a planner failure is reported in
 * terms of the input (file and record) and returns EXIT_DATA. */
int plan_and_report(cmd_args *a, const lengths_source *src, prepack_plan **plan,
                    prepack_report *report);

/* ---- report_print.c ------------------------------------------------------------ */

/* The report's words a new user may not know, one line each: printed
 * beneath the padding table and in `stats --help` and `pack --help`. */
#define REPORT_WORDS                                                        \
    "  slots        token positions computed: rows x their width\n"        \
    "  pad tokens   slots that hold padding, no token\n"                   \
    "  attention    query x key token pairs scored: l^2 per sequence with\n" \
    "               varlen attention, width^2 per padded row\n"            \
    "  lower bound  the fewest rows any packing of these lengths can have\n"

typedef struct timings {
    double read_s, plan_s, write_s;
} timings;

/* What pack wrote, for the report. */
typedef struct pack_result {
    const char *dir;
    uint64_t rows, bytes, token_bytes;
    int plan_only; /* the rows reference their tokens (--plan-only) */
} pack_result;

void print_report_text(const cmd_args *a, const prepack_store *store,
                       const prepack_report *r, timings t,
                       const pack_result *out);
void print_report_json(const cmd_args *a, const prepack_store *store,
                       const prepack_report *r, timings t,
                       const pack_result *out);

/* ---- util.c ----------------------------------------------------------- */

/* Prints "prepack CMD: message" and a hint to stderr; returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints "prepack: message" to stderr; returns EXIT_DATA. */
int data_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* The one way to report a library failure: the diag's message, or the
 * code's name when the library gave none. Returns EXIT_DATA. */
int library_error(int rc, const prepack_diag *d);

/* A user's directory path in the one spelling the command derives names
 * from (the library's rule, src/common/io.h pp_dir_path, which the
 * command cannot reach): empty and "." parts dropped ("out/", "./out",
 * "a/./out" give "out"; "." and "./" give "."), ".." parts kept for the
 * kernel. NULL when it does not fit buf or its last part is "..". */
const char *dir_path(const char *dir, char *buf, size_t cap);

/* Parses a whole decimal string into [min, max]; 0 on success. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Reads a whole file ("-" = stdin) into a malloc'd buffer. On failure
 * prints the reason naming the file and returns EXIT_DATA. */
int read_whole_file(const char *path, char **data, size_t *size);

/* rchar and wchar of /proc/self/io: the bytes this process has read and
 * written (page cache included); 0 where there is no /proc. */
void io_counters(uint64_t *rchar, uint64_t *wchar);

/* Seconds from a monotonic clock. */
double now_seconds(void);

/* Progress on stderr, only when it is a terminal and not --quiet: one
 * line rewritten in place (stage, done/total, rate, ETA), cleared when
 * the run ends, so nothing reaches logs. */
struct progress {
    int enabled;
    double begin;       /* the run's start */
    double start, last; /* the current stage's start, the last update */
    const char *stage;
};

void progress_init(progress *p, int quiet);
/* A prepack_progress_fn: opaque is a progress. */
void progress_update(void *opaque, const char *stage, uint64_t done,
                     uint64_t total);
/* Clears the line and, on a terminal, prints one summary line. */
void progress_done(progress *p, const char *summary);

/* Formats n with thousands separators into buf (at least 32 bytes). */
const char *fmt_count(char *buf, uint64_t n);

/* ---- json.c: a minimal streaming JSON writer ---------------------------- */

typedef struct json_writer {
    FILE *out;
    int depth;
    int need_comma;
} json_writer;

void json_begin_object(json_writer *w, const char *key);
void json_end_object(json_writer *w);
void json_begin_array(json_writer *w, const char *key);
void json_end_array(json_writer *w);
void json_key_u64(json_writer *w, const char *key, uint64_t v);
void json_key_double(json_writer *w, const char *key, double v);
void json_key_string(json_writer *w, const char *key, const char *v);
void json_key_bool(json_writer *w, const char *key, int v);
/* An array of integers on one line: [ 1, 2, 3 ]. */
void json_key_i64s(json_writer *w, const char *key, const int64_t *v, size_t n);
void json_finish(json_writer *w);

#endif
