/* prepack stats: plan rows for a lengths file and report what packing buys
 * over naive padded batching. Needs lengths only, never tokens. */
#define _GNU_SOURCE /* getopt_long */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char stats_help[] =
    "usage: prepack stats INPUT... --max-seq-len L [OPTIONS]\n"
    "       prepack stats --lengths FILE --max-seq-len L [OPTIONS]\n"
    "\n"
    "Plan packed rows for tokenized INPUTs (JSONL, Megatron .bin/.idx,\n"
    "llm.c .bin, raw uint16 tokens; read in order, sequence ids run over\n"
    "all of them) or for the sequence lengths in FILE (one non-negative\n"
    "integer per line, '-' for stdin), and report the length distribution,\n"
    "rows against the lower bound, efficiency, and the padding and\n"
    "attention cost that packing removes compared with naive padded\n"
    "batches.\n"
    "\n"
    "Options:\n"
    "  --lengths FILE           a lengths file instead of INPUTs\n"
    "  --max-seq-len L          row capacity in tokens (required, 1..16777216)\n"
    "  --algo ALGO              ffd | bfd | nextfit (default: ffd)\n"
    "  --overlong POLICY        sequences longer than L: error | truncate |\n"
    "                           split | drop (default: error)\n"
    "  --max-seqs-per-row K     at most K sequences in a row (default: 0,\n"
    "                           unlimited)\n"
    "  --batch-size B           batch size of the naive padded batching it\n"
    "                           compares against (default: 8)\n"
    "  --json                   print one JSON object (keys in docs/CLI.md)\n"
    "\n"
    "Input options:\n"
    "  --format FMT             auto | jsonl | megatron | llmc | raw-u16\n"
    "                           (default: auto, by name and magic)\n"
    "  --field NAME             JSONL token field (default: input_ids)\n"
    "  --doc-sep ID             document delimiter of llm.c and raw files\n"
    "                           (default: from the llm.c header, 50256 for\n"
    "                           GPT-2, 128000 for LLaMA-3; required for raw)\n"
    "  --sep-position POS       before | after: the delimiter opens or\n"
    "                           closes a document (default: before for\n"
    "                           llm.c, after for raw)\n"
    "  --token-dtype DT         auto | uint16 | uint32 (default: auto,\n"
    "                           uint16 while every id fits)\n"
    "  --tmp-dir DIR            where the token store lives while running\n"
    "                           (default: $TMPDIR or /tmp); always removed\n"
    "  -h, --help               show this help\n"
    "\n"
    "Exit status: 0 success, 1 bad input, 2 usage error.\n";

typedef struct stats_args {
    const char *lengths_path;
    char **inputs;
    int ninputs;
    prepack_plan_options plan;
    prepack_ingest_options ingest;
    prepack_store_options store;
    uint32_t batch_size;
    int json;
} stats_args;

enum { OPT_LENGTHS = 256, OPT_MAXLEN, OPT_ALGO, OPT_OVERLONG, OPT_PERROW,
       OPT_BATCH, OPT_JSON, OPT_FORMAT, OPT_FIELD, OPT_DOCSEP, OPT_SEPPOS,
       OPT_DTYPE, OPT_TMPDIR };

static const struct option stats_options[] = {
    {"lengths", required_argument, NULL, OPT_LENGTHS},
    {"max-seq-len", required_argument, NULL, OPT_MAXLEN},
    {"algo", required_argument, NULL, OPT_ALGO},
    {"overlong", required_argument, NULL, OPT_OVERLONG},
    {"max-seqs-per-row", required_argument, NULL, OPT_PERROW},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"json", no_argument, NULL, OPT_JSON},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"field", required_argument, NULL, OPT_FIELD},
    {"doc-sep", required_argument, NULL, OPT_DOCSEP},
    {"sep-position", required_argument, NULL, OPT_SEPPOS},
    {"token-dtype", required_argument, NULL, OPT_DTYPE},
    {"tmp-dir", required_argument, NULL, OPT_TMPDIR},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* The options that say how to read INPUTs. */
static int apply_input_option(stats_args *a, int opt, const char *val)
{
    uint64_t v;
    switch (opt) {
    case OPT_FORMAT:
        if (prepack_format_parse(val, &a->ingest.format))
            return usage_error("stats",
                               "--format must be auto, jsonl, megatron, "
                               "llmc or raw-u16, not '%s'",
                               val);
        return EXIT_OK;
    case OPT_FIELD:
        if (!*val)
            return usage_error("stats", "--field needs a name");
        a->ingest.field = val;
        return EXIT_OK;
    case OPT_DOCSEP:
        if (parse_u64(val, 0, UINT32_MAX, &v))
            return usage_error("stats",
                               "--doc-sep must be a token id, not '%s'", val);
        a->ingest.has_doc_sep = 1;
        a->ingest.doc_sep = (uint32_t)v;
        return EXIT_OK;
    case OPT_SEPPOS:
        if (strcmp(val, "before") && strcmp(val, "after"))
            return usage_error("stats",
                               "--sep-position must be before or after, not "
                               "'%s'",
                               val);
        a->ingest.sep_position = strcmp(val, "before") == 0
                                     ? PREPACK_SEP_BEFORE
                                     : PREPACK_SEP_AFTER;
        return EXIT_OK;
    case OPT_DTYPE:
        if (prepack_dtype_parse(val, &a->store.dtype))
            return usage_error("stats",
                               "--token-dtype must be auto, uint16 or "
                               "uint32, not '%s'",
                               val);
        return EXIT_OK;
    case OPT_TMPDIR:
        a->store.tmp_dir = val;
        return EXIT_OK;
    default:
        return usage_error("stats", "unknown option");
    }
}

/* Applies one option; returns EXIT_OK or a usage error. */
static int apply_option(stats_args *a, int opt, const char *val)
{
    uint64_t v;
    switch (opt) {
    case OPT_LENGTHS:
        a->lengths_path = val;
        return EXIT_OK;
    case OPT_MAXLEN:
        if (parse_u64(val, 1, PREPACK_MAX_SEQ_LEN_LIMIT, &v))
            return usage_error("stats",
                               "--max-seq-len must be an integer in 1..%u, "
                               "not '%s'",
                               PREPACK_MAX_SEQ_LEN_LIMIT, val);
        a->plan.max_seq_len = (uint32_t)v;
        return EXIT_OK;
    case OPT_ALGO:
        if (prepack_algo_parse(val, &a->plan.algo))
            return usage_error("stats",
                               "--algo must be ffd, bfd or nextfit, not '%s'",
                               val);
        return EXIT_OK;
    case OPT_OVERLONG:
        if (prepack_overlong_parse(val, &a->plan.overlong))
            return usage_error("stats",
                               "--overlong must be error, truncate, split or "
                               "drop, not '%s'",
                               val);
        return EXIT_OK;
    case OPT_PERROW:
        if (parse_u64(val, 0, UINT32_MAX, &v))
            return usage_error("stats",
                               "--max-seqs-per-row must be a non-negative "
                               "integer, not '%s'",
                               val);
        a->plan.max_seqs_per_row = (uint32_t)v;
        return EXIT_OK;
    case OPT_BATCH:
        if (parse_u64(val, 1, UINT32_MAX, &v))
            return usage_error("stats",
                               "--batch-size must be a positive integer, "
                               "not '%s'",
                               val);
        a->batch_size = (uint32_t)v;
        return EXIT_OK;
    case OPT_JSON:
        a->json = 1;
        return EXIT_OK;
    default:
        return apply_input_option(a, opt, val);
    }
}

/* Returns -1 when --help was printed, else EXIT_OK or a usage error. */
static int parse_args(int argc, char **argv, stats_args *a)
{
    memset(a, 0, sizeof *a);
    a->batch_size = PREPACK_DEFAULT_BATCH_SIZE;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", stats_options, NULL)) != -1) {
        if (opt == 'h') {
            fputs(stats_help, stdout);
            return -1;
        }
        if (opt == '?')
            return usage_error("stats", "unknown option '%s'",
                               argv[optind - 1]);
        if (opt == ':')
            return usage_error("stats", "option '%s' needs a value",
                               argv[optind - 1]);
        int rc = apply_option(a, opt, optarg);
        if (rc != EXIT_OK)
            return rc;
    }
    a->inputs = argv + optind;
    a->ninputs = argc - optind;
    if (!a->lengths_path && a->ninputs == 0)
        return usage_error("stats", "give INPUT files or --lengths FILE");
    if (a->lengths_path && a->ninputs > 0)
        return usage_error("stats",
                           "give INPUT files or --lengths FILE, not both");
    if (a->plan.max_seq_len == 0)
        return usage_error("stats", "--max-seq-len L is required");
    return EXIT_OK;
}

/* ---- output ------------------------------------------------------------ */

static double pct(double part, double whole)
{
    return whole > 0 ? 100.0 * part / whole : 0.0;
}

static void print_layout_row(const char *label, const prepack_layout *l)
{
    char rows[32], slots[32], pad[32];
    printf("  %-34s %14s %16s %16s %6.2f%% %11.4g\n", label,
           fmt_count(rows, l->rows), fmt_count(slots, l->slots),
           fmt_count(pad, l->pad_tokens), 100.0 * l->pad_fraction,
           l->attention_cost);
}

static void print_overlong(const prepack_plan_stats *s,
                           const prepack_plan_options *o)
{
    char a[32], b[32];
    if (s->overlong == 0) {
        printf("  overlong             none longer than %u\n", s->max_seq_len);
        return;
    }
    printf("  overlong             %s longer than %u, %s: ",
           fmt_count(a, s->overlong), s->max_seq_len,
           prepack_overlong_name(o->overlong));
    if (o->overlong == PREPACK_OVERLONG_TRUNCATE)
        printf("%s tokens cut\n", fmt_count(b, s->truncated_tokens));
    else if (o->overlong == PREPACK_OVERLONG_SPLIT)
        printf("%s chunks\n", fmt_count(b, s->split_chunks));
    else
        printf("%s tokens dropped\n", fmt_count(b, s->dropped_tokens));
}

typedef struct timings {
    double read_s, plan_s;
} timings;

static void print_inputs(const prepack_store *store)
{
    char b1[32], b2[32], b3[32];
    for (size_t i = 0; i < prepack_store_input_count(store); i++) {
        prepack_input_info in;
        prepack_store_input(store, i, &in);
        printf("  input                %s (%s): %s sequences, %s tokens",
               in.path, prepack_format_name(in.format),
               fmt_count(b1, in.sequences), fmt_count(b2, in.tokens));
        if (in.documents)
            printf(", %s documents", fmt_count(b3, in.documents));
        if (in.partial_sequences)
            printf(", %s partial", fmt_count(b3, in.partial_sequences));
        putchar('\n');
    }
    printf("  token store          %s\n",
           prepack_dtype_name(prepack_store_dtype(store)));
}

static void print_lengths(const prepack_length_summary *l, uint32_t max_len)
{
    char b[6][32];
    printf("  lengths              min %s, median %s, p90 %s, p99 %s, max %s; "
           "%s over %u\n",
           fmt_count(b[0], l->min), fmt_count(b[1], l->median),
           fmt_count(b[2], l->p90), fmt_count(b[3], l->p99),
           fmt_count(b[4], l->max), fmt_count(b[5], l->over_max_seq_len),
           max_len);
}

static void print_text(const stats_args *a, const prepack_store *store,
                       const prepack_report *r, timings t)
{
    const prepack_plan_stats *s = &r->plan;
    char b1[32], b2[32], b3[32];
    const char *what = a->lengths_path ? a->lengths_path : a->inputs[0];
    printf("prepack stats: %s%s, max_seq_len %u, %s\n", what,
           a->ninputs > 1 ? " and more" : "", s->max_seq_len,
           prepack_algo_name(a->plan.algo));
    if (store)
        print_inputs(store);
    printf("  sequences            %s (%s empty, skipped)\n",
           fmt_count(b1, s->sequences), fmt_count(b2, s->zero_length));
    print_lengths(&r->lengths, s->max_seq_len);
    print_overlong(s, &a->plan);
    printf("  tokens packed        %s in %s items\n",
           fmt_count(b1, s->tokens), fmt_count(b2, s->items));
    printf("  rows                 %s (lower bound %s, +%.3f%%)\n",
           fmt_count(b1, s->rows), fmt_count(b3, s->lower_bound),
           s->lower_bound ? pct((double)(s->rows - s->lower_bound),
                                (double)s->lower_bound)
                          : 0.0);
    printf("  efficiency           %.3f%% of row capacity holds tokens\n",
           100.0 * s->efficiency);
    printf("  sequences per row    %.2f mean, %u max\n\n",
           s->mean_items_per_row, s->max_items_per_row);

    printf("  %-34s %14s %16s %16s %7s %11s\n", "layout", "rows", "slots",
           "pad tokens", "pad", "attention");
    char label[64];
    snprintf(label, sizeof label, "naive batches of %u, input order",
             r->batch_size);
    print_layout_row(label, &r->naive_batch);
    snprintf(label, sizeof label, "every sequence padded to %u",
             s->max_seq_len);
    print_layout_row(label, &r->padded_to_max);
    print_layout_row("packed rows (varlen attention)", &r->packed);

    const prepack_layout *n = &r->naive_batch, *p = &r->packed;
    printf("\n  packing removes %s of %s naive pad tokens (%.3f%%); "
           "computes %.3fx the token slots\n",
           fmt_count(b1, n->pad_tokens > p->pad_tokens
                             ? n->pad_tokens - p->pad_tokens
                             : 0),
           fmt_count(b2, n->pad_tokens),
           pct((double)n->pad_tokens - (double)p->pad_tokens,
               (double)n->pad_tokens),
           n->slots ? (double)p->slots / (double)n->slots : 0.0);
    printf("  attention: varlen packed is %.3fx naive batches "
           "(dense L x L packed would be %.3fx)\n",
           n->attention_cost > 0 ? p->attention_cost / n->attention_cost : 0,
           n->attention_cost > 0
               ? r->packed_dense_attention_cost / n->attention_cost
               : 0);
    printf("  time                 read %.3f s, plan %.3f s\n", t.read_s,
           t.plan_s);
}

static void json_layout(json_writer *w, const char *key,
                        const prepack_layout *l)
{
    json_begin_object(w, key);
    json_key_u64(w, "rows", l->rows);
    json_key_u64(w, "slots", l->slots);
    json_key_u64(w, "pad_tokens", l->pad_tokens);
    json_key_double(w, "pad_fraction", l->pad_fraction);
    json_key_double(w, "attention_cost", l->attention_cost);
    json_end_object(w);
}

static void json_inputs(json_writer *w, const prepack_store *store)
{
    json_key_string(w, "token_dtype",
                    prepack_dtype_name(prepack_store_dtype(store)));
    json_begin_array(w, "inputs");
    for (size_t i = 0; i < prepack_store_input_count(store); i++) {
        prepack_input_info in;
        prepack_store_input(store, i, &in);
        json_begin_object(w, NULL);
        json_key_string(w, "path", in.path);
        json_key_string(w, "format", prepack_format_name(in.format));
        json_key_u64(w, "first_sequence", in.first_sequence);
        json_key_u64(w, "sequences", in.sequences);
        json_key_u64(w, "tokens", in.tokens);
        json_key_u64(w, "documents", in.documents);
        json_key_u64(w, "partial_sequences", in.partial_sequences);
        json_end_object(w);
    }
    json_end_array(w);
}

static void json_lengths(json_writer *w, const prepack_length_summary *l)
{
    json_begin_object(w, "lengths");
    json_key_u64(w, "min", l->min);
    json_key_u64(w, "median", l->median);
    json_key_u64(w, "p90", l->p90);
    json_key_u64(w, "p99", l->p99);
    json_key_u64(w, "max", l->max);
    json_key_u64(w, "over_max_seq_len", l->over_max_seq_len);
    json_end_object(w);
}

static void print_json(const stats_args *a, const prepack_store *store,
                       const prepack_report *r, timings t)
{
    const prepack_plan_stats *s = &r->plan;
    json_writer w = {stdout, 0, 0};
    json_begin_object(&w, NULL);
    json_key_string(&w, "prepack_version", prepack_version());
    if (a->lengths_path)
        json_key_string(&w, "input", a->lengths_path);
    else
        json_inputs(&w, store);
    json_begin_object(&w, "options");
    json_key_u64(&w, "max_seq_len", s->max_seq_len);
    json_key_string(&w, "algorithm", prepack_algo_name(a->plan.algo));
    json_key_string(&w, "overlong", prepack_overlong_name(a->plan.overlong));
    json_key_u64(&w, "max_seqs_per_row", a->plan.max_seqs_per_row);
    json_key_u64(&w, "batch_size", r->batch_size);
    json_end_object(&w);
    json_key_u64(&w, "sequences", s->sequences);
    json_lengths(&w, &r->lengths);
    json_key_u64(&w, "input_tokens", s->input_tokens);
    json_key_u64(&w, "zero_length", s->zero_length);
    json_begin_object(&w, "overlong");
    json_key_u64(&w, "sequences", s->overlong);
    json_key_u64(&w, "truncated_tokens", s->truncated_tokens);
    json_key_u64(&w, "split_chunks", s->split_chunks);
    json_key_u64(&w, "dropped_sequences", s->dropped_sequences);
    json_key_u64(&w, "dropped_tokens", s->dropped_tokens);
    json_end_object(&w);
    json_key_u64(&w, "items", s->items);
    json_key_u64(&w, "tokens", s->tokens);
    json_key_u64(&w, "rows", s->rows);
    json_key_u64(&w, "lower_bound", s->lower_bound);
    json_key_double(&w, "efficiency", s->efficiency);
    json_key_double(&w, "mean_seqs_per_row", s->mean_items_per_row);
    json_key_u64(&w, "max_seqs_in_row", s->max_items_per_row);
    json_begin_object(&w, "padding");
    json_layout(&w, "naive_batch", &r->naive_batch);
    json_layout(&w, "padded_to_max", &r->padded_to_max);
    json_layout(&w, "packed", &r->packed);
    json_end_object(&w);
    json_key_double(&w, "packed_dense_attention_cost",
                    r->packed_dense_attention_cost);
    json_begin_object(&w, "timings");
    json_key_double(&w, "read_s", t.read_s);
    json_key_double(&w, "plan_s", t.plan_s);
    json_end_object(&w);
    json_end_object(&w);
    json_finish(&w);
}

/* ---- the command ----------------------------------------------------------- */

/* Where the lengths came from: a lengths file, or a token store. */
typedef struct lengths_source {
    uint32_t *owned;          /* parsed from a lengths file */
    prepack_store *store;     /* or ingested */
    const uint32_t *lengths;
    size_t n;
} lengths_source;

/* A planner failure, told in terms of the input: for a lengths file the
 * line is the sequence + 1; for inputs, the input and its record. */
static int plan_error(const stats_args *a, const lengths_source *src, int rc,
                      const prepack_diag *d)
{
    const char *hint = "(choose --overlong truncate, split or drop)";
    if (rc == PREPACK_EOVERLONG && a->lengths_path)
        return data_error("%s:%llu: %s %s", a->lengths_path,
                          (unsigned long long)d->record + 1, d->message, hint);
    if (rc == PREPACK_EOVERLONG) {
        for (size_t i = prepack_store_input_count(src->store); i-- > 0;) {
            prepack_input_info in;
            prepack_store_input(src->store, i, &in);
            if (d->record >= in.first_sequence)
                return data_error("%s: sequence %llu has %u tokens, more "
                                  "than max_seq_len %u %s",
                                  in.path,
                                  (unsigned long long)(d->record -
                                                       in.first_sequence),
                                  src->lengths[d->record],
                                  a->plan.max_seq_len, hint);
        }
    }
    return data_error("%s", d->message[0] ? d->message : prepack_strerror(rc));
}

static int load_lengths_file(const stats_args *a, lengths_source *src)
{
    char *text = NULL;
    size_t size = 0;
    int rc = read_whole_file(a->lengths_path, &text, &size);
    if (rc != EXIT_OK)
        return rc;
    const char *name = strcmp(a->lengths_path, "-") ? a->lengths_path
                                                    : "stdin";
    prepack_diag diag = {0};
    int prc = prepack_lengths_parse(text, size, name, &src->owned, &src->n,
                                    NULL, &diag);
    free(text);
    if (prc != PREPACK_OK)
        return data_error("%s", diag.message);
    src->lengths = src->owned;
    return EXIT_OK;
}

static int load_inputs(const stats_args *a, lengths_source *src)
{
    prepack_diag diag = {0};
    prepack_store_options so = a->store;
    so.lengths_only = 1; /* stats needs lengths; tokens are still checked */
    int rc = prepack_store_create(&src->store, &so, &diag);
    for (int i = 0; rc == PREPACK_OK && i < a->ninputs; i++)
        rc = prepack_ingest_file(src->store, a->inputs[i], &a->ingest, &diag);
    if (rc == PREPACK_OK)
        rc = prepack_store_finish(src->store, &diag);
    if (rc != PREPACK_OK)
        return data_error("%s", diag.message[0] ? diag.message
                                                : prepack_strerror(rc));
    src->lengths = prepack_store_lengths(src->store);
    src->n = prepack_store_sequence_count(src->store);
    return EXIT_OK;
}

static void release(lengths_source *src)
{
    prepack_free(src->owned, NULL);
    prepack_store_free(src->store);
}

int cmd_stats(int argc, char **argv)
{
    stats_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;

    double t0 = now_seconds();
    lengths_source src = {0};
    rc = a.lengths_path ? load_lengths_file(&a, &src) : load_inputs(&a, &src);
    if (rc != EXIT_OK) {
        release(&src);
        return rc;
    }
    double t1 = now_seconds();

    prepack_diag diag = {0};
    a.plan.diag = &diag;
    prepack_plan *plan = NULL;
    int prc = prepack_plan_create(&plan, src.lengths, src.n, &a.plan);
    double t2 = now_seconds();
    prepack_report report;
    if (prc == PREPACK_OK)
        prc = prepack_report_compute(plan, src.lengths, src.n, a.batch_size,
                                     &report);
    prepack_plan_free(plan);
    if (prc != PREPACK_OK) {
        rc = plan_error(&a, &src, prc, &diag);
    } else {
        timings t = {t1 - t0, t2 - t1};
        if (a.json)
            print_json(&a, src.store, &report, t);
        else
            print_text(&a, src.store, &report, t);
    }
    release(&src);
    return rc;
}
