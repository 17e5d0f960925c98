/* Plan-only sets through the public header: rows written by reference
 * (prepack_row_builder_get_references, prepack_writer_add_references)
 * read back equal to the rows a full set holds, on llm.c (uint16) and raw
 * token files and a signed int32 Megatron input; the writers refuse the
 * other kind of row; a changed, moved or extended input fails the open
 * naming the file. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_tmpdir.h"
#include "test_util.h"

enum { DOCS = 400, L = 64 };

static void put_le(FILE *f, uint64_t v, unsigned width)
{
    for (unsigned i = 0; i < width; i++)
        fputc((int)((v >> (8 * i)) & 0xff), f);
}

/* An llm.c file: 256 int32 header (magic 20240520, version 1, count),
 * then uint16 tokens, each document opened by 50256. */
static void write_llmc(const char *path, uint64_t seed)
{
    rng r = {seed};
    uint32_t *tok = malloc(DOCS * 200 * sizeof *tok);
    size_t n = 0;
    for (int d = 0; d < DOCS; d++) {
        tok[n++] = 50256;
        uint32_t len = rng_range(&r, 0, 150);
        for (uint32_t i = 0; i < len; i++)
            tok[n++] = rng_range(&r, 0, 50000);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    put_le(f, 20240520, 4);
    put_le(f, 1, 4);
    put_le(f, n, 4);
    for (int i = 3; i < 256; i++)
        put_le(f, 0, 4);
    for (size_t i = 0; i < n; i++)
        put_le(f, tok[i], 2);
    fclose(f);
    free(tok);
}

/* X.bin (int32 tokens) and X.idx as Megatron's builder writes them. */
static void write_megatron(const char *prefix, uint64_t seed)
{
    rng r = {seed};
    char path[600];
    uint32_t len[DOCS];
    snprintf(path, sizeof path, "%s.bin", prefix);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int d = 0; d < DOCS; d++) {
        len[d] = rng_range(&r, 0, 150);
        for (uint32_t i = 0; i < len[d]; i++)
            put_le(f, rng_range(&r, 0, 100000), 4);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s.idx", prefix);
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("MMIDIDX\0\0", 1, 9, f);
    put_le(f, 1, 8);
    fputc(4, f); /* int32 */
    put_le(f, DOCS, 8);
    put_le(f, DOCS + 1, 8);
    for (int d = 0; d < DOCS; d++)
        put_le(f, len[d], 4);
    uint64_t at = 0;
    for (int d = 0; d < DOCS; d++, at += 4 * (uint64_t)len[d - 1])
        put_le(f, at, 8);
    for (int d = 0; d <= DOCS; d++)
        put_le(f, (uint64_t)d, 8);
    fclose(f);
}

typedef struct packed {
    prepack_store *store;
    prepack_plan *plan;
    prepack_plan_options opts;
    prepack_report report;
} packed;

static void pack_inputs(packed *p, const char *const *inputs, size_t n)
{
    memset(p, 0, sizeof *p);
    prepack_store_options so = {.tmp_dir = test_tmpdir};
    assert_int_equal(prepack_store_create(&p->store, &so, NULL), PREPACK_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(prepack_ingest_file(p->store, inputs[i], NULL, NULL),
                         PREPACK_OK);
    assert_int_equal(prepack_store_finish(p->store, NULL), PREPACK_OK);
    p->opts.max_seq_len = L;
    p->opts.overlong = PREPACK_OVERLONG_SPLIT;
    p->opts.shuffle_rows = 1;
    p->opts.shuffle_seed = 5;
    size_t count = prepack_store_sequence_count(p->store);
    assert_int_equal(prepack_plan_create(&p->plan,
                                         prepack_store_lengths(p->store),
                                         count, &p->opts, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_report_compute(p->plan,
                                            prepack_store_lengths(p->store),
                                            count, 8, &p->report),
                     PREPACK_OK);
}

static void release(packed *p)
{
    prepack_plan_free(p->plan);
    prepack_store_free(p->store);
}

/* Row 0's first reference, rewritten before it is written. */
typedef void (*ref_edit)(uint32_t *source, uint64_t *offset);

/* Writes the plan to dir, by reference or with its tokens; `edit` (when
 * not NULL) rewrites row 0's first reference. */
static void write_set_edited(const packed *p, const char *dir, int plan_only,
                             ref_edit edit)
{
    prepack_row_builder *b = NULL;
    prepack_writer *w = NULL;
    prepack_writer_options wo = {
        .shard_rows = 70, .rows_per_frame = 9, .references = plan_only};
    assert_int_equal(prepack_row_builder_create(&b, p->plan, p->store, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_writer_create(&w, dir, L,
                                           prepack_store_dtype(p->store), &wo,
                                           NULL),
                     PREPACK_OK);
    prepack_row row;
    prepack_row_references references;
    for (size_t r = 0; r < prepack_plan_row_count(p->plan); r++) {
        if (plan_only) {
            assert_int_equal(
                prepack_row_builder_get_references(b, r, &row, &references),
                PREPACK_OK);
            assert_null(row.input_ids);
            /* a references writer takes no tokens, a full one no references */
            assert_int_equal(prepack_writer_add(w, &row, NULL), PREPACK_EINVAL);
            uint32_t src[L];
            uint64_t off[L];
            memcpy(src, references.source, row.num_seqs * sizeof *src);
            memcpy(off, references.offset, row.num_seqs * sizeof *off);
            if (edit && r == 0)
                edit(&src[0], &off[0]);
            prepack_row_references mine = {src, off};
            assert_int_equal(
                prepack_writer_add_references(w, &row, &mine, NULL),
                PREPACK_OK);
        } else {
            assert_int_equal(prepack_row_builder_get(b, r, &row), PREPACK_OK);
            assert_int_equal(
                prepack_row_builder_get_references(b, r, &row, &references),
                PREPACK_OK);
            assert_int_equal(
                prepack_writer_add_references(w, &row, &references, NULL),
                PREPACK_EINVAL);
            assert_int_equal(prepack_row_builder_get(b, r, &row), PREPACK_OK);
            assert_int_equal(prepack_writer_add(w, &row, NULL), PREPACK_OK);
        }
    }
    prepack_manifest_info info = {&p->opts, p->store, &p->report};
    assert_int_equal(prepack_writer_finish(w, &info, NULL), PREPACK_OK);
    prepack_writer_free(w);
    prepack_row_builder_free(b);
}

static void write_set(const packed *p, const char *dir, int plan_only)
{
    write_set_edited(p, dir, plan_only, NULL);
}

static void assert_rows_equal(const prepack_row *a, const prepack_row *b)
{
    size_t w = a->token_dtype == PREPACK_DTYPE_UINT16 ? 2 : 4;
    assert_int_equal(a->num_tokens, b->num_tokens);
    assert_int_equal(a->num_seqs, b->num_seqs);
    assert_int_equal(a->token_dtype, b->token_dtype);
    assert_memory_equal(a->input_ids, b->input_ids, a->num_tokens * w);
    assert_memory_equal(a->cu_seqlens, b->cu_seqlens,
                        (a->num_seqs + 1) * sizeof *a->cu_seqlens);
    assert_memory_equal(a->seq_ids, b->seq_ids,
                        a->num_seqs * sizeof *a->seq_ids);
    assert_true((a->seq_starts == NULL) == (b->seq_starts == NULL));
    if (a->seq_starts)
        assert_memory_equal(a->seq_starts, b->seq_starts,
                            a->num_seqs * sizeof *a->seq_starts);
    assert_true((a->loss_mask == NULL) == (b->loss_mask == NULL));
}

/* Every row of two sets equal, and equal to the builder's. */
static void assert_sets_equal(const packed *p, const char *full,
                              const char *plan_only)
{
    prepack_reader *a = NULL, *b = NULL;
    prepack_row_builder *bld = NULL;
    assert_int_equal(prepack_reader_open(&a, full, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_reader_open(&b, plan_only, NULL, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_row_builder_create(&bld, p->plan, p->store, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_reader_source_count(a), 0);
    assert_true(prepack_reader_source_count(b) > 0);
    assert_null(prepack_reader_source(b, 99));
    size_t rows = prepack_reader_row_count(a);
    assert_int_equal(rows, prepack_reader_row_count(b));
    assert_int_equal(rows, prepack_plan_row_count(p->plan));
    for (size_t i = 0; i < rows; i++) {
        prepack_row ra, rb, rc;
        assert_int_equal(prepack_reader_row(a, i, &ra, NULL), PREPACK_OK);
        assert_int_equal(prepack_reader_row(b, i, &rb, NULL), PREPACK_OK);
        assert_int_equal(prepack_row_builder_get(bld, i, &rc), PREPACK_OK);
        assert_rows_equal(&ra, &rb);
        assert_rows_equal(&rc, &rb);
    }
    assert_int_equal(prepack_reader_verify(b, NULL, NULL), 0);
    prepack_row_builder_free(bld);
    prepack_reader_free(a);
    prepack_reader_free(b);
}

static void test_rows_equal_the_full_sets(void **state)
{
    (void)state;
    char llmc[512], mg[512], full[512], plan_only[512];
    snprintf(llmc, sizeof llmc, "%s", path_of("a.llmc.bin"));
    snprintf(mg, sizeof mg, "%s", path_of("m"));
    snprintf(full, sizeof full, "%s", path_of("full"));
    snprintf(plan_only, sizeof plan_only, "%s", path_of("plan_only"));
    write_llmc(llmc, 1);
    write_megatron(mg, 2);
    const char *inputs[] = {llmc, mg};
    packed p;
    pack_inputs(&p, inputs, 2);
    write_set(&p, full, 0);
    write_set(&p, plan_only, 1);
    assert_sets_equal(&p, full, plan_only);
    release(&p);
}

static void test_text_has_nothing_to_reference(void **state)
{
    (void)state;
    prepack_store *s = NULL;
    prepack_store_options so = {.tmp_dir = test_tmpdir};
    assert_int_equal(prepack_store_create(&s, &so, NULL), PREPACK_OK);
    uint32_t t[3] = {1, 2, 3};
    assert_int_equal(prepack_store_add(s, t, 3, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_end_sequence(s, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_finish(s, NULL), PREPACK_OK);
    prepack_plan *plan = NULL;
    prepack_plan_options o = {.max_seq_len = 8};
    assert_int_equal(
        prepack_plan_create(&plan, prepack_store_lengths(s), 1, &o, NULL),
        PREPACK_OK);
    prepack_row_builder *b = NULL;
    assert_int_equal(prepack_row_builder_create(&b, plan, s, NULL), PREPACK_OK);
    prepack_row row;
    prepack_row_references references;
    assert_int_equal(
        prepack_row_builder_get_references(b, 0, &row, &references),
        PREPACK_EINVAL);
    assert_int_equal(
        prepack_row_builder_get_references(b, 5, &row, &references),
        PREPACK_EINVAL);
    /* a references writer's manifest needs the store */
    prepack_writer *w = NULL;
    prepack_writer_options wo = {.references = 1};
    assert_int_equal(prepack_writer_create(&w, path_of("nostore"), 8,
                                           PREPACK_DTYPE_UINT16, &wo, NULL),
                     PREPACK_OK);
    prepack_diag d = {0};
    prepack_manifest_info info = {&o, NULL, NULL};
    assert_int_equal(prepack_writer_finish(w, &info, &d), PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "store"));
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(s);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* Opening fails with `code`, the message naming `file`. */
static void assert_open_fails(const char *dir, int code, const char *file)
{
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_reader_open(&r, dir, NULL, &d), code);
    assert_null(r);
    assert_non_null(strstr(d.message, file));
}

static void flip_byte(const char *path, long at)
{
    assert_int_equal(flip_byte_at(path, at, 1), 0);
}

static void test_changed_inputs_are_refused(void **state)
{
    (void)state;
    /* path_of's buffers rotate: keep the names */
    char llmc[512], mg[512], dir[512], bin[520], idx[520], keep[3][600];
    snprintf(llmc, sizeof llmc, "%s", path_of("c.llmc.bin"));
    snprintf(mg, sizeof mg, "%s", path_of("cm"));
    snprintf(dir, sizeof dir, "%s", path_of("crefs"));
    snprintf(bin, sizeof bin, "%s.bin", mg);
    snprintf(idx, sizeof idx, "%s.idx", mg);
    write_llmc(llmc, 3);
    write_megatron(mg, 4);
    const char *inputs[] = {llmc, mg};
    packed p;
    pack_inputs(&p, inputs, 2);
    write_set(&p, dir, 1);
    release(&p);
    const char *files[3] = {llmc, bin, idx};
    for (int i = 0; i < 3; i++) {
        snprintf(keep[i], sizeof keep[i], "%s.keep", files[i]);
        copy_file(files[i], keep[i]);
    }
    /* a token in the first sampled block */
    flip_byte(llmc, 2000);
    assert_open_fails(dir, PREPACK_ECORRUPT, llmc);
    copy_file(keep[0], llmc);
    /* one byte more */
    FILE *f = fopen(files[1], "ab");
    fputc(0, f);
    fclose(f);
    assert_open_fails(dir, PREPACK_ECORRUPT, files[1]);
    copy_file(keep[1], files[1]);
    /* the index: a length changed, the size kept */
    flip_byte(files[2], 40);
    assert_open_fails(dir, PREPACK_ECORRUPT, files[2]);
    copy_file(keep[2], files[2]);
    /* moved away */
    assert_int_equal(rename(llmc, keep[0]), 0);
    assert_open_fails(dir, PREPACK_EIO, llmc);
    assert_int_equal(rename(keep[0], llmc), 0);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, dir, NULL, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_reader_source_count(r), 2);
    assert_string_equal(prepack_reader_source(r, 1), files[1]);
    prepack_reader_free(r);
}

/* ---- hostile sets (issue 26) ------------------------------------------ */

/* An llm.c input (source 0, uint16) and an int32 Megatron one with ids
 * past 65535 (source 1): a uint32 set of two sources in dir, row 0's
 * first reference rewritten by edit. */
static void write_two_sources(const char *dir, char llmc[512], char mg[512],
                              ref_edit edit)
{
    char name[64];
    snprintf(name, sizeof name, "%s.llmc.bin", dir);
    snprintf(llmc, 512, "%s", path_of(name));
    snprintf(name, sizeof name, "%s.m", dir);
    snprintf(mg, 512, "%s", path_of(name));
    write_llmc(llmc, 7);
    write_megatron(mg, 8);
    const char *inputs[] = {llmc, mg};
    packed p;
    pack_inputs(&p, inputs, 2);
    write_set_edited(&p, path_of(dir), 1, edit);
    release(&p);
}

/* Reads every row: the first failure's code (its message in *d). */
static int read_all_rows(const char *dir, prepack_diag *d)
{
    prepack_reader *r = NULL;
    int rc = prepack_reader_open(&r, dir, NULL, d);
    for (size_t i = 0; rc == PREPACK_OK && i < prepack_reader_row_count(r);
         i++) {
        prepack_row row;
        rc = prepack_reader_row(r, i, &row, d);
    }
    prepack_reader_free(r);
    return rc;
}

static void to_source_count(uint32_t *source, uint64_t *offset)
{
    (void)offset;
    *source = 2;
}

static void to_last_source(uint32_t *source, uint64_t *offset)
{
    (void)offset;
    *source = 1;
}

static void one_byte_on(uint32_t *source, uint64_t *offset)
{
    (void)source;
    *offset += 1;
}

/* ref_source = nsources is refused; nsources - 1 reads or is refused as
 * damage (the reference then lies elsewhere in another file: outside it,
 * off its token boundary), never a crash. */
static void test_references_at_the_boundary(void **state)
{
    (void)state;
    char llmc[512], mg[512], dir[512];
    prepack_diag d = {0};
    write_two_sources("bound", llmc, mg, to_source_count);
    snprintf(dir, sizeof dir, "%s", path_of("bound"));
    assert_int_equal(read_all_rows(dir, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "outside the manifest's sources"));
    write_two_sources("last", llmc, mg, to_last_source);
    snprintf(dir, sizeof dir, "%s", path_of("last"));
    int rc = read_all_rows(dir, &d);
    assert_true(rc == PREPACK_OK || rc == PREPACK_ECORRUPT);
}

/* A reference one byte off its token boundary. */
static void test_offset_off_a_token(void **state)
{
    (void)state;
    char llmc[512], mg[512], dir[512];
    prepack_diag d = {0};
    write_two_sources("off", llmc, mg, one_byte_on);
    snprintf(dir, sizeof dir, "%s", path_of("off"));
    assert_int_equal(read_all_rows(dir, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "not a multiple of"));
}

static void megatron_token_on(uint32_t *source, uint64_t *offset)
{
    /* in the Megatron file, on a token boundary, a token on: where no
     * entry of the sequence's id starts (an llm.c sequence's id is no
     * Megatron entry at all) */
    *source = 1;
    *offset = *offset / 4 * 4 + 4;
}

/* An int32 Megatron reference one token off, on a token boundary: not
 * where the index entry of its sequence id puts it. */
static void test_offset_off_its_index_entry(void **state)
{
    (void)state;
    char llmc[512], mg[512], dir[512];
    prepack_diag d = {0};
    write_two_sources("entry", llmc, mg, megatron_token_on);
    snprintf(dir, sizeof dir, "%s", path_of("entry"));
    assert_int_equal(read_all_rows(dir, &d), PREPACK_ECORRUPT);
    assert_true(strstr(d.message, "not where its index entry puts it") ||
                strstr(d.message, "not one of this input's"));
}

/* The first occurrence of `from` in the file at path becomes `to`. */
static void replace_in_file(const char *path, const char *from,
                            const char *to)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char text[1 << 16], out[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *at = strstr(text, from);
    assert_non_null(at);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to,
             at + strlen(from));
    f = fopen(path, "wb");
    assert_non_null(f);
    fputs(out, f);
    fclose(f);
}

/* token_dtype narrowed over ids past 65535, and a width the Megatron
 * index contradicts: refused, not narrowed or misread. */
static void test_widths_bound_to_the_files(void **state)
{
    (void)state;
    char llmc[512], mg[512], dir[512], manifest[600];
    prepack_diag d = {0};
    write_two_sources("narrow", llmc, mg, NULL);
    snprintf(dir, sizeof dir, "%s", path_of("narrow"));
    snprintf(manifest, sizeof manifest, "%s/manifest.json", dir);
    assert_int_equal(read_all_rows(dir, &d), PREPACK_OK);
    replace_in_file(manifest, "\"uint32\"", "\"uint16\"");
    assert_int_equal(read_all_rows(dir, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "does not fit token_dtype uint16"));
    replace_in_file(manifest, "\"uint16\"", "\"uint32\"");
    replace_in_file(manifest, "\"width\": 4", "\"width\": 2");
    assert_int_equal(read_all_rows(dir, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "width 2 signed"));
    assert_non_null(strstr(d.message, mg));
    replace_in_file(manifest, "\"width\": 2, \"signed\": false",
                    "\"width\": 4, \"signed\": false");
    replace_in_file(manifest, "\"width\": 2", "\"width\": 4");
    assert_int_equal(read_all_rows(dir, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "llm.c header"));
    assert_non_null(strstr(d.message, llmc));
}

/* One file given three times: three sources sharing one descriptor
 * (and one hash), every row read back as the full set's. */
static void test_one_file_listed_thrice(void **state)
{
    (void)state;
    char llmc[512], full[512], plan_only[512];
    snprintf(llmc, sizeof llmc, "%s", path_of("thrice.llmc.bin"));
    snprintf(full, sizeof full, "%s", path_of("thrice-full"));
    snprintf(plan_only, sizeof plan_only, "%s", path_of("thrice-plan_only"));
    write_llmc(llmc, 9);
    const char *inputs[] = {llmc, llmc, llmc};
    packed p;
    pack_inputs(&p, inputs, 3);
    write_set(&p, full, 0);
    write_set(&p, plan_only, 1);
    assert_sets_equal(&p, full, plan_only);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, plan_only, NULL, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_reader_source_count(r), 3);
    prepack_reader_free(r);
    release(&p);
}

/* An input cut short while a set that references it is open: the rows
 * that reach past its end are an error naming it, never SIGBUS. */
static void test_input_cut_short_while_open(void **state)
{
    (void)state;
    char llmc[512], mg[512], dir[512];
    write_two_sources("cut", llmc, mg, NULL);
    snprintf(dir, sizeof dir, "%s", path_of("cut"));
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, dir, NULL, NULL), PREPACK_OK);
    assert_int_equal(truncate(llmc, 2048), 0);
    int rc = PREPACK_OK;
    prepack_diag d = {0};
    for (size_t i = 0; rc == PREPACK_OK && i < prepack_reader_row_count(r);
         i++) {
        prepack_row row;
        rc = prepack_reader_row(r, i, &row, &d);
    }
    assert_int_equal(rc, PREPACK_EIO);
    assert_non_null(strstr(d.message, llmc));
    assert_non_null(strstr(d.message, "the file ends first"));
    prepack_reader_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_equal_the_full_sets),
        cmocka_unit_test(test_text_has_nothing_to_reference),
        cmocka_unit_test(test_changed_inputs_are_refused),
        cmocka_unit_test(test_references_at_the_boundary),
        cmocka_unit_test(test_offset_off_a_token),
        cmocka_unit_test(test_offset_off_its_index_entry),
        cmocka_unit_test(test_widths_bound_to_the_files),
        cmocka_unit_test(test_input_cut_short_while_open),
        cmocka_unit_test(test_one_file_listed_thrice),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
