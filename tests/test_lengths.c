/* Lengths files: what parses, and the error each malformed line gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_util.h"

static void parse_ok(const char *text, const uint32_t *want, size_t n)
{
    uint32_t *got = NULL;
    size_t m = 0;
    prepack_diag d = {0};
    int rc =
        prepack_lengths_parse(text, strlen(text), "t.txt", &got, &m, NULL, &d);
    if (rc != PREPACK_OK)
        fail_msg("'%s': %s", text, d.message);
    assert_int_equal(m, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(got[i], want[i]);
    prepack_free(got, NULL);
}

static void parse_err(const char *text, int code, uint64_t line,
                      const char *message)
{
    uint32_t *got = (uint32_t *)&code;
    size_t m = 99;
    prepack_diag d = {0};
    int rc =
        prepack_lengths_parse(text, strlen(text), "t.txt", &got, &m, NULL, &d);
    assert_int_equal(rc, code);
    assert_null(got);
    assert_int_equal(m, 0);
    assert_int_equal(d.record, line);
    assert_string_equal(d.message, message);
}

static void test_valid(void **state)
{
    (void)state;
    const uint32_t a[] = {1, 22, 0, 4294967295u};
    parse_ok("1\n22\n0\n4294967295\n", a, 4);
    parse_ok("1\n22\n0\n4294967295", a, 4);            /* no final newline */
    parse_ok("1\r\n 22 \r\n\t0\n+4294967295\n", a, 4); /* CRLF, blanks */
    const uint32_t b[] = {7};
    parse_ok("007", b, 1);
}

static void test_errors_name_the_line(void **state)
{
    (void)state;
    parse_err("5\nabc\n", PREPACK_EFORMAT, 2,
              "t.txt:2: not a non-negative integer: 'abc'");
    parse_err("5\n6\n-3\n", PREPACK_EFORMAT, 3,
              "t.txt:3: negative length '-3'");
    parse_err("5\n\n6\n", PREPACK_EFORMAT, 2,
              "t.txt:2: empty line, expected a length");
    parse_err("5\n6\n\n", PREPACK_EFORMAT, 3,
              "t.txt:3: empty line, expected a length");
    parse_err("4294967296\n", PREPACK_ERANGE, 1,
              "t.txt:1: length too large (max 4294967295)");
    parse_err("99999999999999999999999\n", PREPACK_ERANGE, 1,
              "t.txt:1: length too large (max 4294967295)");
    parse_err("99999999999x\n", PREPACK_EFORMAT, 1,
              "t.txt:1: not a non-negative integer: '99999999999x'");
    parse_err("12abc\n", PREPACK_EFORMAT, 1,
              "t.txt:1: not a non-negative integer: '12abc'");
    parse_err("1.5\n", PREPACK_EFORMAT, 1,
              "t.txt:1: not a non-negative integer: '1.5'");
    parse_err("0x10\n", PREPACK_EFORMAT, 1,
              "t.txt:1: not a non-negative integer: '0x10'");
    parse_err("1 2\n", PREPACK_EFORMAT, 1,
              "t.txt:1: not a non-negative integer: '1 2'");
    parse_err("-\n", PREPACK_EFORMAT, 1,
              "t.txt:1: not a non-negative integer: '-'");
    parse_err("", PREPACK_EFORMAT, PREPACK_NO_RECORD,
              "t.txt: no lengths (empty file)");
}

static void test_binary_garbage_and_nul(void **state)
{
    (void)state;
    const char text[] = {'5', '\n', '1', '\0', '2', '\n'};
    uint32_t *got = NULL;
    size_t m = 0;
    prepack_diag d = {0};
    assert_int_equal(
        prepack_lengths_parse(text, sizeof text, "t.txt", &got, &m, NULL, &d),
        PREPACK_EFORMAT);
    assert_int_equal(d.record, 2);
}

static void test_arguments_and_allocation(void **state)
{
    (void)state;
    uint32_t *got = NULL;
    size_t m = 0;
    assert_int_equal(prepack_lengths_parse(NULL, 3, "x", &got, &m, NULL, NULL),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_lengths_parse("1", 1, "x", NULL, &m, NULL, NULL),
                     PREPACK_EINVAL);
    counting_alloc ca = {0, 0, 0};
    prepack_allocator a = counting_allocator(&ca);
    prepack_diag d = {0};
    assert_int_equal(prepack_lengths_parse("1\n2\n", 4, NULL, &got, &m, &a, &d),
                     PREPACK_ENOMEM);
    assert_int_equal(ca.live, 0);
    ca.fail_at = SIZE_MAX;
    assert_int_equal(prepack_lengths_parse("1\n2\n", 4, NULL, &got, &m, &a, &d),
                     PREPACK_OK);
    assert_int_equal(ca.live, 1);
    prepack_free(got, &a);
    assert_int_equal(ca.live, 0);
    prepack_free(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_binary_garbage_and_nul),
        cmocka_unit_test(test_arguments_and_allocation),
    };
    return cmocka_run_group_tests_name("lengths", tests, NULL, NULL);
}
