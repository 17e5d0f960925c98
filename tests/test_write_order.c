/* The writer's renames, seen and failed deterministically: rename() and
 * renameat2() are wrapped at link time (-Wl,--wrap), so this test logs
 * every name the library moves into place, in order, and can make the
 * k-th move fail. Random-delay kill tests cannot see a manifest renamed a
 * microsecond too early; this can.
 *
 * - A set's manifest is the last name to appear, after every shard.
 * - Whichever rename fails, the writer reports it and, freed, leaves the
 *   directory as it found it: no manifest, no shard, no temporary file;
 *   when overwriting, the old set byte for byte and nothing beside it. */
#define _GNU_SOURCE /* renameat2 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_tmpdir.h"

/* ---- the wrapped renames ------------------------------------------------- */

enum { MAX_LOG = 64 };

static char moved[MAX_LOG][64]; /* the destination's last path component */
static int nmoved;
static int fail_at = -1; /* the call to fail (0-based), or -1 */
static int ncalls;

int __real_rename(const char *from, const char *to);
int __real_renameat2(int fromfd, const char *from, int tofd, const char *to,
                     unsigned flags);
int __wrap_rename(const char *from, const char *to);
int __wrap_renameat2(int fromfd, const char *from, int tofd, const char *to,
                     unsigned flags);

/* Logs a move; returns non-zero when this call is the one to fail. */
static int log_move(const char *to)
{
    const char *slash = strrchr(to, '/');
    if (nmoved < MAX_LOG)
        snprintf(moved[nmoved++], sizeof moved[0], "%s", slash ? slash + 1 : to);
    if (ncalls++ == fail_at) {
        errno = EIO;
        return 1;
    }
    return 0;
}

int __wrap_rename(const char *from, const char *to)
{
    return log_move(to) ? -1 : __real_rename(from, to);
}

int __wrap_renameat2(int fromfd, const char *from, int tofd, const char *to,
                     unsigned flags)
{
    return log_move(to) ? -1 : __real_renameat2(fromfd, from, tofd, to, flags);
}

static void reset_log(int fail)
{
    nmoved = ncalls = 0;
    fail_at = fail;
}

/* ---- a small set ----------------------------------------------------------- */

enum { L = 16, ROWS = 40 };

/* Writes ROWS rows of 4..15 tokens, 8 rows a shard (5 shards); returns the
 * first error (the writer freed either way). */
static int write_small_set(const char *dir, int overwrite, uint16_t salt)
{
    prepack_writer_options o = {.rows_per_frame = 4, .shard_rows = 8,
                                .overwrite = overwrite};
    prepack_writer *w = NULL;
    prepack_diag d = {0};
    int rc = prepack_writer_create(&w, dir, L, PREPACK_DTYPE_UINT16, &o, &d);
    uint16_t tok[L];
    for (size_t r = 0; rc == PREPACK_OK && r < ROWS; r++) {
        size_t t = 4 + r % 12;
        for (size_t i = 0; i < t; i++)
            tok[i] = (uint16_t)(r * 31 + i + salt);
        int32_t cu[2] = {0, (int32_t)t};
        uint64_t id = r;
        prepack_row row = {t, 1, PREPACK_DTYPE_UINT16, tok, cu, &id, NULL,
                           NULL};
        rc = prepack_writer_add(w, &row, &d);
    }
    /* says the set's sequences were all placed: the reader's empty-set
     * and stats rules do not come into it */
    if (rc == PREPACK_OK)
        rc = prepack_writer_finish(w, NULL, &d);
    if (rc != PREPACK_OK)
        assert_non_null(strstr(d.message, test_tmpdir));
    prepack_writer_free(w);
    return rc;
}

/* The names in dir (and, with prefix, those beside it starting so), one
 * per line, sorted by the shell. */
static void listing(const char *dir, char *out, size_t cap)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null; ls -A '%s/..' | "
             "grep prepack- ", dir, dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    pclose(p);
}

static void read_manifest(const char *dir, char *out, size_t cap)
{
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_manifest_is_renamed_last(void **state)
{
    (void)state;
    const char *dir = path_of("order");
    reset_log(-1);
    assert_int_equal(write_small_set(dir, 0, 0), PREPACK_OK);
    assert_int_equal(nmoved, 6); /* 5 shards, then the manifest */
    for (int i = 0; i < 5; i++) {
        char want[32];
        snprintf(want, sizeof want, "shard-%05d.zst", i);
        assert_string_equal(moved[i], want);
    }
    assert_string_equal(moved[5], "manifest.json");

    /* overwriting: the same, in the staging directory, then one exchange
     * of the two directories' names */
    reset_log(-1);
    assert_int_equal(write_small_set(dir, 1, 7), PREPACK_OK);
    assert_int_equal(nmoved, 7);
    assert_string_equal(moved[5], "manifest.json");
    assert_string_equal(moved[6], "order");
}

static void test_a_failed_rename_leaves_nothing(void **state)
{
    (void)state;
    char what[4096];
    for (int k = 0; k < 6; k++) {
        char name[32];
        snprintf(name, sizeof name, "fail-%d", k);
        const char *dir = path_of(name);
        reset_log(k);
        assert_int_equal(write_small_set(dir, 0, 0), PREPACK_EIO);
        listing(dir, what, sizeof what);
        if (*what)
            fail_msg("rename %d failed; left in %s:\n%s", k, dir, what);
    }
}

static void test_a_failed_overwrite_keeps_the_old_set(void **state)
{
    (void)state;
    const char *dir = path_of("keep");
    reset_log(-1);
    assert_int_equal(write_small_set(dir, 0, 0), PREPACK_OK);
    char before[8192], after[8192], files[4096], files_after[4096];
    read_manifest(dir, before, sizeof before);
    listing(dir, files, sizeof files);
    for (int k = 0; k < 7; k++) { /* 5 shards, the manifest, the exchange */
        reset_log(k);
        assert_int_equal(write_small_set(dir, 1, 9), PREPACK_EIO);
        read_manifest(dir, after, sizeof after);
        assert_string_equal(before, after);
        listing(dir, files_after, sizeof files_after);
        if (strcmp(files, files_after) != 0)
            fail_msg("rename %d failed; before:\n%safter:\n%s", k, files,
                     files_after);
        prepack_reader *r = NULL;
        prepack_diag d = {0};
        reset_log(-1);
        if (prepack_reader_open(&r, dir, NULL, &d) != PREPACK_OK)
            fail_msg("rename %d failed; the old set: %s", k, d.message);
        assert_int_equal(prepack_reader_verify(r, NULL, NULL), 0);
        prepack_reader_free(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_is_renamed_last),
        cmocka_unit_test(test_a_failed_rename_leaves_nothing),
        cmocka_unit_test(test_a_failed_overwrite_keeps_the_old_set),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
