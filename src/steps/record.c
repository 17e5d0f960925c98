/* Records in the job directory, written through a hash and read back
 * through a bounded cursor (the format and why: record.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "steps/record.h"

static void put(pp_rec *r, const void *p, size_t n)
{
    if (!r->out || r->bad)
        return;
    if (fwrite(p, 1, n, r->out) != n)
        r->bad = 1;
    XXH64_update(r->hash, p, n);
    r->written += n;
}

static const unsigned char *take(pp_rec *r, size_t n)
{
    if (r->bad || n > r->in_len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *p = r->in + r->pos;
    r->pos += n;
    return p;
}

static void rec_le(pp_rec *r, uint64_t *v, unsigned width)
{
    unsigned char b[8];
    if (!r->reading) {
        for (unsigned i = 0; i < width; i++)
            b[i] = (unsigned char)(*v >> (8 * i));
        put(r, b, width);
        return;
    }
    const unsigned char *p = take(r, width);
    *v = p ? pp_load_le(p, width) : 0;
}

void pp_rec_u64(pp_rec *r, uint64_t *v)
{
    rec_le(r, v, 8);
}

void pp_rec_u32(pp_rec *r, uint32_t *v)
{
    uint64_t x = *v;
    rec_le(r, &x, 4);
    *v = (uint32_t)x;
}

void pp_rec_i32(pp_rec *r, int32_t *v)
{
    uint32_t x = (uint32_t)*v;
    pp_rec_u32(r, &x);
    *v = (int32_t)x;
}

void pp_rec_f64(pp_rec *r, double *v)
{
    uint64_t x;
    memcpy(&x, v, 8);
    pp_rec_u64(r, &x);
    memcpy(v, &x, 8);
}

void pp_rec_bytes(pp_rec *r, void *p, size_t n)
{
    if (!r->reading) {
        put(r, p, n);
        return;
    }
    const unsigned char *q = take(r, n);
    if (q)
        memcpy(p, q, n);
}

void pp_rec_blob(pp_rec *r, char **p, size_t *n)
{
    uint32_t present = r->reading ? 0 : *p != NULL;
    uint64_t len = r->reading ? 0 : *n;
    pp_rec_u32(r, &present);
    pp_rec_u64(r, &len);
    if (!r->reading) {
        if (present)
            put(r, *p, (size_t)len);
        return;
    }
    *p = NULL;
    *n = 0;
    if (!present || r->bad)
        return;
    const unsigned char *q = take(r, (size_t)len);
    if (!q || !(*p = malloc((size_t)len + 1))) {
        r->bad = 1;
        return;
    }
    memcpy(*p, q, (size_t)len);
    (*p)[len] = '\0';
    *n = (size_t)len;
}

void pp_rec_str(pp_rec *r, char *s, size_t cap)
{
    uint32_t n = r->reading ? 0 : (uint32_t)strlen(s);
    pp_rec_u32(r, &n);
    if (r->reading && n >= cap) {
        r->bad = 1;
        return;
    }
    pp_rec_bytes(r, s, n);
    if (r->reading)
        s[r->bad ? 0 : n] = '\0';
}

static void tmp_name(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s.tmp", name);
}

int pp_rec_create(pp_rec *r, int dirfd, const char *dir, const char *name,
                  prepack_diag *diag)
{
    memset(r, 0, sizeof *r);
    r->dirfd = dirfd;
    r->dir = dir;
    snprintf(r->name, sizeof r->name, "%s", name);
    char tmp[80];
    tmp_name(tmp, sizeof tmp, name);
    unlinkat(dirfd, tmp, 0); /* a killed run's: the task's lock is held */
    r->hash = XXH64_createState();
    int fd =
        r->hash
            ? openat(dirfd, tmp,
                     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666)
            : -1;
    r->out = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!r->out) {
        int e = r->hash ? errno : ENOMEM;
        if (fd >= 0) {
            close(fd);
            unlinkat(dirfd, tmp, 0);
        }
        XXH64_freeState(r->hash);
        r->hash = NULL;
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot create %s/%s: %s", dir, tmp, strerror(e));
    }
    XXH64_reset(r->hash, 0);
    return PREPACK_OK;
}

void pp_rec_abandon(pp_rec *r)
{
    char tmp[80];
    tmp_name(tmp, sizeof tmp, r->name);
    if (r->out) {
        fclose(r->out);
        unlinkat(r->dirfd, tmp, 0);
    }
    r->out = NULL;
    XXH64_freeState(r->hash);
    r->hash = NULL;
}

int pp_rec_save(pp_rec *r, prepack_diag *diag)
{
    char tmp[80];
    tmp_name(tmp, sizeof tmp, r->name);
    unsigned char h[8];
    uint64_t digest = XXH64_digest(r->hash);
    for (int i = 0; i < 8; i++)
        h[i] = (unsigned char)(digest >> (8 * i));
    int bad = r->bad || fwrite(h, 1, 8, r->out) != 8 || fflush(r->out) != 0 ||
              fsync(fileno(r->out)) != 0;
    bad |= fclose(r->out) != 0;
    r->out = NULL;
    XXH64_freeState(r->hash);
    r->hash = NULL;
    if (bad || renameat(r->dirfd, tmp, r->dirfd, r->name) != 0) {
        int e = errno;
        unlinkat(r->dirfd, tmp, 0);
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "writing %s/%s failed: %s", r->dir, r->name,
                       strerror(e));
    }
    return PREPACK_OK;
}

int pp_rec_open(int dirfd, const char *name, uint64_t *size)
{
    *size = 0;
    if (dirfd < 0) {
        errno = ENOENT;
        return -1;
    }
    int fd =
        openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        int e = S_ISREG(st.st_mode) ? errno : EINVAL;
        close(fd);
        errno = e;
        return -1;
    }
    if (fd >= 0)
        *size = (uint64_t)st.st_size;
    return fd;
}

int pp_rec_load(pp_rec *r, int dirfd, const char *dir, const char *name,
                int *missing, prepack_diag *diag)
{
    memset(r, 0, sizeof *r);
    r->reading = 1;
    *missing = 0;
    uint64_t size;
    int fd = pp_rec_open(dirfd, name, &size);
    if (fd < 0) {
        int e = errno;
        *missing = e == ENOENT;
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s/%s: %s", dir, name,
                       e == ELOOP ? "it is a symbolic link" : strerror(e));
    }
    size_t n = (size_t)size;
    unsigned char *buf = size <= SIZE_MAX - 1 ? malloc(n ? n : 1) : NULL;
    int rc = buf && pp_read_at(fd, buf, n, 0) == 0 ? PREPACK_OK : PREPACK_EIO;
    close(fd);
    if (rc != PREPACK_OK) {
        free(buf);
        return pp_fail(diag, rc, PREPACK_NO_RECORD, "reading %s/%s failed", dir,
                       name);
    }
    if (n < 8 || XXH64(buf, n - 8, 0) != pp_load_le(buf + n - 8, 8)) {
        free(buf);
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s/%s is damaged (its checksum fails)", dir, name);
    }
    r->in = buf;
    r->in_len = n - 8;
    return PREPACK_OK;
}

void pp_rec_release(pp_rec *r)
{
    free((void *)r->in);
    r->in = NULL;
}

int pp_rec_verify(int dirfd, const char *name, uint64_t *data_size,
                  uint64_t *hash)
{
    uint64_t size;
    *hash = 0;
    *data_size = 0;
    int fd = pp_rec_open(dirfd, name, &size);
    if (fd < 0)
        return -1;
    unsigned char t[8];
    int rc = size >= 8 && pp_hash_fd(fd, size - 8, hash) == 0 &&
                     pp_read_at(fd, t, 8, size - 8) == 0 &&
                     pp_load_le(t, 8) == *hash
                 ? 0
                 : -1;
    close(fd);
    *data_size = size >= 8 ? size - 8 : 0;
    return rc;
}
