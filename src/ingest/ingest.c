/* Ingest: which reader a file needs, and the entry point that runs it. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/error.h"
#include "ingest/readers.h"

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* X, X.bin or X.idx -> X, into buf. */
static void megatron_prefix(const char *path, char *buf, size_t cap)
{
    size_t n = strlen(path);
    if (ends_with(path, ".bin") || ends_with(path, ".idx"))
        n -= 4;
    snprintf(buf, cap, "%.*s", (int)n, path);
}

static int has_megatron_pair(const char *path)
{
    char prefix[4096], idx[4112], bin[4112];
    megatron_prefix(path, prefix, sizeof prefix);
    snprintf(idx, sizeof idx, "%s.idx", prefix);
    snprintf(bin, sizeof bin, "%s.bin", prefix);
    return file_exists(idx) && file_exists(bin);
}

/* llm.c's two header magics, as little-endian int32. */
static int has_llmc_magic(const char *path)
{
    unsigned char b[4];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t got = pread(fd, b, 4, 0);
    close(fd);
    if (got != 4)
        return 0;
    uint32_t magic = pp_load_le32(b);
    return magic == PP_LLMC_GPT2_MAGIC || magic == PP_LLMC_LLAMA3_MAGIC;
}

int prepack_format_detect(const char *path, prepack_format *out,
                          prepack_diag *diag)
{
    if (ends_with(path, ".jsonl") || ends_with(path, ".jsonl.zst") ||
        ends_with(path, ".jsonl.gz") || ends_with(path, ".json")) {
        *out = PREPACK_FORMAT_JSONL;
        return PREPACK_OK;
    }
    if (ends_with(path, ".idx") || has_megatron_pair(path)) {
        *out = PREPACK_FORMAT_MEGATRON;
        return PREPACK_OK;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: not a regular file", path);
    if (has_llmc_magic(path)) {
        *out = PREPACK_FORMAT_LLMC;
        return PREPACK_OK;
    }
    return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                   "%s: cannot tell its format (not .jsonl, no llm.c magic, "
                   "no .idx beside it); pass a format such as raw-u16",
                   path);
}

static int read_input(prepack_store *s, const char *path, prepack_format format,
                      const prepack_ingest_options *o, prepack_diag *diag)
{
    switch (format) {
    case PREPACK_FORMAT_JSONL:
        return pp_ingest_jsonl(s, path, o, diag);
    case PREPACK_FORMAT_MEGATRON: {
        char prefix[4096];
        megatron_prefix(path, prefix, sizeof prefix);
        return pp_ingest_megatron(s, prefix, o, diag);
    }
    default:
        return pp_ingest_tokens(s, path, format, o, diag);
    }
}

int prepack_ingest_file(prepack_store *s, const char *path,
                        const prepack_ingest_options *o, prepack_diag *diag)
{
    prepack_ingest_options none = {0};
    if (!s || !path)
        return pp_invalid_argument(diag);
    if (!o)
        o = &none;
    prepack_format format = o->format;
    if (!prepack_format_name(format))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "unknown format %d", (int)format);
    if (format == PREPACK_FORMAT_AUTO) {
        int rc = prepack_format_detect(path, &format, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    if (prepack_store_begin_input(s, path, format) != PREPACK_OK)
        return pp_out_of_memory(diag);
    int rc = read_input(s, path, format, o, diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_input_info in;
    prepack_store_input(s, prepack_store_input_count(s) - 1, &in);
    if (in.sequences == 0)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: empty input: no sequences", path);
    return PREPACK_OK;
}
