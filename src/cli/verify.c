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
    "not at all (empty, or dropped: over L, or in a group over L). Prints\n"
    "one line per problem.\n"
    "\n"
    "Options:\n"
    "  --input INPUT            an input of the set, repeatable, in order\n"
    "  --format, --field, --doc-sep, --sep-position,\n"
    "  --allow-trailing-bytes\n"
    "                           how to read the inputs, as for 'prepack stats'\n"
    "  --json                   print one JSON object: dir, rows, shards,\n"
    "                           ok, problems (count) and messages (the\n"
    "                           first 1000)\n"
    "  -h, --help               show this help\n"
    "\n"
    "Exit status: 0 all checks pass, 1 a problem was found, 2 usage error.\n";

enum {
    OPT_INPUT = 256,
    OPT_FORMAT,
    OPT_FIELD,
    OPT_DOCSEP,
    OPT_SEPPOS,
    OPT_TRAILING,
    OPT_JSON
};

static const struct option verify_options[] = {
    {"input", required_argument, NULL, OPT_INPUT},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"field", required_argument, NULL, OPT_FIELD},
    {"doc-sep", required_argument, NULL, OPT_DOCSEP},
    {"sep-position", required_argument, NULL, OPT_SEPPOS},
    {"allow-trailing-bytes", no_argument, NULL, OPT_TRAILING},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

typedef struct verify_args {
    const char *dir;
    char *inputs[256];
    int ninputs;
    prepack_ingest_options ingest;
    int json;
} verify_args;

static int apply(verify_args *a, int opt, const char *val)
{
    switch (opt) {
    case OPT_INPUT:
        if (a->ninputs == 256)
            return usage_error("verify", "at most 256 --input");
        a->inputs[a->ninputs++] = (char *)val;
        return EXIT_OK;
    case OPT_JSON:
        a->json = 1;
        return EXIT_OK;
    default: /* how to read the inputs, as stats and pack do */
        for (const struct option *o = verify_options; o->name; o++)
            if (o->val == opt)
                return apply_ingest_option("verify", o->name, val, &a->ingest);
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

/* ---- problems: a line each, or kept for the JSON object ------------------ */

enum { JSON_MESSAGES = 1000 };

typedef struct problem_list {
    int json;
    size_t count;
    char *kept[JSON_MESSAGES];
    size_t nkept;
} problem_list;

static void add_problem(problem_list *p, const char *message)
{
    p->count++;
    if (!p->json)
        printf("%s\n", message);
    else if (p->nkept < JSON_MESSAGES && (p->kept[p->nkept] = strdup(message)))
        p->nkept++;
}

static void print_json(const problem_list *p, const char *dir, size_t rows,
                       size_t shards)
{
    json_writer w = {stdout, 0, 0};
    json_begin_object(&w, NULL);
    json_key_string(&w, "dir", dir);
    json_key_u64(&w, "rows", rows);
    json_key_u64(&w, "shards", shards);
    json_key_bool(&w, "ok", p->count == 0);
    json_key_u64(&w, "problems", p->count);
    json_begin_array(&w, "messages");
    for (size_t i = 0; i < p->nkept; i++)
        json_key_string(&w, NULL, p->kept[i]);
    json_end_array(&w);
    json_end_object(&w);
    json_finish(&w);
}

static void free_problems(problem_list *p)
{
    for (size_t i = 0; i < p->nkept; i++)
        free(p->kept[i]);
}

/* ---- sequences placed once, and against the inputs -------------------------- */

/* One placed sequence or chunk. */
typedef struct placed {
    uint64_t id;
    uint32_t start, len;
    size_t row;
} placed;

typedef struct coverage {
    const prepack_store *store; /* NULL without --input */
    uint32_t max_len;
    prepack_overlong overlong; /* the set's policy, from its manifest */
    uint32_t pad_multiple;     /* 1 = none */
    placed *items; /* every item of every readable row */
    size_t nitems, cap;
    uint32_t *buf; /* one input sequence */
    problem_list *sink;
    int out_of_memory;
} coverage;

/* One verify run: what the reader's callbacks reach. */
typedef struct verify_run {
    problem_list found;
    coverage coverage;
} verify_run;

static void problem(coverage *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void problem(coverage *c, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    add_problem(c->sink, message);
}

/* Row r's item j against the input it came from (with --input). */
static void check_tokens(coverage *c, const prepack_row *row, size_t r,
                         size_t j, const placed *p)
{
    size_t n = prepack_store_sequence_count(c->store);
    if (p->id >= n) {
        problem(c, "row %zu: sequence id %llu, but the inputs hold %zu", r,
                (unsigned long long)p->id, n);
        return;
    }
    const uint32_t *lengths = prepack_store_lengths(c->store);
    if ((uint64_t)p->start + p->len > lengths[p->id]) {
        problem(c, "row %zu: sequence %llu tokens %u..%u, past its %u", r,
                (unsigned long long)p->id, p->start, p->start + p->len,
                lengths[p->id]);
        return;
    }
    prepack_store_copy(c->store, (size_t)p->id, c->buf);
    size_t first = (size_t)row->cu_seqlens[j];
    for (uint32_t t = 0; t < p->len; t++)
        if (prepack_row_token(row, first + t) != c->buf[p->start + t]) {
            problem(c,
                    "row %zu: sequence %llu token %u is %u, the input has "
                    "%u",
                    r, (unsigned long long)p->id, p->start + t,
                    prepack_row_token(row, first + t), c->buf[p->start + t]);
            return;
        }
}

static int by_id_then_start(const void *x, const void *y)
{
    const placed *a = x, *b = y;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return a->row < b->row ? -1
                           : a->row > b->row; /* messages name rows in order */
}

/* Input sequences first..last (inclusive) appear in no row: one line for
 * the run, not one per sequence. */
static void report_missing(coverage *c, size_t first, size_t last)
{
    if (first == last)
        problem(c, "sequence %zu of the inputs is in no row", first);
    else
        problem(c, "sequences %zu..%zu of the inputs (%zu) are in no row",
                first, last, last - first + 1);
}

/* Whether input sequence `id` of `len` tokens may be absent: empty, or
 * longer than L under --overlong drop. */
static int may_be_absent(const coverage *c, uint32_t len)
{
    return len == 0 ||
           (len > c->max_len && c->overlong == PREPACK_OVERLONG_DROP);
}

/* Whether `got` tokens of a sequence of `len` is what the set's overlong
 * policy places: all of them, or the first L under truncate. */
static int placed_as_planned(const coverage *c, uint32_t len, uint64_t got)
{
    return got == len || (len > c->max_len && got == c->max_len &&
                          c->overlong == PREPACK_OVERLONG_TRUNCATE);
}

/* Whether group g (sequences first[g] .. first[g + 1] - 1) is one the
 * planner drops whole: its members, each rounded up to pad_multiple,
 * sum past L under --overlong drop, though each may fit alone. */
static int group_dropped(const coverage *c, const uint64_t *first, size_t g)
{
    const uint32_t *lengths = prepack_store_lengths(c->store);
    uint64_t m = c->pad_multiple > 1 ? c->pad_multiple : 1, sum = 0;
    for (uint64_t id = first[g]; id < first[g + 1]; id++)
        sum += (lengths[id] + m - 1) / m * m;
    return c->overlong == PREPACK_OVERLONG_DROP && sum > c->max_len;
}

/* With --input: every input sequence is in the set as the manifest's
 * overlong policy says (whole, truncated to L, split into chunks, or
 * absent when empty or dropped), so the set holds exactly the input. */
static void check_inputs_covered(coverage *c)
{
    const uint32_t *lengths = prepack_store_lengths(c->store);
    size_t n = prepack_store_sequence_count(c->store);
    size_t groups = 0, g = 0, i = 0, missing_from = SIZE_MAX;
    const uint64_t *first = prepack_store_group_first(c->store, &groups);
    int dropped = 0; /* the group holding id is dropped whole */
    for (size_t id = 0; id < n; id++) {
        if (first && g < groups && first[g] == id)
            dropped = group_dropped(c, first, g++);
        while (i < c->nitems && c->items[i].id < id)
            i++;
        uint64_t got = 0;
        for (; i < c->nitems && c->items[i].id == id; i++)
            got += c->items[i].len;
        int absent =
            got == 0 && !dropped && !may_be_absent(c, lengths[id]);
        if (absent && missing_from == SIZE_MAX)
            missing_from = id;
        if (!absent && missing_from != SIZE_MAX) {
            report_missing(c, missing_from, id - 1);
            missing_from = SIZE_MAX;
        }
        if (got && !placed_as_planned(c, lengths[id], got))
            problem(c,
                    "sequence %zu: %llu of its %u tokens placed (overlong "
                    "policy %s, L %u)",
                    id, (unsigned long long)got, lengths[id],
                    prepack_overlong_name(c->overlong), c->max_len);
    }
    if (missing_from != SIZE_MAX)
        report_missing(c, missing_from, n - 1);
}

/* After all rows, with the items sorted by id: no token of a sequence
 * placed twice; with --input, the set holds exactly the input's
 * sequences. Memory follows the items the set holds, never the ids it
 * claims (a damaged set may claim any). */
static void check_placement(coverage *c)
{
    if (c->nitems > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(c->items, c->nitems, sizeof *c->items, by_id_then_start);
    for (size_t k = 1; k < c->nitems; k++) {
        const placed *p = &c->items[k], *q = &c->items[k - 1];
        if (p->id == q->id && p->start < (uint64_t)q->start + q->len)
            problem(c,
                    "row %zu: sequence %llu tokens from %u placed again "
                    "(row %zu has them)",
                    p->row, (unsigned long long)p->id, p->start, q->row);
    }
    if (c->store)
        check_inputs_covered(c);
}

static int remember(coverage *c, const placed *p)
{
    if (c->nitems == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 1024;
        placed *q = realloc(c->items, cap * sizeof *q);
        if (!q)
            return -1;
        c->items = q;
        c->cap = cap;
    }
    c->items[c->nitems++] = *p;
    return 0;
}

/* Each row that passed the reader's checks (prepack_reader_verify_rows
 * reports the others): its items remembered, their tokens checked
 * against the inputs. */
static void check_row(void *opaque, size_t i, const prepack_row *row)
{
    verify_run *v = opaque;
    coverage *c = &v->coverage;
    if (c->out_of_memory)
        return;
    for (size_t j = 0; j < row->num_seqs; j++) {
        placed p = {row->seq_ids[j], row->seq_starts ? row->seq_starts[j] : 0,
                    (uint32_t)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]),
                    i};
        if (c->store)
            check_tokens(c, row, i, j, &p);
        if (remember(c, &p) != 0) {
            c->out_of_memory = 1;
            return;
        }
    }
}

static void reader_problem(void *opaque, const prepack_diag *d)
{
    verify_run *v = opaque;
    add_problem(&v->found, d->message);
}

/* The longest input sequence, for the one buffer check_tokens uses. */
static uint32_t longest_input(const prepack_store *store)
{
    uint32_t longest = 0;
    for (size_t i = 0; store && i < prepack_store_sequence_count(store); i++)
        if (prepack_store_lengths(store)[i] > longest)
            longest = prepack_store_lengths(store)[i];
    return longest;
}

int cmd_verify(int argc, char **argv)
{
    verify_args a;
    int rc = parse(argc, argv, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    verify_run v = {.found = {.json = a.json}};
    coverage *c = &v.coverage;
    /* a damaged shard is one problem among others, not the end of the check */
    prepack_reader_options ro = {.open_damaged = 1};
    if (prepack_reader_open(&r, a.dir, &ro, &d) != PREPACK_OK) {
        add_problem(&v.found, d.message);
        if (a.json)
            print_json(&v.found, a.dir, 0, 0);
        free_problems(&v.found);
        return EXIT_DATA;
    }
    *c = (coverage){.max_len = prepack_reader_max_seq_len(r),
                    .overlong = prepack_reader_overlong(r),
                    .pad_multiple = prepack_reader_pad_multiple(r),
                    .sink = &v.found};
    prepack_store *store = NULL;
    rc = a.ninputs ? ingest_inputs(a.inputs, a.ninputs, NULL, &a.ingest, &store)
                   : EXIT_OK;
    if (rc == EXIT_OK) {
        c->store = store;
        c->buf = malloc(((size_t)longest_input(store) + 1) * sizeof *c->buf);
        if (c->buf)
            prepack_reader_verify_rows(r, reader_problem, check_row, &v);
        if (c->buf && !c->out_of_memory)
            check_placement(c);
        if (!c->buf || c->out_of_memory)
            rc = data_error("out of memory");
    }
    free(c->items);
    free(c->buf);
    prepack_store_free(store);
    size_t rows = prepack_reader_row_count(r);
    size_t shards = prepack_reader_shard_count(r);
    prepack_reader_free(r);
    size_t problems = v.found.count;
    if (rc == EXIT_OK && a.json)
        print_json(&v.found, a.dir, rows, shards);
    free_problems(&v.found);
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
