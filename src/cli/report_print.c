/* The report as people read it and as scripts read it (--json), shared by
 * `prepack stats` and `prepack pack`. Keys are documented in docs/CLI.md. */
#include <string.h>

#include "cli.h"

/* ---- output ------------------------------------------------------------ */

/* A ratio as the report prints it: "n/a" where there is nothing to
 * divide by (no rows, slots, attention or bytes: an input of empty
 * sequences), never 0x or a percentage of nothing. --json keeps 0 there
 * (docs/CLI.md). */
static const char *ratio_text(char *buf, size_t cap, double part,
                              double whole, const char *unit)
{
    if (whole > 0)
        snprintf(buf, cap, "%.3f%s", part / whole * (*unit == '%' ? 100 : 1),
                 unit);
    else
        snprintf(buf, cap, "n/a");
    return buf;
}

/* What packing does to the naive batches' padding: removes some (with
 * the share removed), removes none of it (packing can add padding: a
 * tiny input whose naive batches fit exactly), or there was none. */
static void print_pad_change(const prepack_layout *n, const prepack_layout *p)
{
    char b1[32], b2[32], b3[32], pc[32];
    if (n->pad_tokens > p->pad_tokens)
        printf("\n  packing removes %s of %s naive pad tokens (%s)",
               fmt_count(b1, n->pad_tokens - p->pad_tokens),
               fmt_count(b2, n->pad_tokens),
               ratio_text(pc, sizeof pc,
                          (double)(n->pad_tokens - p->pad_tokens),
                          (double)n->pad_tokens, "%"));
    else if (n->pad_tokens == 0 && p->pad_tokens > 0)
        printf("\n  packing removes nothing: naive batches have no pad "
               "tokens, packed rows hold %s",
               fmt_count(b1, p->pad_tokens));
    else if (p->pad_tokens > 0)
        printf("\n  packing removes none of %s naive pad tokens (packed "
               "rows hold %s, %s more)",
               fmt_count(b1, n->pad_tokens), fmt_count(b2, p->pad_tokens),
               fmt_count(b3, p->pad_tokens - n->pad_tokens));
    else
        printf("\n  packing removes nothing: no pad tokens either way");
}

static void print_layout_row(const char *label, const prepack_layout *l)
{
    char rows[32], slots[32], pad[32], share[32] = "n/a";
    if (l->slots) /* a share of no slots is none to print */
        snprintf(share, sizeof share, "%.2f%%", 100.0 * l->pad_fraction);
    printf("  %-34s %14s %16s %16s %7s %23.4g\n", label,
           fmt_count(rows, l->rows), fmt_count(slots, l->slots),
           fmt_count(pad, l->pad_tokens), share, l->attention_cost);
}

static void print_overlong(const prepack_plan_stats *s,
                           const prepack_plan_options *o)
{
    char a[32], b[32];
    if (s->overlong == 0) {
        printf("  overlong             none longer than %u\n", s->max_seq_len);
        return;
    }
    printf("  overlong             %s longer than %u, %s: ",
           fmt_count(a, s->overlong), s->max_seq_len,
           prepack_overlong_name(o->overlong));
    if (o->overlong == PREPACK_OVERLONG_TRUNCATE)
        printf("%s tokens cut\n", fmt_count(b, s->truncated_tokens));
    else if (o->overlong == PREPACK_OVERLONG_SPLIT)
        printf("%s chunks\n", fmt_count(b, s->split_chunks));
    else
        printf("%s tokens dropped\n", fmt_count(b, s->dropped_tokens));
}

static void print_inputs(const prepack_store *store)
{
    char b1[32], b2[32], b3[32];
    for (size_t i = 0; i < prepack_store_input_count(store); i++) {
        prepack_input_info in;
        prepack_store_input(store, i, &in);
        printf("  input                %s (%s): %s sequences, %s tokens",
               in.path, prepack_format_name(in.format),
               fmt_count(b1, in.sequences), fmt_count(b2, in.tokens));
        if (in.documents)
            printf(", %s documents", fmt_count(b3, in.documents));
        if (in.partial_sequences)
            printf(", %s partial", fmt_count(b3, in.partial_sequences));
        putchar('\n');
    }
    printf("  token store          %s\n",
           prepack_dtype_name(prepack_store_dtype(store)));
}

static void print_lengths(const prepack_length_summary *l, uint32_t max_len)
{
    char b[6][32];
    printf("  lengths              min %s, median %s, p90 %s, p99 %s, max %s; "
           "%s over %u\n",
           fmt_count(b[0], l->min), fmt_count(b[1], l->median),
           fmt_count(b[2], l->p90), fmt_count(b[3], l->p99),
           fmt_count(b[4], l->max), fmt_count(b[5], l->over_max_seq_len),
           max_len);
}

void print_report_text(const cmd_args *a, const prepack_store *store,
                       const prepack_report *r, timings t,
                       const pack_result *out)
{
    const prepack_plan_stats *s = &r->plan;
    char b1[32], b2[32], b3[32];
    const char *what = a->lengths_path ? a->lengths_path : a->inputs[0];
    printf("prepack %s: %s%s, max_seq_len %u, %s\n", a->cmd, what,
           a->ninputs > 1 ? " and more" : "", s->max_seq_len,
           prepack_algo_name(a->plan.algo));
    if (store)
        print_inputs(store);
    printf("  sequences            %s (%s empty, skipped)\n",
           fmt_count(b1, s->sequences), fmt_count(b2, s->zero_length));
    print_lengths(&r->lengths, s->max_seq_len);
    print_overlong(s, &a->plan);
    printf("  tokens packed        %s in %s items\n", fmt_count(b1, s->tokens),
           fmt_count(b2, s->items));
    char x4[32];
    printf("  rows                 %s (lower bound %s%s%s)\n",
           fmt_count(b1, s->rows), fmt_count(b3, s->lower_bound),
           s->lower_bound ? ", +" : "",
           s->lower_bound
               ? ratio_text(x4, sizeof x4, (double)(s->rows - s->lower_bound),
                            (double)s->lower_bound, "%")
               : "");
    printf("  efficiency           %s of row capacity holds tokens\n",
           ratio_text(x4, sizeof x4, s->efficiency * (double)s->rows,
                      (double)s->rows, "%"));
    printf("  sequences per row    %.2f mean, %u max\n\n",
           s->mean_items_per_row, s->max_items_per_row);

    printf("  %-34s %14s %16s %16s %7s %23s\n", "layout", "rows", "slots",
           "pad tokens", "pad", "attention (token pairs)");
    char label[64];
    snprintf(label, sizeof label, "naive batches of %u, input order",
             r->batch_size);
    print_layout_row(label, &r->naive_batch);
    snprintf(label, sizeof label, "every sequence padded to %u",
             s->max_seq_len);
    print_layout_row(label, &r->padded_to_max);
    print_layout_row("packed rows (varlen attention)", &r->packed);
    fputs("\n" REPORT_WORDS, stdout);

    const prepack_layout *n = &r->naive_batch, *p = &r->packed;
    char x1[32], x2[32];
    print_pad_change(n, p);
    printf("; computes %s the token slots\n",
           ratio_text(x1, sizeof x1, (double)p->slots, (double)n->slots,
                      "x"));
    printf("  attention: varlen packed is %s naive batches "
           "(dense L x L packed would be %s)\n",
           ratio_text(x1, sizeof x1, p->attention_cost, n->attention_cost,
                      "x"),
           ratio_text(x2, sizeof x2, r->packed_dense_attention_cost,
                      n->attention_cost, "x"));
    if (out) {
        char x3[32];
        printf("  written              %s: %s rows, %s bytes (%s the raw "
               "tokens' %s bytes%s)\n",
               out->dir, fmt_count(b1, out->rows), fmt_count(b2, out->bytes),
               ratio_text(x3, sizeof x3, (double)out->bytes,
                          (double)out->token_bytes, "x"),
               fmt_count(b3, out->token_bytes),
               out->plan_only ? "; plan only: tokens stay in the inputs" : "");
        double all = t.read_s + t.plan_s + t.write_s;
        printf("  time                 %.3f s: read %.3f s, plan %.3f s, "
               "write %.3f s (%.1f M tokens/s)\n",
               all, t.read_s, t.plan_s, t.write_s,
               all > 0 ? (double)s->tokens / all / 1e6 : 0.0);
        return;
    }
    printf("  time                 read %.3f s, plan %.3f s\n", t.read_s,
           t.plan_s);
}

static void json_layout(json_writer *w, const char *key,
                        const prepack_layout *l)
{
    json_begin_object(w, key);
    json_key_u64(w, "rows", l->rows);
    json_key_u64(w, "slots", l->slots);
    json_key_u64(w, "pad_tokens", l->pad_tokens);
    json_key_double(w, "pad_fraction", l->pad_fraction);
    json_key_double(w, "attention_cost", l->attention_cost);
    json_end_object(w);
}

static void json_inputs(json_writer *w, const prepack_store *store)
{
    json_key_string(w, "token_dtype",
                    prepack_dtype_name(prepack_store_dtype(store)));
    json_begin_array(w, "inputs");
    for (size_t i = 0; i < prepack_store_input_count(store); i++) {
        prepack_input_info in;
        prepack_store_input(store, i, &in);
        json_begin_object(w, NULL);
        json_key_string(w, "path", in.path);
        json_key_string(w, "format", prepack_format_name(in.format));
        json_key_u64(w, "first_sequence", in.first_sequence);
        json_key_u64(w, "sequences", in.sequences);
        json_key_u64(w, "tokens", in.tokens);
        json_key_u64(w, "documents", in.documents);
        json_key_u64(w, "partial_sequences", in.partial_sequences);
        json_end_object(w);
    }
    json_end_array(w);
}

static void json_lengths(json_writer *w, const prepack_length_summary *l)
{
    json_begin_object(w, "lengths");
    json_key_u64(w, "min", l->min);
    json_key_u64(w, "median", l->median);
    json_key_u64(w, "p90", l->p90);
    json_key_u64(w, "p99", l->p99);
    json_key_u64(w, "max", l->max);
    json_key_u64(w, "over_max_seq_len", l->over_max_seq_len);
    json_end_object(w);
}

void print_report_json(const cmd_args *a, const prepack_store *store,
                       const prepack_report *r, timings t,
                       const pack_result *out)
{
    const prepack_plan_stats *s = &r->plan;
    json_writer w = {stdout, 0, 0};
    json_begin_object(&w, NULL);
    json_key_string(&w, "prepack_version", prepack_version());
    if (a->lengths_path)
        json_key_string(&w, "input", a->lengths_path);
    else
        json_inputs(&w, store);
    json_begin_object(&w, "options");
    json_key_u64(&w, "max_seq_len", s->max_seq_len);
    json_key_string(&w, "algorithm", prepack_algo_name(a->plan.algo));
    json_key_string(&w, "overlong", prepack_overlong_name(a->plan.overlong));
    json_key_u64(&w, "max_seqs_per_row", a->plan.max_seqs_per_row);
    json_key_u64(&w, "batch_size", r->batch_size);
    json_end_object(&w);
    json_key_u64(&w, "sequences", s->sequences);
    json_lengths(&w, &r->lengths);
    json_key_u64(&w, "input_tokens", s->input_tokens);
    json_key_u64(&w, "zero_length", s->zero_length);
    json_begin_object(&w, "overlong");
    json_key_u64(&w, "sequences", s->overlong);
    json_key_u64(&w, "truncated_tokens", s->truncated_tokens);
    json_key_u64(&w, "split_chunks", s->split_chunks);
    json_key_u64(&w, "dropped_sequences", s->dropped_sequences);
    json_key_u64(&w, "dropped_tokens", s->dropped_tokens);
    json_end_object(&w);
    json_key_u64(&w, "items", s->items);
    json_key_u64(&w, "tokens", s->tokens);
    json_key_u64(&w, "rows", s->rows);
    json_key_u64(&w, "lower_bound", s->lower_bound);
    json_key_double(&w, "efficiency", s->efficiency);
    json_key_double(&w, "mean_seqs_per_row", s->mean_items_per_row);
    json_key_u64(&w, "max_seqs_in_row", s->max_items_per_row);
    json_begin_object(&w, "padding");
    json_layout(&w, "naive_batch", &r->naive_batch);
    json_layout(&w, "padded_to_max", &r->padded_to_max);
    json_layout(&w, "packed", &r->packed);
    json_end_object(&w);
    json_key_double(&w, "packed_dense_attention_cost",
                    r->packed_dense_attention_cost);
    if (out) {
        json_begin_object(&w, "output");
        json_key_string(&w, "dir", out->dir);
        json_key_u64(&w, "rows", out->rows);
        json_key_u64(&w, "bytes", out->bytes);
        json_key_u64(&w, "token_bytes", out->token_bytes);
        json_key_bool(&w, "plan_only", out->plan_only);
        json_key_double(
            &w, "compression_ratio",
            out->bytes ? (double)out->token_bytes / (double)out->bytes : 0.0);
        json_end_object(&w);
    }
    json_begin_object(&w, "timings");
    json_key_double(&w, "read_s", t.read_s);
    json_key_double(&w, "plan_s", t.plan_s);
    if (out)
        json_key_double(&w, "write_s", t.write_s);
    json_end_object(&w);
    uint64_t rchar, wchar;
    io_counters(&rchar, &wchar);
    json_begin_object(&w, "io");
    json_key_u64(&w, "read_bytes", rchar);
    json_key_u64(&w, "write_bytes", wchar);
    json_end_object(&w);
    json_end_object(&w);
    json_finish(&w);
}
