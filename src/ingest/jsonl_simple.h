/* The simple shape of a JSON line, parsed without simdjson: one object
 * whose keys are plain printable ASCII (no escapes) and whose values are
 * all arrays of integers, such as {"input_ids": [1, 2], "labels": [-100,
 * 2]}. That is what tokenizers' pipelines write, and it parses several
 * times faster by hand than through a DOM. A line that is not exactly
 * that, or whose ids, mask or labels break a rule, is not judged here:
 * the caller hands it to simdjson, which accepts it or names the error.
 * So this path only ever accepts, and accepts only valid JSON with the
 * meaning the full parser gives it (tests/test_jsonl_simple.c holds it
 * to that). */
#ifndef PP_INGEST_JSONL_SIMPLE_H
#define PP_INGEST_JSONL_SIMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct pp_simple_line {
    /* in: room for `cap` values each (len / 2 + 1 is always enough: a
     * value and what follows it take two bytes at least) */
    uint32_t *ids;
    uint8_t *mask;
    uint32_t *scratch; /* labels' values, checked against the ids */
    size_t cap;
    /* out */
    size_t n;     /* ids */
    int has_mask; /* loss_mask or labels given: mask[0..n) */
    /* "group": 'i' (an integer, its digits as written) or 's' (a string
     * without escapes, its bytes), 0 when none; the text is in the line */
    char group_kind;
    const unsigned char *group;
    size_t group_len;
} pp_simple_line;

/* 1 when line[0, len) (no newline in it; line[len] must be its '\n',
 * which ends every scan, and 8 bytes past it readable) is a simple line that the full parser would
 * accept: its ids and mask are in *out. 0: let simdjson read it (which
 * may still accept it). `field` names the ids' key. */
int pp_jsonl_simple_line(const unsigned char *line, size_t len,
                         const char *field, size_t field_len,
                         pp_simple_line *out);

#endif
