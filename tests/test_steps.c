/* prepack_step_scan / _plan / _write / _finalize through the public header:
 * the set equals the one prepack_writer writes from one store and one plan
 * (pack's path), for several task counts; argument errors; the task named
 * when a step's output is missing; reruns that do nothing. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "prepack.h"
#include "test_tmpdir.h"

enum { NFILES = 3, NSEQ = 400, L = 256 };

/* Three JSONL inputs of pseudo-random sequences (some over L, some with a
 * loss mask), written once. */
static const char *inputs[NFILES];

static int write_inputs(void **state)
{
    if (tmpdir_setup(state) != 0)
        return -1;
    uint64_t x = 12345;
    for (int f = 0; f < NFILES; f++) {
        static char names[NFILES][512];
        snprintf(names[f], sizeof names[f], "%s/in%d.jsonl", test_tmpdir, f);
        inputs[f] = names[f];
        FILE *out = fopen(names[f], "w");
        if (!out)
            return -1;
        for (int i = 0; i < NSEQ; i++) {
            x = x * 6364136223846793005u + 1442695040888963407u;
            int len = 1 + (int)((x >> 33) % (i % 17 == 0 ? 700 : 200));
            fputs("{\"input_ids\": [", out);
            for (int k = 0; k < len; k++)
                fprintf(out, "%s%d", k ? ", " : "",
                        (int)((x >> (k % 40)) % 50000));
            if (i % 5 == 0) {
                fputs("], \"loss_mask\": [", out);
                for (int k = 0; k < len; k++)
                    fprintf(out, "%s%d", k ? ", " : "", (k + i) % 3 != 0);
            }
            fputs("]}\n", out);
        }
        fclose(out);
    }
    return 0;
}

static prepack_step_options options(void)
{
    prepack_step_options o;
    memset(&o, 0, sizeof o);
    o.inputs = inputs;
    o.ninputs = NFILES;
    o.plan.max_seq_len = L;
    o.plan.overlong = PREPACK_OVERLONG_SPLIT;
    o.writer.shard_rows = 40;
    o.writer.rows_per_frame = 7;
    return o;
}

/* pack's path: one store, one plan, one writer. */
static void pack_whole(const char *dir)
{
    prepack_step_options o = options();
    prepack_store *s = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_store_create(&s, &o.store, &d), PREPACK_OK);
    for (int f = 0; f < NFILES; f++)
        assert_int_equal(prepack_ingest_file(s, inputs[f], &o.ingest, &d),
                         PREPACK_OK);
    assert_int_equal(prepack_store_finish(s, &d), PREPACK_OK);
    prepack_plan *plan = NULL;
    const uint32_t *lengths = prepack_store_lengths(s);
    size_t n = prepack_store_sequence_count(s);
    assert_int_equal(prepack_plan_create(&plan, lengths, n, &o.plan, &d),
                     PREPACK_OK);
    prepack_report report;
    assert_int_equal(prepack_report_compute(plan, lengths, n, 0, &report),
                     PREPACK_OK);
    prepack_row_builder *b = NULL;
    prepack_writer *w = NULL;
    assert_int_equal(prepack_row_builder_create(&b, plan, s, &d), PREPACK_OK);
    assert_int_equal(prepack_writer_create(&w, dir, L, prepack_store_dtype(s),
                                           &o.writer, &d),
                     PREPACK_OK);
    for (size_t r = 0; r < prepack_plan_row_count(plan); r++) {
        prepack_row row;
        assert_int_equal(prepack_row_builder_get(b, r, &row), PREPACK_OK);
        assert_int_equal(prepack_writer_add(w, &row, &d), PREPACK_OK);
    }
    prepack_manifest_info info = {&o.plan, s, &report};
    assert_int_equal(prepack_writer_finish(w, &info, &d), PREPACK_OK);
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(s);
}

static void run_steps(const char *dir, uint32_t n, uint32_t m)
{
    prepack_step_options o = options();
    prepack_diag d = {0};
    prepack_step_result r;
    for (uint32_t t = 0; t < n; t++) {
        int rc = prepack_step_scan(dir, &o, t, n, &r, &d);
        assert_int_equal(rc, PREPACK_OK);
        assert_false(r.already_done);
    }
    assert_int_equal(prepack_step_plan(dir, &o, n, &r, &d), PREPACK_OK);
    for (uint32_t t = m; t-- > 0;)
        assert_int_equal(prepack_step_write(dir, &o, t, m, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_finalize(dir, &o, m, 1, &r, &d), PREPACK_OK);
    assert_true(r.rows > 0);
}

static char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc(*size + 1);
    if (p && fread(p, 1, *size, f) != *size) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

/* Same names, same bytes. */
static void assert_same_dirs(const char *a, const char *b)
{
    DIR *d = opendir(a);
    assert_non_null(d);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, e->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, e->d_name);
        size_t na = 0, nb = 0;
        char *x = slurp(pa, &na), *y = slurp(pb, &nb);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, na);
        free(x);
        free(y);
        files++;
    }
    closedir(d);
    int other = 0;
    d = opendir(b);
    while ((e = readdir(d)) != NULL)
        other += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    assert_int_equal(files, other);
    assert_true(files > 2);
}

static void test_steps_equal_one_process(void **state)
{
    (void)state;
    pack_whole(path_of("whole"));
    const uint32_t counts[][2] = {{1, 1}, {2, 3}, {4, 2}, {9, 5}};
    for (size_t i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "steps-%u-%u", counts[i][0], counts[i][1]);
        run_steps(path_of(name), counts[i][0], counts[i][1]);
        assert_same_dirs(path_of("whole"), path_of(name));
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    prepack_step_options o = options();
    prepack_diag d = {0};
    assert_int_equal(prepack_step_scan(NULL, &o, 0, 1, NULL, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_step_scan(path_of("x"), NULL, 0, 1, NULL, NULL),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_step_scan(path_of("x"), &o, 2, 2, NULL, &d),
                     PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "not below the task count"));
    assert_int_equal(prepack_step_plan(path_of("x"), &o, 0, NULL, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_step_write(path_of("x"), &o, 0, 0, NULL, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_step_finalize(path_of("x"), &o, 0, 1, NULL, &d),
                     PREPACK_EINVAL);
    o.writer.shard_bytes = 1 << 20;
    assert_int_equal(prepack_step_scan(path_of("x"), &o, 0, 1, NULL, &d),
                     PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "shard_rows"));
    o = options();
    o.ninputs = 0;
    assert_int_equal(prepack_step_scan(path_of("x"), &o, 0, 1, NULL, &d),
                     PREPACK_EINVAL);
}

static void test_missing_outputs_name_the_task(void **state)
{
    (void)state;
    prepack_step_options o = options();
    prepack_diag d = {0};
    prepack_step_result r;
    const char *dir = path_of("missing");
    assert_int_equal(prepack_step_scan(dir, &o, 0, 3, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_scan(dir, &o, 2, 3, &r, &d), PREPACK_OK);
    assert_int_not_equal(prepack_step_plan(dir, &o, 3, &r, &d), PREPACK_OK);
    assert_non_null(strstr(d.message, "scan task 1 of 3 has no result"));
    assert_int_equal(prepack_step_scan(dir, &o, 1, 3, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_scan(dir, &o, 1, 3, &r, &d), PREPACK_OK);
    assert_true(r.already_done);
    assert_int_not_equal(prepack_step_write(dir, &o, 0, 2, &r, &d), PREPACK_OK);
    assert_non_null(strstr(d.message, "run prepack plan first"));
    assert_int_equal(prepack_step_plan(dir, &o, 3, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_write(dir, &o, 1, 2, &r, NULL), PREPACK_OK);
    assert_int_not_equal(prepack_step_finalize(dir, &o, 2, 1, &r, &d),
                         PREPACK_OK);
    assert_non_null(strstr(d.message, "write task 0 of 2 has no result"));
    assert_int_equal(prepack_step_write(dir, &o, 0, 2, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_finalize(dir, &o, 2, 0, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_finalize(dir, &o, 2, 1, &r, &d), PREPACK_OK);
    assert_true(r.already_done);
    assert_same_dirs(path_of("whole"), dir);
}

/* ---- an untrusted job directory (issue 26) ------------------------------- */

static void scan_plan_write(const char *dir, uint32_t n)
{
    prepack_step_options o = options();
    prepack_diag d = {0};
    for (uint32_t t = 0; t < n; t++)
        assert_int_equal(prepack_step_scan(dir, &o, t, n, NULL, &d),
                         PREPACK_OK);
    assert_int_equal(prepack_step_plan(dir, &o, n, NULL, &d), PREPACK_OK);
    assert_int_equal(prepack_step_write(dir, &o, 0, 1, NULL, &d), PREPACK_OK);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* Rule 2: finalize removed every file of the directory a symlinked
 * .prepack-job pointed to. */
static void test_a_linked_job_directory_is_refused(void **state)
{
    (void)state;
    const char *dir = path_of("linked");
    char job[600], moved[600], decoy[600], cmd[2000];
    scan_plan_write(dir, 2);
    snprintf(job, sizeof job, "%s/.prepack-job", dir);
    snprintf(moved, sizeof moved, "%s", path_of("linked-moved"));
    snprintf(decoy, sizeof decoy, "%s", path_of("linked-decoy"));
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && touch '%s/precious'", job,
             decoy, decoy);
    assert_int_equal(system(cmd), 0);
    int before = count_files(decoy);
    assert_int_equal(rename(job, moved), 0);
    assert_int_equal(symlink(decoy, job), 0);
    prepack_step_options o = options();
    prepack_diag d = {0};
    assert_int_equal(prepack_step_finalize(dir, &o, 1, 1, NULL, &d),
                     PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "symbolic link"));
    assert_int_equal(count_files(decoy), before);
    assert_int_equal(prepack_step_scan(dir, &o, 0, 2, NULL, &d),
                     PREPACK_EINVAL);
    assert_int_equal(count_files(decoy), before);
    /* DIR itself a link, spelled so that the last part is not the link */
    char link[600], spelled[700];
    snprintf(link, sizeof link, "%s", path_of("linked-link"));
    assert_int_equal(symlink(decoy, link), 0);
    const char *tails[] = {"", "/", "/.", "/./", "//.", "/x/.."};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        snprintf(spelled, sizeof spelled, "%s%s", link, tails[i]);
        assert_int_equal(prepack_step_scan(spelled, &o, 0, 2, NULL, &d),
                         PREPACK_EINVAL);
        assert_int_equal(count_files(decoy), before);
    }
    assert_int_equal(unlink(job), 0);
    assert_int_equal(rename(moved, job), 0);
    assert_int_equal(prepack_step_finalize(dir, &o, 1, 1, NULL, &d),
                     PREPACK_OK);
    assert_same_dirs(path_of("whole"), dir);
}

/* Two runs of one task removed each other's files: one holds its lock. */
static void test_one_run_per_task(void **state)
{
    (void)state;
    const char *dir = path_of("locked");
    prepack_step_options o = options();
    prepack_diag d = {0};
    assert_int_equal(prepack_step_scan(dir, &o, 1, 2, NULL, &d), PREPACK_OK);
    char lock[600];
    snprintf(lock, sizeof lock, "%s/.prepack-job/scan-00000.lock", dir);
    int fd = open(lock, O_RDWR | O_CREAT, 0666);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    assert_int_equal(prepack_step_scan(dir, &o, 0, 2, NULL, &d), PREPACK_EIO);
    assert_non_null(strstr(d.message, "another run holds scan task 0"));
    close(fd);
    assert_int_equal(prepack_step_scan(dir, &o, 0, 2, NULL, &d), PREPACK_OK);
}

/* Rule 4: a flipped byte in a task's tokens reached the set. */
static void test_a_flipped_token_byte_is_refused(void **state)
{
    (void)state;
    const char *dir = path_of("flipped");
    prepack_step_options o = options();
    prepack_diag d = {0};
    assert_int_equal(prepack_step_scan(dir, &o, 0, 1, NULL, &d), PREPACK_OK);
    assert_int_equal(prepack_step_plan(dir, &o, 1, NULL, &d), PREPACK_OK);
    char tokens[600];
    snprintf(tokens, sizeof tokens, "%s/.prepack-job/scan-00000.tokens", dir);
    assert_int_equal(flip_byte_at(tokens, 1000, 1), 0);
    assert_int_equal(prepack_step_write(dir, &o, 0, 1, NULL, &d),
                     PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "scan-00000.tokens"));
    assert_non_null(strstr(d.message, "rerun scan task 0"));
}

/* Rule 6: a crafted plan.meta with a correct XXH64 (shards = 2^64 - 1
 * once sized an array of none and looped for ever). */
static void test_a_crafted_plan_with_a_correct_hash_is_refused(void **state)
{
    (void)state;
    const char *dir = path_of("crafted");
    scan_plan_write(dir, 1);
    char plan[600];
    snprintf(plan, sizeof plan, "%s/.prepack-job/plan.meta", dir);
    size_t n = 0;
    unsigned char *b = (unsigned char *)slurp(plan, &n);
    assert_non_null(b);
    assert_true(n > 100);
    /* shards, scan_tasks, ninputs, max_seq_len, scan_first[1] */
    const size_t at[] = {68, 16, 84, 20, 96}, width[] = {8, 4, 4, 4, 8};
    for (size_t f = 0; f < 5; f++) {
        unsigned char *c = malloc(n);
        assert_non_null(c);
        memcpy(c, b, n);
        memset(c + at[f], 0xFF, width[f]);
        uint64_t h = XXH64(c, n - 8, 0);
        for (int i = 0; i < 8; i++)
            c[n - 8 + (size_t)i] = (unsigned char)(h >> (8 * i));
        FILE *out = fopen(plan, "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(c, 1, n, out), n);
        fclose(out);
        free(c);
        prepack_step_options o = options();
        prepack_diag d = {0};
        assert_int_equal(prepack_step_write(dir, &o, 0, 1, NULL, &d),
                         PREPACK_ECORRUPT);
        assert_non_null(strstr(d.message, "plan.meta is damaged"));
        assert_int_equal(prepack_step_finalize(dir, &o, 1, 1, NULL, &d),
                         PREPACK_ECORRUPT);
    }
    free(b);
}

/* A scan task whose caller fills the store (the Python package's text
 * scan), here with the whole inputs of one task: the set equals pack's;
 * a rerun does nothing; an index out of range, a store whose inputs are
 * not the task's parts, and a scan freed unsaved leave nothing. */
static void caller_scan(const char *dir, const prepack_step_options *o,
                        int wrong_input)
{
    prepack_step_scanner *sc = NULL;
    prepack_step_range ranges[NFILES];
    size_t n = 0;
    prepack_store *s = NULL;
    prepack_step_result r;
    prepack_diag d = {0};
    assert_int_equal(prepack_step_scan_open(&sc, dir, o, 0, 1, ranges, &n, &s,
                                            &r, &d),
                     PREPACK_OK);
    assert_non_null(sc);
    assert_int_equal(n, NFILES);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ranges[i].input, i);
        assert_int_equal(ranges[i].begin, 0);
        size_t k = wrong_input && i == 1 ? 2 : i;
        assert_int_equal(prepack_ingest_file(s, inputs[k], &o->ingest, &d),
                         PREPACK_OK);
    }
    int rc = prepack_step_scan_save(sc, NULL, NULL, &r, &d);
    if (wrong_input) {
        assert_int_equal(rc, PREPACK_EINVAL);
        assert_non_null(strstr(d.message, "none of the task's parts"));
    } else {
        assert_int_equal(rc, PREPACK_OK);
        assert_int_equal(r.sequences, NFILES * NSEQ);
    }
    prepack_step_scan_free(sc);
}

static int scan_files(const char *dir)
{
    char job[1024];
    snprintf(job, sizeof job, "%s/.prepack-job", dir);
    DIR *d = opendir(job);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += !strncmp(e->d_name, "scan-00000.", 11) &&
             strcmp(e->d_name, "scan-00000.lock");
    if (d)
        closedir(d);
    return n;
}

static void test_a_scan_the_caller_fills(void **state)
{
    (void)state;
    pack_whole(path_of("whole-caller"));
    prepack_step_options o = options();
    o.text_key = "text:test";
    const char *dir = path_of("caller");
    prepack_step_scanner *sc = NULL;
    prepack_step_range ranges[NFILES];
    size_t n = 0;
    prepack_store *s = NULL;
    prepack_step_result r;
    prepack_diag d = {0};
    assert_int_equal(prepack_step_scan_open(&sc, dir, &o, 1, 1, ranges, &n,
                                            &s, &r, &d),
                     PREPACK_EINVAL);
    assert_null(sc);
    assert_null(s);
    /* opened, filled, freed unsaved: no file of the task stays */
    assert_int_equal(prepack_step_scan_open(&sc, dir, &o, 0, 1, ranges, &n,
                                            &s, &r, &d),
                     PREPACK_OK);
    assert_int_equal(prepack_ingest_file(s, inputs[0], &o.ingest, &d),
                     PREPACK_OK);
    prepack_step_scan_free(sc);
    assert_int_equal(scan_files(dir), 0);
    caller_scan(dir, &o, 1);
    assert_int_equal(scan_files(dir), 0);
    caller_scan(dir, &o, 0);
    assert_true(scan_files(dir) > 0);
    sc = NULL;
    assert_int_equal(prepack_step_scan_open(&sc, dir, &o, 0, 1, ranges, &n,
                                            &s, &r, &d),
                     PREPACK_OK);
    assert_true(r.already_done);
    assert_null(sc);
    assert_null(s);
    /* the command's scan refuses a text job; plan takes the caller's */
    assert_int_equal(prepack_step_scan(dir, &o, 0, 1, &r, &d), PREPACK_EINVAL);
    prepack_step_options token_ids = options();
    assert_int_equal(prepack_step_plan(dir, &token_ids, 1, &r, &d),
                     PREPACK_EINVAL); /* another key: refused */
    assert_non_null(strstr(d.message, "scan task 0"));
    assert_int_equal(prepack_step_plan(dir, &o, 1, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_write(dir, &o, 0, 1, &r, &d), PREPACK_OK);
    assert_int_equal(prepack_step_finalize(dir, &o, 1, 1, &r, &d), PREPACK_OK);
    assert_same_dirs(path_of("whole-caller"), dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_equal_one_process),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_missing_outputs_name_the_task),
        cmocka_unit_test(test_a_linked_job_directory_is_refused),
        cmocka_unit_test(test_one_run_per_task),
        cmocka_unit_test(test_a_flipped_token_byte_is_refused),
        cmocka_unit_test(test_a_crafted_plan_with_a_correct_hash_is_refused),
        cmocka_unit_test(test_a_scan_the_caller_fills),
    };
    return cmocka_run_group_tests(tests, write_inputs, tmpdir_teardown);
}
