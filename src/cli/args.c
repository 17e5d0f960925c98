/* Options shared by `prepack stats` and `prepack pack`: how to read
 * inputs, how to plan, how to write shards. Each is a line of options.def
 * (python -m prepack's too, through scripts/gen_options.py); this file
 * builds the getopt table, the check of each value and the options part
 * of --help from those lines, and sets each option's field. */
#define _GNU_SOURCE /* getopt_long */
#include <getopt.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The options, defined once in options.def (docs/CLI.md: adding one). */
enum {
    OPT_NONE_ = 256,
#define PP_OPT(id, ...) OPT_##id,
#include "options.def"
#undef PP_OPT
    OPT_COUNT_
};

/* options.def's KIND and WHERE words */
enum { KIND_FLAG, KIND_INT, KIND_SIZE, KIND_CHOICE, KIND_NAME, KIND_STRING };
enum {
    CMD_PACK = 1,
    CMD_STATS = 2,
    MOD_PACK = 4,
    MOD_STATS = 8,
    REQUIRED = 16,
    INPUT = 32
};

typedef struct option_def {
    int id;
    const char *name;
    int short_name;
    int kind;
    const char *metavar;
    uint64_t lo, hi;
    const char *choices; /* '|'-separated */
    const char *dflt;    /* "" for none */
    unsigned where;
    const char *must;
    const char *help, *stats_help;
} option_def;

static const option_def option_defs[] = {
#define PP_OPT(id, name, sh, kind, metavar, lo, hi, choices, dflt, where,     \
               must, help, stats_help)                                        \
    {OPT_##id, name,  sh,    KIND_##kind, metavar, UINT64_C(lo), UINT64_C(hi), \
     choices,  dflt,  where, must,        help,    stats_help},
#include "options.def"
#undef PP_OPT
};

enum { NOPTIONS = sizeof option_defs / sizeof option_defs[0] };
_Static_assert(NOPTIONS == OPT_COUNT_ - OPT_NONE_ - 1,
               "one option_defs entry per option");

static const option_def *option_by_id(int opt)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (option_defs[i].id == opt)
            return &option_defs[i];
    return NULL;
}

static const option_def *option_by_name(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(option_defs[i].name, name) == 0)
            return &option_defs[i];
    return NULL;
}

/* The getopt table and short options of the C command (both commands:
 * each refuses the other's own options), built from option_defs once. */
static struct option cmd_options[NOPTIONS + 2];
static char short_options[2 * NOPTIONS + 4];

static void build_getopt_table(void)
{
    size_t s = 0;
    short_options[s++] = ':';
    short_options[s++] = 'h';
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option_def *d = &option_defs[i];
        cmd_options[i] = (struct option){
            d->name, d->kind == KIND_FLAG ? no_argument : required_argument,
            NULL, d->id};
        if (d->short_name) {
            short_options[s++] = (char)d->short_name;
            if (d->kind != KIND_FLAG)
                short_options[s++] = ':';
        }
    }
    short_options[s] = 0;
    cmd_options[NOPTIONS] = (struct option){"help", no_argument, NULL, 'h'};
    cmd_options[NOPTIONS + 1] = (struct option){NULL, 0, NULL, 0};
}

/* A byte count: digits, optionally K, M or G (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    unsigned shift = 0;
    char digits[32];
    if (n == 0 || n >= sizeof digits)
        return -1;
    switch (s[n - 1]) {
    case 'K':
    case 'k':
        shift = 10;
        break;
    case 'M':
    case 'm':
        shift = 20;
        break;
    case 'G':
    case 'g':
        shift = 30;
        break;
    default:
        break;
    }
    memcpy(digits, s, n - (shift != 0));
    digits[n - (shift != 0)] = 0;
    uint64_t v;
    if (parse_u64(digits, 0, UINT64_MAX >> shift, &v))
        return -1;
    *out = v << shift;
    return 0;
}

/* Whether val is one of the '|'-separated choices. */
static int is_choice(const char *choices, const char *val)
{
    size_t n = strlen(val);
    for (const char *c = choices; *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (n && len == n && memcmp(c, val, n) == 0)
            return 1;
        c += len + (bar != NULL);
    }
    return 0;
}

/* "a, b or c" from "a|b|c". */
static const char *choice_words(const char *choices, char *buf, size_t cap)
{
    size_t n = 0, count = 1;
    for (const char *c = choices; *c; c++)
        count += *c == '|';
    buf[0] = 0;
    for (const char *c = choices; *c && n + 1 < cap; count--) {
        const char *bar = strchr(c, '|');
        int len = bar ? (int)(bar - c) : (int)strlen(c);
        int w = snprintf(buf + n, cap - n, "%s%.*s",
                         c == choices ? "" : count == 1 ? " or " : ", ", len,
                         c);
        n = w < 0 || (size_t)w >= cap - n ? cap - 1 : n + (size_t)w;
        c += len + (bar != NULL);
    }
    return buf;
}

/* Checks an option's value against its definition: EXIT_OK (*v set for
 * INT and SIZE), or the usage error, reported. */
static int check_value(const char *cmd, const option_def *d, const char *val,
                       uint64_t *v)
{
    char words[256];
    *v = 0;
    switch (d->kind) {
    case KIND_INT:
        if (parse_u64(val, d->lo, d->hi, v))
            break;
        return EXIT_OK;
    case KIND_SIZE:
        if (parse_size(val, v) || *v < d->lo || *v > d->hi)
            break;
        return EXIT_OK;
    case KIND_CHOICE:
        if (is_choice(d->choices, val))
            return EXIT_OK;
        return usage_error(cmd, "--%s must be %s, not '%s'", d->name,
                           choice_words(d->choices, words, sizeof words),
                           val);
    case KIND_NAME:
        if (*val)
            return EXIT_OK;
        return usage_error(cmd, "--%s needs a name", d->name);
    default:
        return EXIT_OK;
    }
    return usage_error(cmd, "--%s must be %s, not '%s'", d->name, d->must,
                       val);
}

/* The options of `pack` that say how to write shards (values checked). */
static int apply_output_option(cmd_args *a, int opt, const char *val,
                               uint64_t v)
{
    switch (opt) {
    case OPT_OUT:
        a->out_dir = val;
        return EXIT_OK;
    case OPT_RPF:
        a->writer.rows_per_frame = (uint32_t)v;
        return EXIT_OK;
    case OPT_LEVEL:
        a->writer.level = (int)v;
        return EXIT_OK;
    case OPT_SHARD_ROWS:
        if (a->writer.shard_bytes)
            return usage_error(a->cmd,
                               "--shard-rows or --shard-bytes, not both");
        a->writer.shard_rows = v;
        return EXIT_OK;
    case OPT_SHARD_BYTES:
        if (a->writer.shard_rows)
            return usage_error(a->cmd,
                               "--shard-rows or --shard-bytes, not both");
        a->writer.shard_bytes = v;
        return EXIT_OK;
    case OPT_OVERWRITE:
        a->writer.overwrite = 1;
        return EXIT_OK;
    case OPT_PLAN_ONLY:
        a->writer.references = 1;
        return EXIT_OK;
    case OPT_THREADS:
        a->writer.threads = a->ingest.threads = (int)v;
        return EXIT_OK;
    case OPT_SHUFFLE:
        a->plan.shuffle_rows = 1;
        return EXIT_OK;
    case OPT_SEED:
        a->plan.shuffle_seed = v;
        return EXIT_OK;
    default:
        return usage_error(a->cmd, "unknown option");
    }
}

/* A value options.def allows and the library's parser refuses: the two
 * disagree (test_front_ends holds each choice against the command). */
static int refused_choice(const char *cmd, const option_def *d,
                          const char *val)
{
    char words[256];
    return usage_error(cmd, "--%s must be %s, not '%s'", d->name,
                       choice_words(d->choices, words, sizeof words), val);
}

int apply_ingest_option(const char *cmd, const char *name, const char *val,
                        prepack_ingest_options *o)
{
    const option_def *d = option_by_name(name);
    if (!d || !(d->where & INPUT) || d->id == OPT_DTYPE ||
        d->id == OPT_TMPDIR)
        return -1;
    uint64_t v;
    int rc = check_value(cmd, d, val, &v);
    if (rc != EXIT_OK)
        return rc;
    switch (d->id) {
    case OPT_FORMAT:
        if (prepack_format_parse(val, &o->format))
            return refused_choice(cmd, d, val);
        break;
    case OPT_FIELD:
        o->field = val;
        break;
    case OPT_DOCSEP:
        o->has_doc_sep = 1;
        o->doc_sep = (uint32_t)v;
        break;
    case OPT_SEPPOS:
        o->sep_position =
            strcmp(val, "before") == 0 ? PREPACK_SEP_BEFORE : PREPACK_SEP_AFTER;
        break;
    case OPT_TRAILING:
        o->allow_trailing_bytes = 1;
        break;
    default:
        return -1;
    }
    return EXIT_OK;
}

/* The options that say how to read INPUTs and where tokens wait. */
static int apply_input_option(cmd_args *a, int opt, const char *val,
                              uint64_t v)
{
    switch (opt) {
    case OPT_FORMAT:
    case OPT_FIELD:
    case OPT_DOCSEP:
    case OPT_SEPPOS:
    case OPT_TRAILING:
        return apply_ingest_option(a->cmd, option_by_id(opt)->name, val,
                                   &a->ingest);
    case OPT_DTYPE:
        if (prepack_dtype_parse(val, &a->store.dtype))
            return refused_choice(a->cmd, option_by_id(opt), val);
        return EXIT_OK;
    case OPT_TMPDIR:
        a->store.tmp_dir = val;
        return EXIT_OK;
    default:
        return apply_output_option(a, opt, val, v);
    }
}

/* Applies one option: its value checked against options.def, then set;
 * returns EXIT_OK or a usage error. */
static int apply_option(cmd_args *a, int opt, const char *val)
{
    const option_def *d = option_by_id(opt);
    uint64_t v;
    if (!d)
        return usage_error(a->cmd, "unknown option");
    int rc = check_value(a->cmd, d, val ? val : "", &v);
    if (rc != EXIT_OK)
        return rc;
    switch (opt) {
    case OPT_LENGTHS:
        a->lengths_path = val;
        return EXIT_OK;
    case OPT_MAXLEN:
        a->plan.max_seq_len = (uint32_t)v;
        return EXIT_OK;
    case OPT_ALGO:
        if (prepack_algo_parse(val, &a->plan.algo))
            return refused_choice(a->cmd, d, val);
        return EXIT_OK;
    case OPT_OVERLONG:
        if (prepack_overlong_parse(val, &a->plan.overlong))
            return refused_choice(a->cmd, d, val);
        return EXIT_OK;
    case OPT_PERROW:
        a->plan.max_seqs_per_row = (uint32_t)v;
        return EXIT_OK;
    case OPT_PAD_MULTIPLE:
        a->plan.pad_multiple = (uint32_t)v;
        return EXIT_OK;
    case OPT_BATCH:
        a->batch_size = (uint32_t)v;
        return EXIT_OK;
    case OPT_JSON:
        a->json = 1;
        return EXIT_OK;
    case OPT_SVG:
        a->svg_path = val;
        return EXIT_OK;
    case OPT_QUIET:
        a->quiet = 1;
        return EXIT_OK;
    default:
        return apply_input_option(a, opt, val, v);
    }
}

/* Whether an option belongs to the other command. */
static int foreign(const cmd_args *a, int opt)
{
    const option_def *d = option_by_id(opt);
    return !d || !(d->where & (a->is_pack ? CMD_PACK : CMD_STATS));
}

/* The cores this process may run on (its affinity mask), at most 256:
 * --threads' default. */
static int available_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n < 1 ? 1 : n > 256 ? 256 : n;
}

/* One option's entry in --help: names at 2, the help at column 27, each
 * "\n" of its help a new line there. */
static void print_option(FILE *f, const option_def *d, int is_pack)
{
    char names[64];
    const char *help = !is_pack && d->stats_help[0] ? d->stats_help : d->help;
    if (d->short_name)
        snprintf(names, sizeof names, "-%c, --%s%s%s", d->short_name, d->name,
                 d->metavar[0] ? " " : "", d->metavar);
    else
        snprintf(names, sizeof names, "--%s%s%s", d->name,
                 d->metavar[0] ? " " : "", d->metavar);
    for (int first = 1; *help; first = 0) {
        const char *nl = strchr(help, '\n');
        int len = nl ? (int)(nl - help) : (int)strlen(help);
        fprintf(f, "  %-24s %.*s\n", first ? names : "", len, help);
        help += len + (nl != NULL);
    }
}

void print_cmd_options(FILE *f, int is_pack)
{
    unsigned cmd = is_pack ? CMD_PACK : CMD_STATS;
    for (size_t i = 0; i < NOPTIONS; i++)
        if ((option_defs[i].where & cmd) && !(option_defs[i].where & INPUT))
            print_option(f, &option_defs[i], is_pack);
    if (is_pack) { /* the input options by name: stats documents them */
        size_t col = 0, last = 0;
        for (size_t i = 0; i < NOPTIONS; i++)
            if ((option_defs[i].where & cmd) && (option_defs[i].where & INPUT))
                last = i;
        for (size_t i = 0; i <= last; i++) {
            const option_def *d = &option_defs[i];
            if (!(d->where & cmd) || !(d->where & INPUT))
                continue;
            size_t len = strlen(d->name) + 4; /* "--" and ", " */
            if (col && col + len > 72) {
                fputs("\n", f);
                col = 0;
            }
            col += (size_t)fprintf(f, "%s--%s%s", col ? " " : "  ", d->name,
                                   i < last ? "," : "");
        }
        fputs("\n", f);
        fprintf(f, "  %-24s %s\n", "", "how to read INPUTs, as for "
                                        "'prepack stats'");
    } else {
        fputs("\nInput options:\n", f);
        for (size_t i = 0; i < NOPTIONS; i++)
            if ((option_defs[i].where & cmd) &&
                (option_defs[i].where & INPUT))
                print_option(f, &option_defs[i], is_pack);
    }
    fprintf(f, "  %-24s %s\n", "-h, --help", "show this help");
}

int parse_cmd_args(int argc, char **argv, const char *cmd,
                   const char *help_head, const char *help_tail, cmd_args *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    /* pack and its steps (scan, plan, write, finalize) take one set */
    a->is_pack = strcmp(cmd, "stats") != 0;
    if (!cmd_options[0].name)
        build_getopt_table();
    /* the defaults options.def gives, applied as if given */
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option_def *d = &option_defs[i];
        if (d->dflt[0] && !foreign(a, d->id)) {
            int rc = apply_option(a, d->id, d->dflt);
            if (rc != EXIT_OK)
                return rc;
        }
    }
    a->writer.threads = a->ingest.threads = available_cores();
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, short_options, cmd_options,
                              NULL)) != -1) {
        if (opt == 'h') {
            fputs(help_head, stdout);
            if (help_tail) {
                print_cmd_options(stdout, a->is_pack);
                fputs(help_tail, stdout);
            }
            return -1;
        }
        for (size_t i = 0; opt < OPT_NONE_ && i < NOPTIONS; i++)
            if (option_defs[i].short_name == opt) /* -o: --output */
                opt = option_defs[i].id;
        /* named by its name (argv[optind - 1] may be its value) */
        if (opt != '?' && opt != ':' && foreign(a, opt))
            return usage_error(cmd, "'--%s' is not an option of %s",
                               option_by_id(opt)->name, cmd);
        if (opt == '?')
            return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        if (opt == ':')
            return usage_error(cmd, "option '%s' needs a value",
                               argv[optind - 1]);
        int rc = apply_option(a, opt, optarg);
        if (rc != EXIT_OK)
            return rc;
    }
    a->inputs = argv + optind;
    a->ninputs = argc - optind;
    if (a->is_pack && a->ninputs == 0)
        return usage_error(cmd, "give INPUT files to %s", cmd);
    if (a->is_pack && !a->out_dir)
        return usage_error(cmd, "-o DIR is required");
    if (!a->lengths_path && a->ninputs == 0)
        return usage_error(cmd, "give INPUT files or --lengths FILE");
    if (a->lengths_path && a->ninputs > 0)
        return usage_error(cmd, "give INPUT files or --lengths FILE, not both");
    if (a->plan.max_seq_len == 0)
        return usage_error(cmd, "--max-seq-len L is required");
    if (a->plan.pad_multiple > 1 &&
        a->plan.max_seq_len % a->plan.pad_multiple != 0)
        return usage_error(cmd,
                           "--max-seq-len %u is not a multiple of "
                           "--pad-multiple %u",
                           a->plan.max_seq_len, a->plan.pad_multiple);
    return EXIT_OK;
}
