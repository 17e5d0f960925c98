/* manifest.json: the shard set's table of contents (docs/FORMAT.md).
 * Written by hand: a fixed shape, keys in a fixed order, so the same set
 * gives the same bytes. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "shards/manifest.h"

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_double(FILE *f, double v)
{
    if (!isfinite(v))
        fputs("null", f);
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.9g", v);
}

static void write_inputs(FILE *f, const prepack_input_info *inputs, size_t n)
{
    fputs("  \"inputs\": [", f);
    for (size_t i = 0; i < n; i++) {
        prepack_input_info in = inputs[i];
        fputs(i ? ",\n    {\"path\": " : "\n    {\"path\": ", f);
        json_string(f, in.path);
        fprintf(f,
                ", \"format\": \"%s\", \"sequences\": %" PRIu64
                ", \"tokens\": %" PRIu64 ", \"first_sequence\": %" PRIu64
                ", \"documents\": %" PRIu64 ", \"partial_sequences\": %" PRIu64
                "}",
                prepack_format_name(in.format), in.sequences, in.tokens,
                in.first_sequence, in.documents, in.partial_sequences);
    }
    fputs(n ? "\n  ],\n" : "],\n", f);
}

/* A plan-only set's sources and their identities. */
static void write_sources(FILE *f, const pp_set_source *s, size_t n)
{
    fputs("  \"storage\": \"references\",\n  \"sources\": [", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",\n    {\"path\": " : "\n    {\"path\": ", f);
        json_string(f, s[i].path);
        fprintf(f,
                ", \"width\": %u, \"signed\": %s, \"bytes\": %" PRIu64
                ", \"sample_xxh64\": \"%016" PRIx64 "\"",
                s[i].width, s[i].is_signed ? "true" : "false", s[i].bytes,
                s[i].sample_xxh64);
        if (s[i].index) {
            fputs(", \"index\": ", f);
            json_string(f, s[i].index);
            fprintf(f,
                    ", \"index_bytes\": %" PRIu64
                    ", \"index_xxh64\": \"%016" PRIx64 "\"",
                    s[i].index_bytes, s[i].index_xxh64);
        }
        fputc('}', f);
    }
    fputs(n ? "\n  ],\n" : "],\n", f);
}

static void write_shards(FILE *f, const pp_shard_info *s, size_t n)
{
    fputs("  \"shards\": [", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f,
                "%s\n    {\"file\": \"%s\", \"rows\": %" PRIu64
                ", \"tokens\": %" PRIu64 ", \"bytes\": %" PRIu64
                ", \"xxh64\": \"%016" PRIx64 "\"}",
                i ? "," : "", s[i].file, s[i].rows, s[i].tokens, s[i].bytes,
                s[i].xxh64);
    fputs(n ? "\n  ],\n" : "],\n", f);
}

static void write_layout(FILE *f, const char *key, const prepack_layout *l,
                         int last)
{
    fprintf(f,
            "    \"%s\": {\"rows\": %" PRIu64 ", \"slots\": %" PRIu64
            ", \"pad_tokens\": %" PRIu64 ", \"pad_fraction\": ",
            key, l->rows, l->slots, l->pad_tokens);
    json_double(f, l->pad_fraction);
    fputs(", \"attention_cost\": ", f);
    json_double(f, l->attention_cost);
    fputs(last ? "}\n" : "},\n", f);
}

static void write_stats(FILE *f, const prepack_report *r)
{
    const prepack_plan_stats *s = &r->plan;
    fprintf(f,
            "  \"stats\": {\n    \"sequences\": %" PRIu64
            ", \"input_tokens\": %" PRIu64 ", \"zero_length\": %" PRIu64
            ",\n    \"overlong\": %" PRIu64 ", \"truncated_tokens\": %" PRIu64
            ", \"split_chunks\": %" PRIu64 ", \"dropped_sequences\": %" PRIu64
            ", \"dropped_tokens\": %" PRIu64 ",\n    \"items\": %" PRIu64
            ", \"tokens\": %" PRIu64 ", \"rows\": %" PRIu64
            ", \"lower_bound\": %" PRIu64 ", \"efficiency\": ",
            s->sequences, s->input_tokens, s->zero_length, s->overlong,
            s->truncated_tokens, s->split_chunks, s->dropped_sequences,
            s->dropped_tokens, s->items, s->tokens, s->rows, s->lower_bound);
    json_double(f, s->efficiency);
    fputs(", \"mean_seqs_per_row\": ", f);
    json_double(f, s->mean_items_per_row);
    fprintf(f, ", \"max_seqs_in_row\": %u, \"batch_size\": %u,\n",
            s->max_items_per_row, r->batch_size);
    write_layout(f, "naive_batch", &r->naive_batch, 0);
    write_layout(f, "padded_to_max", &r->padded_to_max, 0);
    write_layout(f, "packed", &r->packed, 1);
    fputs("  }\n", f);
}

void pp_manifest_write(FILE *f, const pp_manifest_fields *m)
{
    const prepack_plan_options *o = m->plan;
    const pp_shard_info *shards = m->shards;
    size_t nshards = m->nshards;
    uint64_t rows = 0, tokens = 0;
    for (size_t i = 0; i < nshards; i++) {
        rows += shards[i].rows;
        tokens += shards[i].tokens;
    }
    fprintf(f,
            "{\n  \"format\": \"prepack-shards\",\n  \"version\": %u,\n"
            "  \"prepack_version\": \"%s\",\n  \"max_seq_len\": %u,\n"
            "  \"token_dtype\": \"%s\",\n  \"algorithm\": \"%s\",\n"
            "  \"overlong\": \"%s\",\n  \"max_seqs_per_row\": %u,\n"
            "  \"shuffle\": %s,\n  \"seed\": %" PRIu64 ",\n"
            "  \"rows_per_frame\": %u,\n  \"zstd_level\": %d,\n"
            "  \"rows\": %" PRIu64 ",\n  \"tokens\": %" PRIu64 ",\n",
            (unsigned)m->version, PREPACK_VERSION_STRING,
            m->max_seq_len,
            m->dtype,
            prepack_algo_name(o ? o->algo : PREPACK_ALGO_FFD),
            prepack_overlong_name(o ? o->overlong : PREPACK_OVERLONG_ERROR),
            o ? o->max_seqs_per_row : 0,
            o && o->shuffle_rows ? "true" : "false", o ? o->shuffle_seed : 0,
            m->rows_per_frame, m->level, rows, tokens);
    if (o && o->pad_multiple > 1) /* only then: other sets keep their bytes */
        fprintf(f, "  \"pad_multiple\": %u,\n", o->pad_multiple);
    if (m->references)
        write_sources(f, m->sources, m->nsources);
    write_inputs(f, m->inputs, m->ninputs);
    write_shards(f, shards, nshards);
    if (m->report)
        write_stats(f, m->report);
    else
        fputs("  \"stats\": null\n", f);
    fputs("}\n", f);
}
