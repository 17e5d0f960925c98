/* prepack inspect: a shard set's summary, or one row in detail. */
#define _GNU_SOURCE /* getopt_long */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char inspect_help[] =
    "usage: prepack inspect DIR [--row I | --batch I,J,... [--padded]] "
    "[--json]\n"
    "\n"
    "Without --row: the shard set's rows, shards, max_seq_len and token\n"
    "dtype. With --row I: row I's tokens and sequences, with each one's id,\n"
    "start within its source, length and first tokens. With --batch: the\n"
    "rows collated as the library's reader batches them (flat, or --padded\n"
    "[B, L]), every array in full, as JSON.\n"
    "\n"
    "Options:\n"
    "  --row I                  the row to show (0-based)\n"
    "  --batch I,J,...          rows to collate into one batch\n"
    "  --padded                 the batch as [B, L] arrays (default: flat)\n"
    "  --json                   print one JSON object\n"
    "  -h, --help               show this help\n";

enum { OPT_ROW = 256, OPT_JSON, OPT_BATCH, OPT_PADDED };

static const struct option inspect_options[] = {
    {"row", required_argument, NULL, OPT_ROW},
    {"json", no_argument, NULL, OPT_JSON},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"padded", no_argument, NULL, OPT_PADDED},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

enum { SHOWN_TOKENS = 8 };

static void summary(const prepack_reader *r, const char *dir, int json)
{
    size_t shards = prepack_reader_shard_count(r);
    size_t sources = prepack_reader_source_count(r);
    const char *dtype = prepack_dtype_name(prepack_reader_token_dtype(r));
    if (json) {
        json_writer w = {stdout, 0, 0};
        json_begin_object(&w, NULL);
        json_key_string(&w, "dir", dir);
        json_key_u64(&w, "rows", prepack_reader_row_count(r));
        json_key_u64(&w, "max_seq_len", prepack_reader_max_seq_len(r));
        json_key_string(&w, "token_dtype", dtype);
        json_begin_array(&w, "shard_rows");
        for (size_t i = 0; i < shards; i++)
            json_key_u64(&w, NULL, prepack_reader_shard_rows(r, i));
        json_end_array(&w);
        json_begin_array(&w, "referenced_files");
        for (size_t i = 0; i < sources; i++)
            json_key_string(&w, NULL, prepack_reader_source(r, i));
        json_end_array(&w);
        json_end_object(&w);
        json_finish(&w);
        return;
    }
    char b[32];
    printf("%s: %s rows in %zu shard%s, max_seq_len %u, %s tokens\n", dir,
           fmt_count(b, prepack_reader_row_count(r)), shards,
           shards == 1 ? "" : "s", prepack_reader_max_seq_len(r), dtype);
    if (sources)
        printf("plan only: tokens read from %zu input file%s\n", sources,
               sources == 1 ? "" : "s");
    for (size_t i = 0; i < sources; i++)
        printf("  %s\n", prepack_reader_source(r, i));
}

static void show_row(const prepack_row *row, size_t i, int json)
{
    if (json) {
        json_writer w = {stdout, 0, 0};
        json_begin_object(&w, NULL);
        json_key_u64(&w, "row", i);
        json_key_u64(&w, "tokens", row->num_tokens);
        json_key_u64(&w, "max_seqlen", prepack_row_max_seqlen(row));
        json_begin_array(&w, "sequences");
        for (size_t j = 0; j < row->num_seqs; j++) {
            json_begin_object(&w, NULL);
            json_key_u64(&w, "id", row->seq_ids[j]);
            json_key_u64(&w, "start", row->seq_starts ? row->seq_starts[j] : 0);
            json_key_u64(&w, "offset", (uint64_t)row->cu_seqlens[j]);
            json_key_u64(
                &w, "length",
                (uint64_t)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]));
            json_end_object(&w);
        }
        json_end_array(&w);
        json_end_object(&w);
        json_finish(&w);
        return;
    }
    printf("row %zu: %zu tokens, %zu sequences, max_seqlen %u\n", i,
           row->num_tokens, row->num_seqs, prepack_row_max_seqlen(row));
    printf("  %6s %12s %8s %8s  first tokens\n", "offset", "sequence", "start",
           "length");
    for (size_t j = 0; j < row->num_seqs; j++) {
        size_t first = (size_t)row->cu_seqlens[j];
        size_t len = (size_t)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]);
        printf("  %6zu %12llu %8u %8zu ", first,
               (unsigned long long)row->seq_ids[j],
               row->seq_starts ? row->seq_starts[j] : 0, len);
        for (size_t t = 0; t < len && t < SHOWN_TOKENS; t++)
            printf(" %u", prepack_row_token(row, first + t));
        puts(len > SHOWN_TOKENS ? " ..." : "");
    }
}

/* "I,J,..." as row numbers (each a whole decimal number): *rows is
 * malloc'd. A usage error (reported) for an empty list or a bad number. */
static int parse_row_list(const char *list, size_t **rows, size_t *n)
{
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    *rows = malloc(cap * sizeof **rows);
    *n = 0;
    if (!*rows)
        return data_error("out of memory");
    for (const char *p = list;; p++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char num[32];
        uint64_t v;
        snprintf(num, sizeof num, "%.*s", (int)(len < 31 ? len : 31), p);
        if (len == 0 || len > 20 || parse_u64(num, 0, SIZE_MAX, &v)) {
            free(*rows);
            *rows = NULL;
            return usage_error(
                "inspect", "--batch takes row numbers I,J,..., not '%s'", list);
        }
        (*rows)[(*n)++] = (size_t)v;
        if (!end)
            return EXIT_OK;
        p = end;
    }
}

/* The batch's arrays as JSON (flat or padded), for cross-checks. */
static int show_batch(prepack_reader *r, const char *list, int padded)
{
    size_t *rows = NULL, n = 0;
    int rc = parse_row_list(list, &rows, &n);
    if (rc != EXIT_OK)
        return rc;
    prepack_batch_options o = {.padded = padded};
    prepack_batch b;
    prepack_diag d = {0};
    rc = prepack_reader_batch(r, rows, n, &o, &b, &d);
    free(rows);
    if (rc != PREPACK_OK)
        return library_error(rc, &d);
    size_t cells = padded ? b.rows * b.width : b.width;
    json_writer w = {stdout, 0, 0};
    json_begin_object(&w, NULL);
    json_key_u64(&w, "rows", b.rows);
    json_key_u64(&w, "width", b.width);
    json_key_u64(&w, "max_seqlen", b.max_seqlen);
    json_key_i64s(&w, "input_ids", b.input_ids, cells);
    json_key_i64s(&w, "position_ids", b.position_ids, cells);
    json_key_i64s(&w, "doc_ids", b.doc_ids, cells);
    json_key_i64s(&w, "labels", b.labels, cells);
    if (!padded) {
        int64_t *cu = malloc((b.num_seqs + 1) * sizeof *cu);
        for (size_t i = 0; cu && i <= b.num_seqs; i++)
            cu[i] = b.cu_seqlens[i];
        if (cu)
            json_key_i64s(&w, "cu_seqlens", cu, b.num_seqs + 1);
        free(cu);
    } else {
        int64_t *m = malloc(cells * sizeof *m);
        for (size_t i = 0; m && i < cells; i++)
            m[i] = b.attention_mask[i];
        if (m)
            json_key_i64s(&w, "attention_mask", m, cells);
        free(m);
    }
    json_end_object(&w);
    json_finish(&w);
    return EXIT_OK;
}

int cmd_inspect(int argc, char **argv)
{
    uint64_t row_index = UINT64_MAX, v;
    int json = 0, opt, padded = 0;
    const char *batch = NULL;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":h", inspect_options, NULL)) != -1) {
        if (opt == 'h') {
            fputs(inspect_help, stdout);
            return EXIT_OK;
        }
        if (opt == OPT_JSON)
            json = 1;
        else if (opt == OPT_BATCH)
            batch = optarg;
        else if (opt == OPT_PADDED)
            padded = 1;
        else if (opt == OPT_ROW && parse_u64(optarg, 0, UINT64_MAX - 1, &v))
            return usage_error("inspect", "--row takes a row number, not '%s'",
                               optarg);
        else if (opt == OPT_ROW)
            row_index = v;
        else if (opt == ':')
            return usage_error("inspect", "option '%s' needs a value",
                               argv[optind - 1]);
        else
            return usage_error("inspect", "unknown option '%s'",
                               argv[optind - 1]);
    }
    if (argc - optind != 1)
        return usage_error("inspect", "give one shard set directory");
    const char *dir = argv[optind];
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    int rc = prepack_reader_open(&r, dir, NULL, &d);
    if (rc != PREPACK_OK)
        return library_error(rc, &d);
    if (batch) {
        rc = show_batch(r, batch, padded);
    } else if (row_index == UINT64_MAX) {
        summary(r, dir, json);
    } else if (row_index >= prepack_reader_row_count(r)) {
        rc = data_error("%s: no row %llu (it has %zu)", dir,
                        (unsigned long long)row_index,
                        prepack_reader_row_count(r));
    } else {
        prepack_row row;
        rc = prepack_reader_row(r, (size_t)row_index, &row, &d);
        if (rc != PREPACK_OK)
            rc = library_error(rc, &d);
        else
            show_row(&row, (size_t)row_index, json);
    }
    prepack_reader_free(r);
    return rc;
}
