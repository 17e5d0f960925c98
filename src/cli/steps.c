/* prepack scan | plan | write | finalize: prepack pack in steps, for a
 * scheduler that starts tasks with an index (scripts/slurm, the Python
 * package's prepack.steps for Ray). Each step takes pack's options
 * plus its task options; the library (prepack_step_*) does the work. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char steps_help[] =
    "usage: prepack scan     INPUT... -o DIR --max-seq-len L [PACK OPTIONS]\n"
    "                        --task-index I --task-count N\n"
    "       prepack plan     INPUT... -o DIR --max-seq-len L [PACK OPTIONS]\n"
    "                        --scan-tasks N\n"
    "       prepack write    INPUT... -o DIR --max-seq-len L [PACK OPTIONS]\n"
    "                        --task-index J --task-count M\n"
    "       prepack finalize INPUT... -o DIR --max-seq-len L [PACK OPTIONS]\n"
    "                        --write-tasks M\n"
    "\n"
    "'prepack pack' in steps, for more than one machine (docs/SCALE.md):\n"
    "  scan      task I of N reads its part of the INPUTs (whole files by\n"
    "            where they fall among the inputs' bytes; a plain JSONL file\n"
    "            cut at line starts, a Megatron one by sequence range) and\n"
    "            checks them as pack does\n"
    "  plan      one task: plans every sequence at once, as pack does\n"
    "  write     task J of M writes its share of the shards (M need not\n"
    "            be N)\n"
    "  finalize  checks every shard and writes manifest.json last\n"
    "The shard set in DIR is byte-identical to 'prepack pack' with the same\n"
    "INPUTs and options. Give every step the same INPUTs and pack options:\n"
    "each step refuses output made with others. Work files live in\n"
    "DIR/.prepack-job until finalize removes them. A task whose output is\n"
    "there and verifies does nothing; plan and finalize name the task to\n"
    "rerun when one's output is missing or damaged.\n"
    "\n"
    "Options besides pack's ('prepack pack --help'; --shard-bytes,\n"
    "--overwrite, --svg and --plan-only are pack's alone):\n"
    "  --task-index I           this task's index, 0..count-1 (scan, write;\n"
    "                           default: $SLURM_ARRAY_TASK_ID)\n"
    "  --task-count N           scan and write: how many tasks this step has\n"
    "  --scan-tasks N           plan: how many scan tasks ran\n"
    "  --write-tasks M          finalize: how many write tasks ran\n"
    "  --sizes-only             finalize: check shard sizes, not hashes\n"
    "                           (each write task hashed what it wrote)\n"
    "  --json                   print what the step did as one JSON object\n"
    "  -h, --help               show this help\n"
    "\n"
    "Exit status: 0 success (or already done), 1 bad input, a missing or\n"
    "damaged task output, I/O error, 2 usage error.\n";

typedef struct step_args {
    long task, count, scan_tasks, write_tasks;
    int sizes_only;
    const char *text_key; /* python -m prepack's, for text inputs */
} step_args;

/* Takes the step's own options out of argv (compacting it); the rest is
 * pack's. */
static int take_step_options(const char *cmd, int *argc, char **argv,
                             step_args *s)
{
    memset(s, 0, sizeof *s);
    s->task = s->count = s->scan_tasks = s->write_tasks = -1;
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *names[] = {"--task-index", "--task-count", "--scan-tasks",
                               "--write-tasks"};
        long *slots[] = {&s->task, &s->count, &s->scan_tasks, &s->write_tasks};
        int taken = 0;
        for (int k = 0; k < 4 && !taken; k++) {
            size_t n = strlen(names[k]);
            if (strncmp(argv[i], names[k], n) != 0 ||
                (argv[i][n] != '\0' && argv[i][n] != '='))
                continue;
            const char *val = argv[i][n] == '=' ? argv[i] + n + 1
                              : i + 1 < *argc   ? argv[++i]
                                                : NULL;
            uint64_t v;
            if (!val || parse_u64(val, 0, 1u << 30, &v))
                return usage_error(cmd, "%s needs a count or index, not '%s'",
                                   names[k], val ? val : "");
            *slots[k] = (long)v;
            taken = 1;
        }
        if (!taken && !strcmp(argv[i], "--text-key") && i + 1 < *argc) {
            s->text_key = argv[++i];
            taken = 1;
        }
        if (!taken && !strcmp(argv[i], "--sizes-only")) {
            s->sizes_only = 1;
            taken = 1;
        }
        if (!taken)
            argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    return EXIT_OK;
}

/* The task index: the option, else a Slurm array's. */
static int resolve_index(const char *cmd, step_args *s, long count)
{
    if (s->task < 0) {
        const char *env = getenv("SLURM_ARRAY_TASK_ID");
        uint64_t v;
        if (!env || parse_u64(env, 0, 1u << 30, &v))
            return usage_error(cmd, "--task-index I is required");
        s->task = (long)v;
    }
    if (count <= 0)
        return usage_error(cmd, "--task-count N is required (at least 1)");
    if (s->task >= count)
        return usage_error(cmd,
                           "--task-index %ld is not below --task-count %ld",
                           s->task, count);
    return EXIT_OK;
}

static void options_of(const cmd_args *a, prepack_step_options *o)
{
    memset(o, 0, sizeof *o);
    o->inputs = (const char *const *)a->inputs;
    o->ninputs = (size_t)a->ninputs;
    o->ingest = a->ingest;
    o->store = a->store;
    o->plan = a->plan;
    o->writer = a->writer;
    o->batch_size = a->batch_size;
}

static void print_result(const cmd_args *a, const char *cmd, long task,
                         long count, const prepack_step_result *r,
                         double seconds)
{
    uint64_t rchar, wchar;
    io_counters(&rchar, &wchar);
    if (a->json) {
        json_writer w = {stdout, 0, 0};
        json_begin_object(&w, NULL);
        json_key_string(&w, "step", cmd);
        if (task >= 0) {
            json_key_u64(&w, "task", (uint64_t)task);
            json_key_u64(&w, "tasks", (uint64_t)count);
        }
        json_key_bool(&w, "already_done", r->already_done);
        json_key_u64(&w, "sequences", r->sequences);
        json_key_u64(&w, "tokens", r->tokens);
        json_key_u64(&w, "rows", r->rows);
        json_key_u64(&w, "shards", r->shards);
        json_key_u64(&w, "bytes_written", r->bytes_written);
        json_key_u64(&w, "bytes_mapped", r->bytes_mapped);
        json_key_u64(&w, "io_read_bytes", rchar);
        json_key_u64(&w, "io_write_bytes", wchar);
        json_key_double(&w, "seconds", seconds);
        json_end_object(&w);
        json_finish(&w);
        return;
    }
    char b1[32], b2[32], b3[32];
    char who[64] = "";
    if (task >= 0)
        snprintf(who, sizeof who, " task %ld of %ld", task, count);
    if (r->already_done)
        fprintf(stderr, "prepack %s%s: already done in %s\n", cmd, who,
                a->out_dir);
    else if (!strcmp(cmd, "scan"))
        fprintf(stderr, "prepack scan%s: %s sequences, %s tokens (%.2f s)\n",
                who, fmt_count(b1, r->sequences), fmt_count(b2, r->tokens),
                seconds);
    else
        fprintf(stderr,
                "prepack %s%s: %s rows in %s shards, %s bytes (%.2f s)\n", cmd,
                who, fmt_count(b1, r->rows), fmt_count(b2, r->shards),
                fmt_count(b3, r->bytes_written), seconds);
}

static int step_error(int rc, const prepack_diag *d)
{
    if (rc == PREPACK_EOVERLONG)
        return data_error("%s (choose --overlong truncate, split or drop)",
                          d->message);
    return library_error(rc, d);
}

int cmd_step(int argc, char **argv)
{
    const char *cmd = argv[0];
    step_args s;
    int rc = take_step_options(cmd, &argc, argv, &s);
    cmd_args a;
    if (rc == EXIT_OK)
        rc = parse_cmd_args(argc, argv, cmd, steps_help, NULL, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    if (a.writer.shard_bytes || a.writer.overwrite || a.svg_path ||
        a.writer.references)
        return usage_error(cmd, "--shard-bytes, --overwrite, --svg and "
                                "--plan-only are options of pack in one "
                                "process");
    long count = -1;
    if (!strcmp(cmd, "scan") || !strcmp(cmd, "write")) {
        count = s.count >= 0           ? s.count
                : !strcmp(cmd, "scan") ? s.scan_tasks
                                       : s.write_tasks;
        if ((rc = resolve_index(cmd, &s, count)) != EXIT_OK)
            return rc;
    } else if (!strcmp(cmd, "plan") && s.scan_tasks <= 0) {
        return usage_error(cmd, "--scan-tasks N is required (at least 1)");
    } else if (!strcmp(cmd, "finalize") && s.write_tasks <= 0) {
        return usage_error(cmd, "--write-tasks M is required (at least 1)");
    }
    prepack_step_options o;
    options_of(&a, &o);
    o.text_key = s.text_key;
    prepack_step_result r;
    prepack_diag d = {0};
    double t0 = now_seconds();
    if (!strcmp(cmd, "scan"))
        rc = prepack_step_scan(a.out_dir, &o, (uint32_t)s.task, (uint32_t)count,
                               &r, &d);
    else if (!strcmp(cmd, "plan"))
        rc = prepack_step_plan(a.out_dir, &o, (uint32_t)s.scan_tasks, &r, &d);
    else if (!strcmp(cmd, "write"))
        rc = prepack_step_write(a.out_dir, &o, (uint32_t)s.task,
                                (uint32_t)count, &r, &d);
    else
        rc = prepack_step_finalize(a.out_dir, &o, (uint32_t)s.write_tasks,
                                   !s.sizes_only, &r, &d);
    if (rc != PREPACK_OK)
        return step_error(rc, &d);
    print_result(&a, cmd, count >= 0 ? s.task : -1, count, &r,
                 now_seconds() - t0);
    return EXIT_OK;
}
