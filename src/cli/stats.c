/* prepack stats: plan rows for tokenized inputs or a lengths file and
 * report what packing buys over naive padded batching. Needs lengths only:
 * tokens are checked, never kept. */
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
    "  --pad-multiple M         context parallelism: plan each sequence as\n"
    "                           its length rounded up to a multiple of M,\n"
    "                           so padded to M it still fits L (readers\n"
    "                           pad; L must be a multiple of M)\n"
    "  --batch-size B           batch size of the naive padded batching it\n"
    "                           compares against (default: 8)\n"
    "  --json                   print one JSON object (keys in docs/CLI.md)\n"
    "  --threads N              read inputs on N threads (default: the\n"
    "                           cores available); the report is the same\n"
    "                           for any N\n"
    "  --svg FILE               also draw the report as an SVG picture\n"
    "  --quiet                  no progress on stderr (shown only when it\n"
    "                           is a terminal)\n"
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
    "  --allow-trailing-bytes   Megatron: accept a .bin longer than its\n"
    "                           .idx's sequences reach (default: an error)\n"
    "  --token-dtype DT         auto | uint16 | uint32 (default: auto,\n"
    "                           uint16 while every id fits)\n"
    "  --tmp-dir DIR            where the token store lives while running\n"
    "                           (default: $TMPDIR or /tmp); always removed\n"
    "  -h, --help               show this help\n"
    "\n"
    "The report's words:\n" REPORT_WORDS "\n"
    "Exit status: 0 success, 1 bad input, 2 usage error.\n";

int cmd_stats(int argc, char **argv)
{
    cmd_args a;
    int rc = parse_cmd_args(argc, argv, "stats", stats_help, &a);
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
