/* Shared by the prepack command's files. The CLI uses only prepack.h. */
#ifndef PREPACK_CLI_H
#define PREPACK_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "prepack.h"

/* Exit codes, documented in docs/CLI.md. */
enum { EXIT_OK = 0, EXIT_DATA = 1, EXIT_USAGE = 2 };

/* Subcommands: argv[0] is the subcommand's name. */
int cmd_stats(int argc, char **argv);

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

/* Parses a whole decimal string into [min, max]; 0 on success. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Reads a whole file ("-" = stdin) into a malloc'd buffer. On failure
 * prints the reason naming the file and returns EXIT_DATA. */
int read_whole_file(const char *path, char **data, size_t *size);

/* Seconds from a monotonic clock. */
double now_seconds(void);

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
void json_finish(json_writer *w);

#endif
