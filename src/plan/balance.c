/* Balancing data-parallel steps: the cost of a row (linear work a token,
 * attention work a pair of tokens of one sequence) and the split of a
 * step's rows among ranks with equal counts and the cheapest costliest
 * rank this heuristic finds (docs/BALANCE.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"
#include "prepack.h"

/* ---- the cost model --------------------------------------------------------- */

int prepack_cost_model_for(const prepack_model_dims *d, prepack_cost_model *out)
{
    if (!d || !out || d->hidden_size == 0 || d->num_heads == 0 ||
        d->num_layers == 0 || d->num_kv_heads > d->num_heads)
        return PREPACK_EINVAL;
    double h = d->hidden_size, layers = d->num_layers;
    double kv = h * (d->num_kv_heads ? d->num_kv_heads : d->num_heads) /
                d->num_heads;
    /* q and o: h x h each; k and v: h x kv each; the MLP: three h x f
     * (SwiGLU) or, by default, two h x 4h. 2 FLOPs a multiply-add. */
    double mlp = d->intermediate_size ? 3.0 * h * d->intermediate_size
                                      : 2.0 * h * 4.0 * h;
    out->per_token = 2.0 * layers * (2.0 * h * h + 2.0 * h * kv + mlp);
    /* q.k over h and p.v over h for each (query, key) pair; a causal
     * kernel computes half the pairs */
    out->per_pair = 2.0 * layers * 2.0 * h * (d->bidirectional ? 1.0 : 0.5);
    return PREPACK_OK;
}

prepack_cost_model prepack_cost_model_default(void)
{
    prepack_model_dims llama3_8b = {4096, 14336, 32, 8, 32, 0};
    prepack_cost_model m;
    prepack_cost_model_for(&llama3_8b, &m);
    return m;
}

double prepack_cost_of_lengths(const prepack_cost_model *m,
                               const uint32_t *lengths, size_t k)
{
    double tokens = 0, pairs = 0;
    for (size_t i = 0; i < k; i++) {
        tokens += lengths[i];
        pairs += (double)lengths[i] * lengths[i];
    }
    return m->per_token * tokens + m->per_pair * pairs;
}

double prepack_row_cost(const prepack_cost_model *m, const prepack_row *row)
{
    double pairs = 0;
    for (size_t j = 0; j < row->num_seqs; j++) {
        double l = (double)(row->cu_seqlens[j + 1] - row->cu_seqlens[j]);
        pairs += l * l;
    }
    return m->per_token * (double)row->num_tokens + m->per_pair * pairs;
}

double prepack_plan_row_cost(const prepack_cost_model *m,
                             const prepack_plan *plan, size_t r)
{
    double tokens = 0, pairs = 0;
    for (size_t k = 0; k < prepack_plan_row_size(plan, r); k++) {
        double l = prepack_plan_item(plan, r, k).length;
        tokens += l;
        pairs += l * l;
    }
    return m->per_token * tokens + m->per_pair * pairs;
}

/* ---- one step: LPT under a count limit, then swaps ---------------------------- */

typedef struct balancer {
    const double *costs;
    size_t n;
    uint32_t bins;
    uint32_t *bin_of;
    size_t *order;    /* items, costliest first */
    double *load;     /* per bin */
    uint32_t *count;  /* per bin */
    uint32_t *heap;   /* open bins by (load, index) */
    size_t heap_len;
} balancer;

static int cheaper_bin(const balancer *b, uint32_t x, uint32_t y)
{
    return b->load[x] < b->load[y] || (b->load[x] == b->load[y] && x < y);
}

static void sift_down(balancer *b, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < b->heap_len && cheaper_bin(b, b->heap[l], b->heap[m]))
            m = l;
        if (r < b->heap_len && cheaper_bin(b, b->heap[r], b->heap[m]))
            m = r;
        if (m == i)
            return;
        uint32_t t = b->heap[i];
        b->heap[i] = b->heap[m];
        b->heap[m] = t;
        i = m;
    }
}

/* An item and its cost, sorted costliest first, ties by index: a total
 * order, so qsort gives the same result on every platform. */
typedef struct ranked {
    double cost;
    size_t index;
} ranked;

static int costlier_first(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* order[k] = the item of costs[0..n) that is k-th costliest. */
static int rank_by_cost(const double *costs, size_t n, size_t *order)
{
    ranked *r = malloc((n ? n : 1) * sizeof *r);
    if (!r)
        return PREPACK_ENOMEM;
    for (size_t i = 0; i < n; i++)
        r[i] = (ranked){costs[i], i};
    qsort(r, n, sizeof *r, costlier_first);
    for (size_t i = 0; i < n; i++)
        order[i] = r[i].index;
    free(r);
    return PREPACK_OK;
}

/* Longest processing time first: each item to the cheapest bin that may
 * take one more (n / bins items, the first n % bins bins to fill up one
 * more). */
static void place_lpt(balancer *b)
{
    size_t base = b->n / b->bins, extra = b->n % b->bins, at_extra = 0;
    b->heap_len = b->bins;
    for (uint32_t i = 0; i < b->bins; i++)
        b->heap[i] = i;
    for (size_t k = 0; k < b->n; k++) {
        size_t item = b->order[k];
        for (;;) { /* drop bins that are full */
            uint32_t top = b->heap[0];
            int room = b->count[top] < base ||
                       (b->count[top] == base && at_extra < extra);
            if (room)
                break;
            b->heap[0] = b->heap[--b->heap_len];
            sift_down(b, 0);
        }
        uint32_t bin = b->heap[0];
        at_extra += b->count[bin] == base;
        b->count[bin]++;
        b->load[bin] += b->costs[item];
        b->bin_of[item] = bin;
        sift_down(b, 0);
    }
}

static uint32_t costliest_bin(const balancer *b)
{
    uint32_t m = 0;
    for (uint32_t i = 1; i < b->bins; i++)
        if (b->load[i] > b->load[m])
            m = i;
    return m;
}

/* One swap between the costliest bin and another that lowers the larger
 * of the two loads the most; 0 when none does. O(k n) a call, k items in
 * the costliest bin (`mine`: room for n). */
static int improve_once(balancer *b, size_t *mine)
{
    uint32_t hi = costliest_bin(b);
    double best = b->load[hi];
    size_t bi = SIZE_MAX, bj = SIZE_MAX, k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->bin_of[i] == hi)
            mine[k++] = i;
    for (size_t x = 0; x < k; x++) {
        size_t i = mine[x];
        for (size_t j = 0; j < b->n; j++) {
            uint32_t o = b->bin_of[j];
            double d = b->costs[i] - b->costs[j];
            if (o == hi || d <= 0)
                continue;
            double a = b->load[hi] - d, c = b->load[o] + d;
            double worse = a > c ? a : c;
            if (worse < best) {
                best = worse;
                bi = i;
                bj = j;
            }
        }
    }
    if (bi == SIZE_MAX)
        return 0;
    uint32_t o = b->bin_of[bj];
    double d = b->costs[bi] - b->costs[bj];
    b->load[hi] -= d;
    b->load[o] += d;
    b->bin_of[bi] = o;
    b->bin_of[bj] = hi;
    return 1;
}

int prepack_balance(const double *costs, size_t n, uint32_t bins,
                    uint32_t *bin_of, prepack_diag *diag)
{
    if (bins == 0 || (n && (!costs || !bin_of)))
        return pp_invalid_argument(diag);
    for (size_t i = 0; i < n; i++)
        if (!(costs[i] >= 0) || isinf(costs[i]))
            return pp_fail(diag, PREPACK_EINVAL, i,
                           "cost %zu is %g: costs are finite and "
                           "non-negative", i, costs[i]);
    balancer b = {costs, n, bins, bin_of, NULL, NULL, NULL, NULL, 0};
    b.order = malloc((n ? n : 1) * sizeof *b.order);
    b.load = calloc(bins, sizeof *b.load);
    b.count = calloc(bins, sizeof *b.count);
    b.heap = malloc(bins * sizeof *b.heap);
    int rc = b.order && b.load && b.count && b.heap ? PREPACK_OK
                                                    : pp_out_of_memory(diag);
    if (rc == PREPACK_OK && rank_by_cost(costs, n, b.order) != PREPACK_OK)
        rc = pp_out_of_memory(diag);
    if (rc == PREPACK_OK) {
        place_lpt(&b);
        /* swaps, each lowering the costliest bin's load: at most 4 x bins
         * of O(n^2 / bins) each, for steps up to 4,096 rows (at most 70 M
         * comparisons); a larger n keeps LPT's split */
        size_t *mine = n <= 4096 ? malloc((n ? n : 1) * sizeof *mine) : NULL;
        for (uint32_t k = 0; mine && k < 4 * bins && improve_once(&b, mine);
             k++)
            ;
        free(mine);
    }
    free(b.order);
    free(b.load);
    free(b.count);
    free(b.heap);
    return rc;
}

/* Regroups rows [s0, s0 + k) of out by cost, costliest first (ties by
 * position): the rows of a window's steps, before each step is balanced. */
static int regroup_window(const double *costs, uint64_t *rows, size_t k)
{
    size_t *idx = malloc((k ? k : 1) * sizeof *idx);
    double *c = malloc((k ? k : 1) * sizeof *c);
    uint64_t *copy = malloc((k ? k : 1) * sizeof *copy);
    int ok = idx && c && copy;
    for (size_t i = 0; ok && i < k; i++) {
        c[i] = costs[rows[i]];
        copy[i] = rows[i];
    }
    ok = ok && rank_by_cost(c, k, idx) == PREPACK_OK;
    for (size_t i = 0; ok && i < k; i++)
        rows[i] = copy[idx[i]];
    free(idx);
    free(c);
    free(copy);
    return ok ? PREPACK_OK : PREPACK_ENOMEM;
}

int prepack_balance_epoch(const double *costs, size_t n, const uint64_t *order,
                          uint32_t world, uint32_t rows_per_rank,
                          uint32_t window_steps, uint64_t *out_order,
                          uint32_t *rank_of, prepack_diag *diag)
{
    if (world == 0 || rows_per_rank == 0 || window_steps == 0 ||
        (n && (!costs || !rank_of)) || (window_steps > 1 && n && !out_order))
        return pp_invalid_argument(diag);
    size_t step = (size_t)world * rows_per_rank;
    uint64_t *rows = out_order ? out_order : malloc((n ? n : 1) * sizeof *rows);
    double *c = malloc((step ? step : 1) * sizeof *c);
    int rc = rows && c ? PREPACK_OK : pp_out_of_memory(diag);
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++) {
        rows[i] = order ? order[i] : i;
        if (rows[i] >= n)
            rc = pp_fail(diag, PREPACK_EINVAL, i,
                         "order[%zu] is %llu, not a row of %zu", i,
                         (unsigned long long)rows[i], n);
    }
    size_t window = step * window_steps;
    for (size_t w0 = 0; rc == PREPACK_OK && window_steps > 1 && w0 < n;
         w0 += window) {
        size_t k = n - w0 < window ? n - w0 : window;
        if (regroup_window(costs, rows + w0, k) != PREPACK_OK)
            rc = pp_out_of_memory(diag);
    }
    for (size_t s0 = 0; rc == PREPACK_OK && s0 < n; s0 += step) {
        size_t k = n - s0 < step ? n - s0 : step;
        for (size_t i = 0; i < k; i++)
            c[i] = costs[rows[s0 + i]];
        rc = prepack_balance(c, k, world, rank_of + s0, diag);
    }
    if (rows != out_order)
        free(rows);
    free(c);
    return rc;
}
