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
#include "ingest/source.h"

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

void pp_megatron_prefix(const char *path, char *buf, size_t cap)
{
    size_t n = strlen(path);
    if (ends_with(path, ".bin") || ends_with(path, ".idx"))
        n -= 4;
    snprintf(buf, cap, "%.*s", (int)n, path);
}

static int has_megatron_pair(const char *path)
{
    char prefix[4096], idx[4112], bin[4112];
    pp_megatron_prefix(path, prefix, sizeof prefix);
    snprintf(idx, sizeof idx, "%s.idx", prefix);
    snprintf(bin, sizeof bin, "%s.bin", prefix);
    return file_exists(idx) && file_exists(bin);
}

/* llm.c's two header magics, as little-endian int32. */
/* What the first bytes of a file say it holds: llm.c's header, a zstd or
 * gzip stream (prepack reads only JSONL compressed), or a JSON object,
 * maybe after blanks or a UTF-8 byte order mark (the JSONL reader then
 * names the mark). */
static int format_from_content(const char *path, prepack_format *out)
{
    unsigned char b[64];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t got = pread(fd, b, sizeof b, 0);
    close(fd);
    size_t n = got > 0 ? (size_t)got : 0;
    if (n >= 4 && (pp_load_le32(b) == PP_LLMC_GPT2_MAGIC ||
                   pp_load_le32(b) == PP_LLMC_LLAMA3_MAGIC)) {
        *out = PREPACK_FORMAT_LLMC;
        return 1;
    }
    size_t i = n >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF ? 3 : 0;
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' ||
                     b[i] == '\n'))
        i++;
    if (pp_is_zstd(b, n) ||
        (n >= 2 && b[0] == 0x1F && b[1] == 0x8B) || (i < n && b[i] == '{')) {
        *out = PREPACK_FORMAT_JSONL;
        return 1;
    }
    return 0;
}

/* What Arrow's formats begin with, which the Python package reads
 * (pyarrow) and the C library does not: Parquet's "PAR1", an Arrow IPC
 * file's "ARROW1" (Feather v2 is one), Feather v1's "FEA1", and an IPC
 * stream's first message: the 0xFFFFFFFF continuation marker, then its
 * metadata's length. The name to give, or NULL. */
static const char *arrow_kind(const char *path)
{
    unsigned char b[8];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 && S_ISREG(st.st_mode)
                      ? pread(fd, b, sizeof b, 0)
                      : -1;
    close(fd);
    if (got >= 4 && !memcmp(b, "PAR1", 4))
        return "a Parquet file";
    if ((got >= 6 && !memcmp(b, "ARROW1", 6)) ||
        (got >= 4 && !memcmp(b, "FEA1", 4)))
        return "an Arrow (Feather) file";
    if (got >= 8 && pp_load_le32(b) == 0xFFFFFFFFu && pp_load_le32(b + 4) > 0)
        return "an Arrow IPC stream";
    return NULL;
}

int prepack_format_detect(const char *path, prepack_format *out,
                          prepack_diag *diag)
{
    if (ends_with(path, ".jsonl") || ends_with(path, ".jsonl.zst") ||
        ends_with(path, ".jsonl.gz") || ends_with(path, ".json") ||
        strcmp(path, "-") == 0) {
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
    /* a pipe, a terminal, /dev/stdin: read once, in order, so JSONL (the
     * one format read as a stream) */
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode)) {
        *out = PREPACK_FORMAT_JSONL;
        return PREPACK_OK;
    }
    if (!S_ISREG(st.st_mode))
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: not a regular file", path);
    if (format_from_content(path, out))
        return PREPACK_OK;
    /* last: a token file's first ids could spell a stream's marker */
    const char *arrow = arrow_kind(path);
    if (arrow)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s is %s: read it with python -m prepack pack %s "
                       "(or python -m prepack stats)",
                       path, arrow, path);
    return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                   "%s: cannot tell its format (not .jsonl, no JSON object, "
                   "zstd or gzip stream or llm.c magic at its start, no .idx "
                   "beside it); pass a format such as raw-u16",
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
        pp_megatron_prefix(path, prefix, sizeof prefix);
        return pp_ingest_megatron(s, prefix, o, diag);
    }
    default:
        return pp_ingest_tokens(s, path, format, o, diag);
    }
}

int pp_ingest_part(prepack_store *s, const char *path, prepack_format format,
                   const prepack_ingest_options *o, pp_input_part *part,
                   prepack_diag *diag)
{
    if (prepack_store_begin_input(s, path, format) != PREPACK_OK)
        return pp_out_of_memory(diag);
    if (part->whole)
        return read_input(s, path, format, o, diag);
    if (format == PREPACK_FORMAT_JSONL)
        return pp_ingest_jsonl_part(s, path, o, part->begin, part->end, part,
                                    diag);
    if (format == PREPACK_FORMAT_MEGATRON) {
        char prefix[4096];
        pp_megatron_prefix(path, prefix, sizeof prefix);
        return pp_ingest_megatron_part(s, prefix, o, part, diag);
    }
    return pp_ingest_tokens_part(s, path, format, o, part, diag);
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
    if (format == PREPACK_FORMAT_ARROW)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s: Arrow and Parquet inputs are read by the Python "
                       "package: prepack.pack_dataset, or python -m prepack "
                       "pack",
                       path);
    if (strcmp(path, "-") == 0) { /* stdin, read as a stream */
        if (format != PREPACK_FORMAT_JSONL)
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "stdin ('-'): %s inputs are read in place, not "
                           "as a stream; stdin takes JSONL (plain, zstd "
                           "or gzip)",
                           prepack_format_name(format));
        path = "/dev/stdin";
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
