/* Where a command's lengths come from: a lengths file, or INPUTs ingested
 * into a token store; and planner errors told in terms of those. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* A planner failure, told in terms of the input: for a lengths file the
 * line is the sequence + 1; for inputs, prepack_plan_store names the input
 * and its record (the hint only where sequences plan alone: a group is
 * never split or truncated). */
static int plan_error(const cmd_args *a, const lengths_source *src, int rc,
                      const prepack_diag *d)
{
    const char *hint = "(choose --overlong truncate, split or drop)";
    size_t groups;
    if (rc == PREPACK_EOVERLONG && a->lengths_path)
        return data_error("%s:%llu: %s %s", a->lengths_path,
                          (unsigned long long)d->record + 1, d->message, hint);
    if (rc == PREPACK_EOVERLONG &&
        prepack_store_group_first(src->store, &groups))
        return data_error("%s", d->message);
    if (rc == PREPACK_EOVERLONG)
        return data_error("%s %s", d->message, hint);
    return library_error(rc, d);
}

int plan_and_report(cmd_args *a, const lengths_source *src, prepack_plan **plan,
                    prepack_report *report)
{
    prepack_diag diag = {0};
    int rc = src->store ? prepack_plan_store(plan, src->store, &a->plan, &diag)
                        : prepack_plan_create(plan, src->lengths, src->n,
                                              &a->plan, &diag);
    if (rc == PREPACK_OK)
        rc = prepack_report_compute(*plan, src->lengths, src->n, a->batch_size,
                                    report);
    return rc == PREPACK_OK ? EXIT_OK : plan_error(a, src, rc, &diag);
}

static int load_lengths_file(const cmd_args *a, lengths_source *src)
{
    char *text = NULL;
    size_t size = 0;
    int rc = read_whole_file(a->lengths_path, &text, &size);
    if (rc != EXIT_OK)
        return rc;
    const char *name = strcmp(a->lengths_path, "-") ? a->lengths_path : "stdin";
    prepack_diag diag = {0};
    int prc = prepack_lengths_parse(text, size, name, &src->owned, &src->n,
                                    NULL, &diag);
    free(text);
    if (prc != PREPACK_OK)
        return library_error(prc, &diag);
    src->lengths = src->owned;
    return EXIT_OK;
}

int ingest_inputs(char *const *inputs, int n, const prepack_store_options *so,
                  const prepack_ingest_options *io, prepack_store **out)
{
    prepack_diag diag = {0};
    int rc = prepack_store_create(out, so, &diag);
    for (int i = 0; rc == PREPACK_OK && i < n; i++)
        rc = prepack_ingest_file(*out, inputs[i], io, &diag);
    if (rc == PREPACK_OK)
        rc = prepack_store_finish(*out, &diag);
    return rc == PREPACK_OK ? EXIT_OK : library_error(rc, &diag);
}

static int load_inputs(const cmd_args *a, lengths_source *src)
{
    prepack_store_options so = a->store;
    /* stats needs lengths only (tokens are still checked); pack needs all */
    so.lengths_only = !a->is_pack;
    prepack_ingest_options io = a->ingest;
    io.progress = progress_update;
    io.progress_opaque = a->progress;
    int rc = ingest_inputs(a->inputs, a->ninputs, &so, &io, &src->store);
    if (rc != EXIT_OK)
        return rc;
    src->lengths = prepack_store_lengths(src->store);
    src->n = prepack_store_sequence_count(src->store);
    return EXIT_OK;
}

void release_lengths(lengths_source *src)
{
    prepack_free(src->owned, NULL);
    prepack_store_free(src->store);
}

int load_lengths(const cmd_args *a, lengths_source *src)
{
    memset(src, 0, sizeof *src);
    return a->lengths_path ? load_lengths_file(a, src) : load_inputs(a, src);
}

int write_svg(const cmd_args *a, const prepack_report *r,
              const prepack_plan *plan, const lengths_source *src)
{
    if (!a->svg_path)
        return EXIT_OK;
    /* never through a link, never waiting on a FIFO (DESIGN.md, the
     * threat model's rule 2): a report is a file of its own */
    int fd = open(a->svg_path,
                  O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK |
                      O_CLOEXEC,
                  0666);
    struct stat st;
    if (fd < 0 && errno == ELOOP)
        return data_error("%s is a symbolic link: the report is written to "
                          "a file, never through a link",
                          a->svg_path);
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return data_error("%s is not a regular file", a->svg_path);
    }
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return data_error("cannot create %s: %s", a->svg_path, strerror(e));
    }
    int rc = prepack_report_write_svg(r, plan, src->lengths, src->n, f);
    if (fclose(f) != 0 || rc != PREPACK_OK)
        return data_error("writing %s failed", a->svg_path);
    return EXIT_OK;
}
