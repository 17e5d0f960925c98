/* The padding report: the same items laid out as naive padded batches, as
 * rows padded to L, and as the plan's packed rows. */
#include <stdlib.h>
#include <string.h>

#include "plan/naive.h"
#include "plan/plan.h"

static void finish_layout(prepack_layout *l, uint64_t tokens)
{
    l->pad_tokens = l->slots - tokens;
    l->pad_fraction = l->slots ? (double)l->pad_tokens / (double)l->slots : 0;
}

/* Sums naive batches into a layout, and the packed layout's attention
 * (sum of l^2 over the same items). */
typedef struct naive_sums {
    prepack_layout *out;
    double varlen_cost;
} naive_sums;

static void add_batch(void *opaque, const uint32_t *lengths, size_t count,
                      uint32_t longest)
{
    naive_sums *ns = opaque;
    double w = longest;
    for (size_t i = 0; i < count; i++)
        ns->varlen_cost += (double)lengths[i] * lengths[i];
    ns->out->rows += count;
    ns->out->slots += (uint64_t)count * longest;
    ns->out->attention_cost += (double)count * w * w;
}

/* ---- exact percentiles in two passes -------------------------------------
 *
 * A histogram of the high 16 bits finds the bucket holding each wanted
 * rank; a second pass histograms the low 16 bits of that bucket alone.
 * Exact, O(n), without sorting or copying the lengths. */

enum { BINS = 1 << 16 };

/* The rank-th smallest length (0-based). */
static uint32_t nth_length(const uint32_t *len, size_t n, uint64_t rank,
                           const uint32_t *high, uint32_t *low)
{
    uint32_t bucket = 0;
    uint64_t below = 0;
    while (below + high[bucket] <= rank)
        below += high[bucket++];
    memset(low, 0, BINS * sizeof *low);
    for (size_t i = 0; i < n; i++)
        if (len[i] >> 16 == bucket)
            low[len[i] & 0xFFFF]++;
    uint32_t v = 0;
    while (below + low[v] <= rank)
        below += low[v++];
    return bucket << 16 | v;
}

static uint64_t nearest_rank(size_t n, unsigned percent)
{
    uint64_t r = ((uint64_t)n * percent + 99) / 100; /* ceil(p n / 100) */
    return r ? r - 1 : 0;
}

static int summarize_lengths(const uint32_t *len, size_t n, uint32_t max_len,
                             prepack_length_summary *out)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return PREPACK_OK;
    uint32_t *high = calloc(BINS, sizeof *high);
    uint32_t *low = malloc(BINS * sizeof *low);
    if (!high || !low) {
        free(high);
        free(low);
        return PREPACK_ENOMEM;
    }
    out->min = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        high[len[i] >> 16]++;
        out->min = len[i] < out->min ? len[i] : out->min;
        out->max = len[i] > out->max ? len[i] : out->max;
        out->over_max_seq_len += len[i] > max_len;
    }
    out->median = nth_length(len, n, nearest_rank(n, 50), high, low);
    out->p90 = nth_length(len, n, nearest_rank(n, 90), high, low);
    out->p99 = nth_length(len, n, nearest_rank(n, 99), high, low);
    free(high);
    free(low);
    return PREPACK_OK;
}

int prepack_report_compute(const prepack_plan *plan, const uint32_t *lengths,
                           size_t n, uint32_t batch_size, prepack_report *out)
{
    if (!plan || !out || (n && !lengths))
        return PREPACK_EINVAL;
    prepack_plan_stats stats;
    prepack_plan_get_stats(plan, &stats);
    const prepack_plan_stats *st = &stats;
    if (st->sequences != n)
        return PREPACK_EINVAL;
    uint32_t max_len = st->max_seq_len;
    memset(out, 0, sizeof *out);
    out->plan = *st;
    out->batch_size = batch_size ? batch_size : PREPACK_DEFAULT_BATCH_SIZE;

    naive_sums ns = {.out = &out->naive_batch};
    if (pp_naive_batches(lengths, n, max_len, pp_plan_overlong(plan),
                         out->batch_size, st->items, pp_plan_skipped(plan),
                         add_batch, &ns) != PREPACK_OK)
        return PREPACK_ENOMEM;
    uint64_t input_tokens = 0;
    for (size_t i = 0; i < n; i++)
        input_tokens += lengths[i];
    if (input_tokens != st->input_tokens || ns.out->rows != st->items)
        return PREPACK_EINVAL; /* not the lengths this plan was made from */
    finish_layout(&out->naive_batch, st->tokens);

    double w = max_len;
    out->padded_to_max.rows = st->items;
    out->padded_to_max.slots = st->items * max_len;
    out->padded_to_max.attention_cost = (double)st->items * w * w;
    finish_layout(&out->padded_to_max, st->tokens);

    out->packed.rows = st->rows;
    out->packed.slots = st->rows * max_len;
    out->packed.attention_cost = ns.varlen_cost;
    finish_layout(&out->packed, st->tokens);
    out->packed_dense_attention_cost = (double)st->rows * w * w;
    return summarize_lengths(lengths, n, max_len, &out->lengths);
}
