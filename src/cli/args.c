/* Options shared by `prepack stats` and `prepack pack`: how to read
 * inputs, how to plan, how to write shards. */
#define _GNU_SOURCE /* getopt_long */
#include <getopt.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum {
    OPT_LENGTHS = 256,
    OPT_MAXLEN,
    OPT_ALGO,
    OPT_OVERLONG,
    OPT_PERROW,
    OPT_BATCH,
    OPT_JSON,
    OPT_FORMAT,
    OPT_FIELD,
    OPT_DOCSEP,
    OPT_SEPPOS,
    OPT_DTYPE,
    OPT_TMPDIR,
    OPT_OUT,
    OPT_RPF,
    OPT_LEVEL,
    OPT_SHARD_ROWS,
    OPT_SHARD_BYTES,
    OPT_OVERWRITE,
    OPT_SHUFFLE,
    OPT_SEED,
    OPT_THREADS,
    OPT_SVG,
    OPT_QUIET,
    OPT_TRAILING,
    OPT_PAD_MULTIPLE,
    OPT_PLAN_ONLY
};

/* One table for both commands; each refuses the other's own options. */
static const struct option cmd_options[] = {
    {"lengths", required_argument, NULL, OPT_LENGTHS},
    {"max-seq-len", required_argument, NULL, OPT_MAXLEN},
    {"algo", required_argument, NULL, OPT_ALGO},
    {"overlong", required_argument, NULL, OPT_OVERLONG},
    {"max-seqs-per-row", required_argument, NULL, OPT_PERROW},
    {"pad-multiple", required_argument, NULL, OPT_PAD_MULTIPLE},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"json", no_argument, NULL, OPT_JSON},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"field", required_argument, NULL, OPT_FIELD},
    {"doc-sep", required_argument, NULL, OPT_DOCSEP},
    {"sep-position", required_argument, NULL, OPT_SEPPOS},
    {"allow-trailing-bytes", no_argument, NULL, OPT_TRAILING},
    {"token-dtype", required_argument, NULL, OPT_DTYPE},
    {"tmp-dir", required_argument, NULL, OPT_TMPDIR},
    {"output", required_argument, NULL, OPT_OUT},
    {"rows-per-frame", required_argument, NULL, OPT_RPF},
    {"level", required_argument, NULL, OPT_LEVEL},
    {"shard-rows", required_argument, NULL, OPT_SHARD_ROWS},
    {"shard-bytes", required_argument, NULL, OPT_SHARD_BYTES},
    {"overwrite", no_argument, NULL, OPT_OVERWRITE},
    {"plan-only", no_argument, NULL, OPT_PLAN_ONLY},
    {"shuffle", no_argument, NULL, OPT_SHUFFLE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"svg", required_argument, NULL, OPT_SVG},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

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

/* The options of `pack` that say how to write shards. */
static int apply_output_option(cmd_args *a, int opt, const char *val)
{
    uint64_t v;
    switch (opt) {
    case OPT_OUT:
        a->out_dir = val;
        return EXIT_OK;
    case OPT_RPF:
        if (parse_u64(val, 1, UINT32_MAX, &v))
            return usage_error(a->cmd,
                               "--rows-per-frame must be a positive integer, "
                               "not '%s'",
                               val);
        a->writer.rows_per_frame = (uint32_t)v;
        return EXIT_OK;
    case OPT_LEVEL:
        if (parse_u64(val, 1, 22, &v))
            return usage_error(a->cmd, "--level must be 1..22, not '%s'", val);
        a->writer.level = (int)v;
        return EXIT_OK;
    case OPT_SHARD_ROWS:
        if (parse_u64(val, 1, UINT64_MAX, &v))
            return usage_error(a->cmd,
                               "--shard-rows must be a positive integer, not "
                               "'%s'",
                               val);
        if (a->writer.shard_bytes)
            return usage_error(a->cmd,
                               "--shard-rows or --shard-bytes, not both");
        a->writer.shard_rows = v;
        return EXIT_OK;
    case OPT_SHARD_BYTES:
        if (parse_size(val, &v) || v == 0)
            return usage_error(a->cmd,
                               "--shard-bytes must be a size such as "
                               "500000000, 512M or 2G, not '%s'",
                               val);
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
        if (parse_u64(val, 1, 256, &v))
            return usage_error(a->cmd, "--threads must be 1..256, not '%s'",
                               val);
        a->writer.threads = a->ingest.threads = (int)v;
        return EXIT_OK;
    case OPT_SHUFFLE:
        a->plan.shuffle_rows = 1;
        return EXIT_OK;
    case OPT_SEED:
        if (parse_u64(val, 0, UINT64_MAX, &v))
            return usage_error(a->cmd, "--seed must be an integer, not '%s'",
                               val);
        a->plan.shuffle_seed = v;
        return EXIT_OK;
    default:
        return usage_error(a->cmd, "unknown option");
    }
}

int apply_ingest_option(const char *cmd, const char *name, const char *val,
                        prepack_ingest_options *o)
{
    uint64_t v;
    if (strcmp(name, "format") == 0) {
        if (prepack_format_parse(val, &o->format))
            return usage_error(cmd,
                               "--format must be auto, jsonl, megatron, "
                               "llmc or raw-u16, not '%s'",
                               val);
    } else if (strcmp(name, "field") == 0) {
        if (!*val)
            return usage_error(cmd, "--field needs a name");
        o->field = val;
    } else if (strcmp(name, "doc-sep") == 0) {
        if (parse_u64(val, 0, UINT32_MAX, &v))
            return usage_error(cmd, "--doc-sep must be a token id, not '%s'",
                               val);
        o->has_doc_sep = 1;
        o->doc_sep = (uint32_t)v;
    } else if (strcmp(name, "sep-position") == 0) {
        if (strcmp(val, "before") && strcmp(val, "after"))
            return usage_error(cmd,
                               "--sep-position must be before or after, not "
                               "'%s'",
                               val);
        o->sep_position =
            strcmp(val, "before") == 0 ? PREPACK_SEP_BEFORE : PREPACK_SEP_AFTER;
    } else if (strcmp(name, "allow-trailing-bytes") == 0) {
        o->allow_trailing_bytes = 1;
    } else {
        return -1;
    }
    return EXIT_OK;
}

/* An option's long name, from the table. */
static const char *option_name(int opt)
{
    for (const struct option *o = cmd_options; o->name; o++)
        if (o->val == opt)
            return o->name;
    return "";
}

/* The options that say how to read INPUTs and where tokens wait. */
static int apply_input_option(cmd_args *a, int opt, const char *val)
{
    switch (opt) {
    case OPT_FORMAT:
    case OPT_FIELD:
    case OPT_DOCSEP:
    case OPT_SEPPOS:
    case OPT_TRAILING:
        return apply_ingest_option(a->cmd, option_name(opt), val, &a->ingest);
    case OPT_DTYPE:
        if (prepack_dtype_parse(val, &a->store.dtype))
            return usage_error(a->cmd,
                               "--token-dtype must be auto, uint16 or "
                               "uint32, not '%s'",
                               val);
        return EXIT_OK;
    case OPT_TMPDIR:
        a->store.tmp_dir = val;
        return EXIT_OK;
    default:
        return apply_output_option(a, opt, val);
    }
}

/* Applies one option; returns EXIT_OK or a usage error. */
static int apply_option(cmd_args *a, int opt, const char *val)
{
    uint64_t v;
    switch (opt) {
    case OPT_LENGTHS:
        a->lengths_path = val;
        return EXIT_OK;
    case OPT_MAXLEN:
        if (parse_u64(val, 1, PREPACK_MAX_SEQ_LEN_LIMIT, &v))
            return usage_error(a->cmd,
                               "--max-seq-len must be an integer in 1..%u, "
                               "not '%s'",
                               PREPACK_MAX_SEQ_LEN_LIMIT, val);
        a->plan.max_seq_len = (uint32_t)v;
        return EXIT_OK;
    case OPT_ALGO:
        if (prepack_algo_parse(val, &a->plan.algo))
            return usage_error(
                a->cmd, "--algo must be ffd, bfd or nextfit, not '%s'", val);
        return EXIT_OK;
    case OPT_OVERLONG:
        if (prepack_overlong_parse(val, &a->plan.overlong))
            return usage_error(a->cmd,
                               "--overlong must be error, truncate, split or "
                               "drop, not '%s'",
                               val);
        return EXIT_OK;
    case OPT_PERROW:
        if (parse_u64(val, 0, UINT32_MAX, &v))
            return usage_error(a->cmd,
                               "--max-seqs-per-row must be a non-negative "
                               "integer, not '%s'",
                               val);
        a->plan.max_seqs_per_row = (uint32_t)v;
        return EXIT_OK;
    case OPT_PAD_MULTIPLE:
        if (parse_u64(val, 1, PREPACK_MAX_SEQ_LEN_LIMIT, &v))
            return usage_error(a->cmd,
                               "--pad-multiple must be a positive integer, "
                               "not '%s'",
                               val);
        a->plan.pad_multiple = (uint32_t)v;
        return EXIT_OK;
    case OPT_BATCH:
        if (parse_u64(val, 1, UINT32_MAX, &v))
            return usage_error(a->cmd,
                               "--batch-size must be a positive integer, "
                               "not '%s'",
                               val);
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
        return apply_input_option(a, opt, val);
    }
}

/* Whether an option belongs to the other command. */
static int foreign(const cmd_args *a, int opt)
{
    int pack_only = opt == OPT_OUT || opt == OPT_RPF || opt == OPT_LEVEL ||
                    opt == OPT_SHARD_ROWS || opt == OPT_OVERWRITE ||
                    opt == OPT_PLAN_ONLY || opt == OPT_SHUFFLE ||
                    opt == OPT_SEED;
    return a->is_pack ? opt == OPT_LENGTHS : pack_only;
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

int parse_cmd_args(int argc, char **argv, const char *cmd, const char *help,
                   cmd_args *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    /* pack and its steps (scan, plan, write, finalize) take one set */
    a->is_pack = strcmp(cmd, "stats") != 0;
    a->batch_size = PREPACK_DEFAULT_BATCH_SIZE;
    a->writer.threads = a->ingest.threads = available_cores();
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":ho:", cmd_options, NULL)) != -1) {
        if (opt == 'h') {
            fputs(help, stdout);
            return -1;
        }
        if (opt == 'o')
            opt = OPT_OUT;
        if (opt != '?' && opt != ':' && foreign(a, opt))
            return usage_error(cmd, "'%s' is not an option of %s",
                               argv[optind - 1], cmd);
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
