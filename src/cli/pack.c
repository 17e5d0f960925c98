/* prepack pack: ingest, plan, build rows, write a shard set, report. */
#define _POSIX_C_SOURCE 200809L /* sigaction */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* While shards are written, SIGINT/SIGTERM stop the write loop between
 * rows, so the writer can remove what it wrote before exiting: an
 * interrupted pack leaves neither a manifest nor a shard. Before that (ingest,
 * planning) nothing is in the output directory and the signals keep their
 * default effect, so Ctrl-C stops a long ingest at once. (SIGKILL cannot be
 * caught; it leaves shards and a .tmp that the next --overwrite removes, and
 * still no manifest; with --overwrite, the old set stays in DIR and the
 * new one's files in .DIR.prepack-<6 random characters> beside it.) */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

/* handler: on_signal, or SIG_DFL to restore the default */
static void set_interrupt_handler(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static const char pack_help_head[] =
    "usage: prepack pack INPUT... -o DIR --max-seq-len L [OPTIONS]\n"
    "\n"
    "Pack tokenized INPUTs (JSONL, Megatron .bin/.idx, llm.c .bin, raw\n"
    "uint16 tokens; see 'prepack stats --help') into rows of at most L\n"
    "tokens and write them to DIR as a shard set (docs/FORMAT.md):\n"
    "zstd-compressed msgpack shards with a seek table each, and\n"
    "manifest.json, written last. Then print the report.\n"
    "Text, prompt-completion pairs and conversations are tokenized by the\n"
    "Python package: python -m prepack pack INPUT... --tokenizer PATH (given\n"
    "--tokenizer, this command prints that command).\n"
    "\n"
    "Options:\n";

/* after the options (options.def) */
static const char pack_help_tail[] =
    "\n"
    "The report's words:\n" REPORT_WORDS "\n"
    "Exit status: 0 success, 1 bad input or I/O error, 2 usage error.\n";

/* One row of the plan to the writer: its tokens, or with --plan-only
 * where they are. */
static int write_row(const cmd_args *a, prepack_row_builder *b,
                     prepack_writer *w, size_t r, prepack_diag *d)
{
    prepack_row row;
    if (!a->writer.references) {
        int rc = prepack_row_builder_get(b, r, &row);
        return rc == PREPACK_OK ? prepack_writer_add(w, &row, d) : rc;
    }
    prepack_row_references references;
    int rc = prepack_row_builder_get_references(b, r, &row, &references);
    return rc == PREPACK_OK
               ? prepack_writer_add_references(w, &row, &references, d)
               : rc;
}

/* Builds every row of the plan and hands it to the writer. */
static int write_rows(const cmd_args *a, const lengths_source *src,
                      const prepack_plan *plan, const prepack_report *report,
                      pack_result *out)
{
    prepack_diag d = {0};
    prepack_row_builder *b = NULL;
    prepack_writer *w = NULL;
    prepack_dtype dtype = prepack_store_dtype(src->store);
    set_interrupt_handler(on_signal);
    int rc = prepack_row_builder_create(&b, plan, src->store, &d);
    if (rc == PREPACK_OK)
        rc = prepack_writer_create(&w, a->out_dir, a->plan.max_seq_len, dtype,
                                   &a->writer, &d);
    size_t rows = rc == PREPACK_OK ? prepack_plan_row_count(plan) : 0;
    for (size_t r = 0; rc == PREPACK_OK && r < rows; r++) {
        if (interrupted) {
            prepack_writer_free(w); /* removes every file it wrote */
            prepack_row_builder_free(b);
            fprintf(stderr, "prepack pack: interrupted; %s has no manifest\n",
                    a->out_dir);
            return 128 + interrupted;
        }
        rc = write_row(a, b, w, r, &d);
        if ((r & 255) == 0 || r + 1 == rows)
            progress_update(a->progress, "write", r + 1, rows);
    }
    prepack_manifest_info info = {&a->plan, src->store, report};
    if (rc == PREPACK_OK)
        rc = prepack_writer_finish(w, &info, &d);
    if (rc == PREPACK_OK) {
        out->dir = a->out_dir;
        out->rows = rows;
        out->bytes = prepack_writer_bytes(w);
        out->token_bytes = report->plan.tokens * prepack_dtype_width(dtype);
        out->plan_only = a->writer.references;
    }
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    set_interrupt_handler(SIG_DFL);
    if (rc != PREPACK_OK)
        return library_error(rc, &d);
    return EXIT_OK;
}

/* --plan-only references token files: refuse text inputs before reading
 * any (their tokens exist only once parsed). */
static int check_plan_only_inputs(const cmd_args *a)
{
    for (int i = 0; a->writer.references && i < a->ninputs; i++) {
        prepack_format f = a->ingest.format;
        prepack_diag d = {0};
        if (f == PREPACK_FORMAT_AUTO &&
            prepack_format_detect(a->inputs[i], &f, &d) != PREPACK_OK)
            return library_error(d.code, &d);
        if (f == PREPACK_FORMAT_JSONL || f == PREPACK_FORMAT_ARROW) {
            fprintf(stderr,
                    "prepack pack: %s: --plan-only references token files "
                    "(Megatron, llm.c, raw); this input is %s, whose tokens "
                    "exist only once parsed: pack it without --plan-only\n",
                    a->inputs[i], prepack_format_name(f));
            return EXIT_DATA;
        }
    }
    return EXIT_OK;
}

int cmd_pack(int argc, char **argv)
{
    cmd_args a;
    int rc = parse_cmd_args(argc, argv, "pack", pack_help_head,
                            pack_help_tail, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = check_plan_only_inputs(&a)) != EXIT_OK)
        return rc;
    progress prog;
    progress_init(&prog, a.quiet);
    a.progress = &prog;
    double t0 = now_seconds();
    lengths_source src;
    rc = load_lengths(&a, &src);
    double t1 = now_seconds(), t2 = t1, t3 = t1;
    prepack_plan *plan = NULL;
    prepack_report report;
    pack_result out = {0};
    if (rc == EXIT_OK) {
        rc = plan_and_report(&a, &src, &plan, &report);
        t2 = now_seconds();
        if (rc == EXIT_OK)
            rc = write_rows(&a, &src, plan, &report, &out);
        t3 = now_seconds();
    }
    if (rc == EXIT_OK)
        rc = write_svg(&a, &report, plan, &src);
    if (rc == EXIT_OK) {
        char b[32], line[128];
        snprintf(line, sizeof line, "prepack pack: %s rows written to %s",
                 fmt_count(b, out.rows), out.dir);
        progress_done(&prog, line);
    }
    if (rc == EXIT_OK) {
        timings t = {t1 - t0, t2 - t1, t3 - t2};
        if (a.json)
            print_report_json(&a, src.store, &report, t, &out);
        else
            print_report_text(&a, src.store, &report, t, &out);
    }
    prepack_plan_free(plan);
    release_lengths(&src);
    return rc;
}
