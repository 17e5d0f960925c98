/* Verifying a shard set as a whole: each file's XXH64 against the
 * manifest, every frame and row, and files the manifest does not list.
 * Every problem is reported, not only the first. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>

#include "common/alloc.h"
#include "common/error.h"
#include "shards/reader.h"
#include "shards/shard_format.h"

static int check_file_hash(const prepack_reader *r, const shard *s,
                           uint64_t want, prepack_diag *diag)
{
    int fd = open(s->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", s->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd); /* a FIFO would make the hash wait for a writer */
        return pp_reader_corrupt(diag, s->path, "not a regular file");
    }
    XXH64_state_t state, *h = &state;
    XXH64_reset(h, 0);
    unsigned char *buf = pp_alloc(r->alloc, 1 << 20, 1);
    int rc = buf ? PREPACK_OK : pp_out_of_memory(diag);
    ssize_t got;
    while (rc == PREPACK_OK && (got = read(fd, buf, 1 << 20)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "reading %s: %s",
                         s->path, strerror(errno));
        else
            XXH64_update(h, buf, (size_t)got);
    }
    if (rc == PREPACK_OK && XXH64_digest(h) != want)
        rc = pp_reader_corrupt(
            diag, s->path, "xxh64 %016llx, the manifest says %016llx",
            (unsigned long long)XXH64_digest(h), (unsigned long long)want);
    pp_free(r->alloc, buf);
    close(fd);
    return rc;
}

/* Whether `name` is the file of one of the manifest's shards. */
static int listed(const prepack_reader *r, const char *name)
{
    if (strcmp(name, PP_MANIFEST_NAME) == 0)
        return 1;
    for (size_t i = 0; i < r->m.nshards; i++)
        if (strcmp(name, r->m.shards[i].file) == 0)
            return 1;
    return 0;
}

/* Shard-set files in the directory that the manifest does not list: a
 * stray shard or a temporary file left by another run. Each is reported;
 * returns how many. */
static size_t report_strays(const prepack_reader *r,
                            void (*report)(void *, const prepack_diag *),
                            void *opaque)
{
    DIR *dir = opendir(r->dir);
    if (!dir)
        return 0; /* the shards were opened: nothing more to learn here */
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (!pp_is_set_file(e->d_name) || listed(r, e->d_name))
            continue;
        prepack_diag d;
        memset(&d, 0, sizeof d);
        pp_fail(&d, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                "%s/%s: not listed in the manifest (left by another run?)",
                r->dir, e->d_name);
        n++;
        if (report)
            report(opaque, &d);
    }
    closedir(dir);
    return n;
}

/* What one pass over the rows adds up, against the manifest's claims. */
typedef struct tally {
    uint64_t items, max_seqs, shard_tokens;
} tally;

typedef struct problems {
    void (*report)(void *, const prepack_diag *);
    void *opaque;
    size_t count;
} problems;

static void problem(problems *p, const prepack_diag *d)
{
    p->count++;
    if (p->report)
        p->report(p->opaque, d);
}

static void claim_problem(problems *p, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void claim_problem(problems *p, const char *path, const char *fmt, ...)
{
    prepack_diag d;
    memset(&d, 0, sizeof d);
    va_list ap;
    va_start(ap, fmt);
    pp_vfail(&d, PREPACK_ECORRUPT, PREPACK_NO_RECORD, path, fmt, ap);
    va_end(ap);
    problem(p, &d);
}

/* A row that passed its own checks, against the manifest's limits. */
static int row_within_claims(const prepack_reader *r, const prepack_row *row,
                             const char *path, size_t index, problems *p)
{
    const pp_manifest *m = &r->m;
    if (m->max_seqs_per_row && row->num_seqs > m->max_seqs_per_row) {
        claim_problem(p, path, "row %zu: %zu sequences, max_seqs_per_row %u",
                      index, row->num_seqs, m->max_seqs_per_row);
        return 0;
    }
    /* sequences padded past L: refused by the reader's row check */
    for (size_t j = 0; m->has_stats && j < row->num_seqs; j++)
        if (row->seq_ids[j] >= m->stats.sequences) {
            claim_problem(p, path,
                          "row %zu: sequence id %llu, the manifest says %llu "
                          "sequences were packed",
                          index, (unsigned long long)row->seq_ids[j],
                          (unsigned long long)m->stats.sequences);
            return 0;
        }
    return 1;
}

static void check_shard_rows(prepack_reader *r, size_t si, tally *t,
                             problems *p,
                             void (*each_row)(void *, size_t,
                                              const prepack_row *))
{
    shard *s = &r->shards[si];
    prepack_diag d;
    for (size_t f = 0; f < s->nframes; f++) {
        memset(&d, 0, sizeof d);
        if (pp_reader_load_frame(r, si, f, &d) != PREPACK_OK) {
            problem(p, &d);
            continue;
        }
        uint32_t n = r->unp.data.via.array.size;
        for (uint32_t j = 0; j < n; j++) {
            prepack_row row;
            size_t index = s->first_row + f * r->m.rows_per_frame + j;
            memset(&d, 0, sizeof d);
            if (pp_reader_fill_row(r, &r->unp.data.via.array.ptr[j], &row,
                                   s->path, f, j, &d) != PREPACK_OK) {
                problem(p, &d);
                continue;
            }
            t->items += row.num_seqs;
            t->shard_tokens += row.num_tokens;
            if (row.num_seqs > t->max_seqs)
                t->max_seqs = row.num_seqs;
            if (row_within_claims(r, &row, s->path, index, p) && each_row)
                each_row(p->opaque, index, &row);
        }
    }
}

/* The "stats" figures only a whole, undamaged pass can prove. */
static void check_stats(const prepack_reader *r, const tally *t, problems *p)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/" PP_MANIFEST_NAME, r->dir);
    const pp_manifest_stats *s = &r->m.stats;
    if (t->items != s->items)
        claim_problem(p, path, "stats.items is %llu, the rows hold %llu",
                      (unsigned long long)s->items,
                      (unsigned long long)t->items);
    if (t->max_seqs != s->max_seqs_in_row)
        claim_problem(p, path,
                      "stats.max_seqs_in_row is %llu, the rows' most is %llu",
                      (unsigned long long)s->max_seqs_in_row,
                      (unsigned long long)t->max_seqs);
}

size_t prepack_reader_verify_rows(
    prepack_reader *r, void (*report)(void *opaque, const prepack_diag *d),
    void (*each_row)(void *opaque, size_t index, const prepack_row *row),
    void *opaque)
{
    problems p = {report, opaque, 0};
    tally t = {0, 0, 0};
    for (size_t si = 0; si < r->m.nshards; si++) {
        shard *s = &r->shards[si];
        if (s->damage) { /* found at open: its frames cannot be trusted */
            problem(&p, s->damage);
            continue;
        }
        prepack_diag d;
        memset(&d, 0, sizeof d);
        if (check_file_hash(r, s, r->m.shards[si].xxh64, &d) != PREPACK_OK)
            problem(&p, &d);
        size_t before = p.count;
        t.shard_tokens = 0;
        check_shard_rows(r, si, &t, &p, each_row);
        if (p.count == before && t.shard_tokens != r->m.shards[si].tokens)
            claim_problem(&p, s->path,
                          "its rows hold %llu tokens, the manifest says %llu",
                          (unsigned long long)t.shard_tokens,
                          (unsigned long long)r->m.shards[si].tokens);
    }
    if (p.count == 0 && r->m.has_stats)
        check_stats(r, &t, &p);
    return p.count + report_strays(r, report, opaque);
}

size_t prepack_reader_verify(prepack_reader *r,
                             void (*report)(void *opaque,
                                            const prepack_diag *d),
                             void *opaque)
{
    return prepack_reader_verify_rows(r, report, NULL, opaque);
}
