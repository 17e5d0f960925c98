/* Verifying a shard set as a whole: each file's XXH64 against the
 * manifest, every frame and row, and files the manifest does not list.
 * Every problem is reported, not only the first. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>

#include "common/alloc.h"
#include "common/error.h"
#include "shards/reader.h"
#include "shards/shard_format.h"

size_t prepack_reader_shard_count(const prepack_reader *r)
{
    return r->m.nshards;
}

uint64_t prepack_reader_shard_rows(const prepack_reader *r, size_t i)
{
    return r->shards[i].rows;
}

static int check_file_hash(const prepack_reader *r, const shard *s,
                           uint64_t want, prepack_diag *diag)
{
    int fd = open(s->path, O_RDONLY);
    if (fd < 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", s->path, strerror(errno));
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

size_t prepack_reader_verify(prepack_reader *r,
                             void (*report)(void *opaque,
                                            const prepack_diag *d),
                             void *opaque)
{
    size_t problems = 0;
    prepack_diag d;
#define PROBLEM()                                                              \
    do {                                                                       \
        problems++;                                                            \
        if (report)                                                            \
            report(opaque, &d);                                                \
    } while (0)
    for (size_t si = 0; si < r->m.nshards; si++) {
        shard *s = &r->shards[si];
        if (s->damage) { /* found at open: its frames cannot be trusted */
            d = *s->damage;
            PROBLEM();
            continue;
        }
        memset(&d, 0, sizeof d);
        if (check_file_hash(r, s, r->m.shards[si].xxh64, &d) != PREPACK_OK)
            PROBLEM();
        for (size_t f = 0; f < s->nframes; f++) {
            memset(&d, 0, sizeof d);
            if (pp_reader_load_frame(r, si, f, &d) != PREPACK_OK) {
                PROBLEM();
                continue;
            }
            uint32_t n = r->unp.data.via.array.size;
            for (uint32_t j = 0; j < n; j++) {
                prepack_row row;
                memset(&d, 0, sizeof d);
                if (pp_reader_fill_row(r, &r->unp.data.via.array.ptr[j], &row,
                                       s->path, f, j, &d) != PREPACK_OK)
                    PROBLEM();
            }
        }
    }
#undef PROBLEM
    return problems + report_strays(r, report, opaque);
}
