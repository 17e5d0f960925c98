/* prepack stats: plan rows for tokenized inputs or a lengths file and
 * report what packing buys over naive padded batching. Needs lengths only:
 * tokens are checked, never kept. */
#include "cli.h"

static const char stats_help_head[] =
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
    "Options:\n";

/* after the options (options.def) */
static const char stats_help_tail[] =
    "\n"
    "The report's words:\n" REPORT_WORDS "\n"
    "Exit status: 0 success, 1 bad input, 2 usage error.\n";

int cmd_stats(int argc, char **argv)
{
    cmd_args a;
    int rc = parse_cmd_args(argc, argv, "stats", stats_help_head,
                            stats_help_tail, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;

    progress prog;
    progress_init(&prog, a.quiet);
    a.progress = &prog;
    double t0 = now_seconds();
    lengths_source src;
    rc = load_lengths(&a, &src);
    if (rc != EXIT_OK) {
        release_lengths(&src);
        return rc;
    }
    double t1 = now_seconds();

    prepack_plan *plan = NULL;
    prepack_report report;
    rc = plan_and_report(&a, &src, &plan, &report);
    double t2 = now_seconds();
    if (rc == EXIT_OK)
        rc = write_svg(&a, &report, plan, &src);
    if (rc == EXIT_OK) {
        char b[32];
        char line[96];
        snprintf(line, sizeof line, "prepack stats: %s tokens planned",
                 fmt_count(b, report.plan.tokens));
        progress_done(&prog, line);
        timings t = {t1 - t0, t2 - t1, 0};
        if (a.json)
            print_report_json(&a, src.store, &report, t, NULL);
        else
            print_report_text(&a, src.store, &report, t, NULL);
    }
    prepack_plan_free(plan);
    release_lengths(&src);
    return rc;
}
