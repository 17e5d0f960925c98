/* prepack verify: check a shard set end to end, and with --input, that its
 * rows hold exactly the input's tokens. One line per problem; exit 0 only
 * when there is none. */
#define _GNU_SOURCE /* getopt_long */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char verify_help[] =
    "usage: prepack verify DIR [--input INPUT]... [OPTIONS]\n"
    "\n"
    "Checks the shard set in DIR: the manifest, each shard's xxh64, every\n"
    "frame's checksum and every row (cu_seqlens from 0 strictly up to the\n"
    "row's length, at most max_seq_len tokens, sequence ids placed once\n"
    "unless split). With --input (the inputs it was packed from, in order)\n"
    "also that every placed sequence or chunk holds exactly the input's\n"
    "tokens, and that each sequence is placed whole, truncated to L, or\n"
    "not at all (dropped or empty). Prints one line per problem.\n"
    "\n"
    "Options:\n"
    "  --input INPUT            an input of the set, repeatable, in order\n"
    "  --format, --field, --doc-sep, --sep-position\n"
    "                           how to read the inputs, as for 'prepack stats'\n"
    "  -h, --help               show this help\n"
    "\n"
    "Exit status: 0 all checks pass, 1 a problem was found, 2 usage error.\n";

enum { OPT_INPUT = 256, OPT_FORMAT, OPT_FIELD, OPT_DOCSEP, OPT_SEPPOS };

static const struct option verify_options[] = {
    {"input", required_argument, NULL, OPT_INPUT},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"field", required_argument, NULL, OPT_FIELD},
    {"doc-sep", required_argument, NULL, OPT_DOCSEP},
    {"sep-position", required_argument, NULL, OPT_SEPPOS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

typedef struct verify_args {
    const char *dir;
    const char *inputs[256];
    int ninputs;
    prepack_ingest_options ingest;
} verify_args;

static int apply(verify_args *a, int opt, const char *val)
{
    uint64_t v;
    switch (opt) {
    case OPT_INPUT:
        if (a->ninputs == 256)
            return usage_error("verify", "at most 256 --input");
        a->inputs[a->ninputs++] = val;
        return EXIT_OK;
    case OPT_FORMAT:
        if (prepack_format_parse(val, &a->ingest.format))
            return usage_error("verify", "unknown --format '%s'", val);
        return EXIT_OK;
    case OPT_FIELD:
        a->ingest.field = val;
        return EXIT_OK;
    case OPT_DOCSEP:
        if (parse_u64(val, 0, UINT32_MAX, &v))
            return usage_error("verify", "--doc-sep must be a token id");
        a->ingest.has_doc_sep = 1;
        a->ingest.doc_sep = (uint32_t)v;
        return EXIT_OK;
    case OPT_SEPPOS:
        if (strcmp(val, "before") && strcmp(val, "after"))
            return usage_error("verify", "--sep-position before|after");
        a->ingest.sep_position =
            strcmp(val, "before") ? PREPACK_SEP_AFTER : PREPACK_SEP_BEFORE;
        return EXIT_OK;
    default:
        return usage_error("verify", "unknown option");
    }
}

static int parse(int argc, char **argv, verify_args *a)
{
    memset(a, 0, sizeof *a);
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", verify_options, NULL)) != -1) {
        if (opt == 'h') {
            fputs(verify_help, stdout);
            return -1;
        }
        if (opt == '?' || opt == ':')
            return usage_error("verify", "bad option '%s'", argv[optind - 1]);
        int rc = apply(a, opt, optarg);
        if (rc != EXIT_OK)
            return rc;
    }
    if (argc - optind != 1)
        return usage_error("verify", "give one shard set directory");
    a->dir = argv[optind];
    return EXIT_OK;
}

static void print_problem(void *opaque, const prepack_diag *d)
{
    (void)opaque;
    printf("%s\n", d->message);
}

/* ---- against the inputs ----------------------------------------------------- */

typedef struct coverage {
    const prepack_store *store;  /* NULL without --input */
    uint32_t max_len;
    uint64_t *placed;            /* tokens placed per sequence id */
    uint32_t *buf;
    size_t n;
    size_t problems;
} coverage;

static void problem(coverage *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void problem(coverage *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    c->problems++;
}

static void check_sequence(coverage *c, const prepack_row *row, size_t r,
                           size_t j)
{
    uint64_t id = row->seq_ids[j];
    uint32_t start = row->seq_starts ? row->seq_starts[j] : 0;
    uint32_t len = (uint32_t)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]);
    if (id >= c->n) {
        problem(c, "row %zu: sequence id %llu, but the inputs hold %zu", r,
                (unsigned long long)id, c->n);
        return;
    }
    if (!row->seq_starts && c->placed[id])
        problem(c, "row %zu: sequence %llu placed twice", r,
                (unsigned long long)id);
    c->placed[id] += len;
    if (!c->store)
        return;
    const uint32_t *lengths = prepack_store_lengths(c->store);
    if ((uint64_t)start + len > lengths[id]) {
        problem(c, "row %zu: sequence %llu tokens %u..%u, past its %u", r,
                (unsigned long long)id, start, start + len, lengths[id]);
        return;
    }
    prepack_store_copy(c->store, (size_t)id, c->buf);
    size_t first = (size_t)row->cu_seqlens[j];
    for (uint32_t t = 0; t < len; t++)
        if (prepack_row_token(row, first + t) != c->buf[start + t]) {
            problem(c, "row %zu: sequence %llu token %u is %u, the input has "
                    "%u",
                    r, (unsigned long long)id, start + t,
                    prepack_row_token(row, first + t), c->buf[start + t]);
            return;
        }
}

/* After all rows: each sequence placed whole, truncated to L, or not. */
static void check_complete(coverage *c)
{
    if (!c->store)
        return;
    const uint32_t *lengths = prepack_store_lengths(c->store);
    for (size_t id = 0; id < c->n; id++) {
        uint64_t got = c->placed[id];
        if (got != 0 && got != lengths[id] &&
            !(lengths[id] > c->max_len && got == c->max_len))
            problem(c, "sequence %zu: %llu of its %u tokens placed", id,
                    (unsigned long long)got, lengths[id]);
    }
}

static int load_inputs(const verify_args *a, prepack_store **store)
{
    prepack_diag d = {0};
    int rc = prepack_store_create(store, NULL, &d);
    for (int i = 0; rc == PREPACK_OK && i < a->ninputs; i++)
        rc = prepack_ingest_file(*store, a->inputs[i], &a->ingest, &d);
    if (rc == PREPACK_OK)
        rc = prepack_store_finish(*store, &d);
    return rc == PREPACK_OK ? EXIT_OK : data_error("%s", d.message);
}

static void check_rows(prepack_reader *r, coverage *c)
{
    for (size_t i = 0; i < prepack_reader_row_count(r); i++) {
        prepack_row row;
        prepack_diag d = {0};
        if (prepack_reader_row(r, i, &row, &d) != PREPACK_OK)
            continue; /* reported by prepack_reader_verify */
        for (size_t j = 0; j < row.num_seqs; j++)
            check_sequence(c, &row, i, j);
    }
    check_complete(c);
}

int cmd_verify(int argc, char **argv)
{
    verify_args a;
    int rc = parse(argc, argv, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    if (prepack_reader_open(&r, a.dir, NULL, &d) != PREPACK_OK) {
        printf("%s\n", d.message);
        return EXIT_DATA;
    }
    size_t problems = prepack_reader_verify(r, print_problem, NULL);
    coverage c = {NULL, prepack_reader_max_seq_len(r), NULL, NULL, 0, 0};
    prepack_store *store = NULL;
    rc = a.ninputs ? load_inputs(&a, &store) : EXIT_OK;
    if (rc == EXIT_OK) {
        c.store = store;
        c.n = store ? prepack_store_sequence_count(store) : SIZE_MAX;
        /* without inputs ids are only checked for repeats */
        size_t ids = store ? c.n : 0;
        for (size_t i = 0; !store && i < prepack_reader_row_count(r); i++) {
            prepack_row row;
            if (prepack_reader_row(r, i, &row, &d) == PREPACK_OK)
                for (size_t j = 0; j < row.num_seqs; j++)
                    ids = row.seq_ids[j] + 1 > ids ? (size_t)row.seq_ids[j] + 1
                                                   : ids;
        }
        c.n = ids;
        c.placed = calloc(ids + 1, sizeof *c.placed);
        uint32_t longest = 0;
        for (size_t i = 0; store && i < c.n; i++)
            if (prepack_store_lengths(store)[i] > longest)
                longest = prepack_store_lengths(store)[i];
        c.buf = malloc(((size_t)longest + 1) * sizeof *c.buf);
        if (!c.placed || !c.buf)
            rc = data_error("out of memory");
        else
            check_rows(r, &c);
    }
    problems += c.problems;
    free(c.placed);
    free(c.buf);
    prepack_store_free(store);
    size_t rows = prepack_reader_row_count(r);
    prepack_reader_free(r);
    if (rc != EXIT_OK)
        return rc;
    if (problems) {
        fprintf(stderr, "prepack verify: %s: %zu problem%s\n", a.dir, problems,
                problems == 1 ? "" : "s");
        return EXIT_DATA;
    }
    fprintf(stderr, "prepack verify: %s: %zu rows, all checks pass\n", a.dir,
            rows);
    return EXIT_OK;
}
