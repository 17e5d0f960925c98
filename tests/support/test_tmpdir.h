/* A scratch directory per test program, for tests that write files.
 * Include after defining _POSIX_C_SOURCE 200809L (mkdtemp). */
#ifndef TEST_TMPDIR_H
#define TEST_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

/* ---- a scratch directory per test program ------------------------------ */

static char test_tmpdir[256];

/* cmocka group setup/teardown: a fresh /tmp/prepack-test-<random>, removed
 * with everything in it. */
static inline int tmpdir_setup(void **state)
{
    (void)state;
    snprintf(test_tmpdir, sizeof test_tmpdir, "/tmp/prepack-test-XXXXXX");
    return mkdtemp(test_tmpdir) ? 0 : -1;
}

static inline int tmpdir_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* test_tmpdir/name, in one of four rotating buffers. */
static inline const char *path_of(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir, name);
    return buf[k];
}

/* XORs byte `at` of a file with mask; 0, or -1 when it cannot. */
static inline int flip_byte_at(const char *path, long at, int mask)
{
    FILE *f = fopen(path, "r+b");
    if (!f)
        return -1;
    int c = fseek(f, at, SEEK_SET) == 0 ? fgetc(f) : EOF;
    int rc = c == EOF || fseek(f, at, SEEK_SET) != 0 ||
                     fputc(c ^ mask, f) == EOF
                 ? -1
                 : 0;
    return fclose(f) == 0 ? rc : -1;
}

#endif
