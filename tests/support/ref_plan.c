/* The reference planner of ref_plan.h: each algorithm's textbook rule as an
 * O(N x rows) scan, which test_plan and test_groups hold the planner to. */
#include "ref_plan.h"

#include <stdlib.h>
#include <string.h>

/* Items in input order, after the overlong policy. */
static size_t make_items(const uint32_t *lengths, size_t n, uint32_t L,
                         prepack_overlong policy, prepack_item *items,
                         ref_plan *p, size_t *bad)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t l = lengths[i];
        if (l == 0) {
            p->zero_length++;
        } else if (l <= L) {
            items[m++] = (prepack_item){i, 0, l};
        } else {
            p->overlong++;
            if (policy == PREPACK_OVERLONG_ERROR) {
                *bad = i;
                return SIZE_MAX;
            } else if (policy == PREPACK_OVERLONG_TRUNCATE) {
                p->truncated_tokens += l - L;
                items[m++] = (prepack_item){i, 0, L};
            } else if (policy == PREPACK_OVERLONG_SPLIT) {
                for (uint64_t off = 0; off < l; off += L) {
                    uint64_t rest = l - off;
                    items[m++] = (prepack_item){
                        i, (uint32_t)off, (uint32_t)(rest < L ? rest : L)};
                    p->split_chunks++;
                }
            } else {
                p->dropped_sequences++;
                p->dropped_tokens += l;
            }
        }
    }
    return m;
}

static const prepack_item *sort_items;

static int by_length_desc(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    uint32_t lx = sort_items[x].length, ly = sort_items[y].length;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : (x > y);
}

int ref_plan_build(const uint32_t *lengths, size_t n, uint32_t L,
                   prepack_algo algo, prepack_overlong policy,
                   uint32_t max_per_row, ref_plan *p, size_t *bad)
{
    memset(p, 0, sizeof *p);
    size_t cap = 0;
    for (size_t i = 0; i < n; i++)
        cap += lengths[i] / L + 1;
    prepack_item *items = malloc((cap + 1) * sizeof *items);
    size_t m = make_items(lengths, n, L, policy, items, p, bad);
    if (m == SIZE_MAX) {
        free(items);
        return PREPACK_EOVERLONG;
    }
    size_t *order = malloc((m + 1) * sizeof *order);
    for (size_t i = 0; i < m; i++)
        order[i] = i;
    if (algo != PREPACK_ALGO_NEXTFIT) {
        sort_items = items;
        qsort(order, m, sizeof *order, by_length_desc);
    }

    /* rows: used tokens, item count; row_of[k] for the k-th placed item */
    uint32_t *used = calloc(m + 1, sizeof *used);
    uint32_t *count = calloc(m + 1, sizeof *count);
    size_t *row_of = malloc((m + 1) * sizeof *row_of);
    size_t rows = 0;
    for (size_t k = 0; k < m; k++) {
        uint32_t len = items[order[k]].length;
        size_t chosen = SIZE_MAX;
        for (size_t r = 0; r < rows; r++) {
            if (algo == PREPACK_ALGO_NEXTFIT && r != rows - 1)
                continue; /* only the open row */
            int fits = used[r] + len <= L &&
                       (max_per_row == 0 || count[r] < max_per_row);
            if (!fits)
                continue;
            if (algo != PREPACK_ALGO_BFD) {
                chosen = r;
                break;
            }
            if (chosen == SIZE_MAX || L - used[r] < L - used[chosen])
                chosen = r;
        }
        if (chosen == SIZE_MAX)
            chosen = rows++;
        used[chosen] += len;
        count[chosen]++;
        row_of[k] = chosen;
        p->tokens += len;
    }

    p->rows = rows;
    p->items = m;
    p->row_start = calloc(rows + 1, sizeof *p->row_start);
    p->entry = malloc((m + 1) * sizeof *p->entry);
    for (size_t r = 0; r < rows; r++)
        p->row_start[r + 1] = p->row_start[r] + count[r];
    size_t *fill = calloc(rows + 1, sizeof *fill);
    for (size_t k = 0; k < m; k++) {
        size_t r = row_of[k];
        p->entry[p->row_start[r] + fill[r]++] = items[order[k]];
    }
    free(fill);
    free(row_of);
    free(count);
    free(used);
    free(order);
    free(items);
    return PREPACK_OK;
}

void ref_plan_free(ref_plan *p)
{
    free(p->row_start);
    free(p->entry);
    memset(p, 0, sizeof *p);
}

uint64_t ref_lower_bound(const uint32_t *item_len, size_t m, uint32_t max_len,
                         uint32_t max_per_row)
{
    uint64_t L = max_len, tokens = 0, best;
    for (size_t i = 0; i < m; i++)
        tokens += item_len[i];
    best = (tokens + L - 1) / L;
    for (uint64_t k = 0; 2 * k <= L; k++) {
        uint64_t j12 = 0, room = 0, j3 = 0;
        for (size_t i = 0; i < m; i++) {
            uint64_t w = item_len[i];
            if (2 * w > L) { /* J1 or J2 */
                j12++;
                if (w <= L - k)
                    room += L - w; /* J2 */
            } else if (w >= k) {
                j3 += w;
            }
        }
        uint64_t need = j12 + (j3 > room ? (j3 - room + L - 1) / L : 0);
        if (need > best)
            best = need;
    }
    if (max_per_row && (m + max_per_row - 1) / max_per_row > best)
        best = (m + max_per_row - 1) / max_per_row;
    return best;
}

/* Depth-first: item i into each row with room (rows holding the same load
 * are interchangeable: try one), or a new row while that can still beat
 * the best found. */
static void search(const uint32_t *w, size_t m, size_t i, uint32_t L,
                   uint32_t *load, size_t rows, size_t *best)
{
    if (rows >= *best)
        return;
    if (i == m) {
        *best = rows;
        return;
    }
    for (size_t r = 0; r < rows; r++) {
        int seen = 0;
        for (size_t q = 0; q < r && !seen; q++)
            seen = load[q] == load[r];
        if (seen || load[r] + w[i] > L)
            continue;
        load[r] += w[i];
        search(w, m, i + 1, L, load, rows, best);
        load[r] -= w[i];
    }
    load[rows] = w[i];
    search(w, m, i + 1, L, load, rows + 1, best);
}

size_t ref_optimum_rows(const uint32_t *item_len, size_t m, uint32_t max_len)
{
    uint32_t load[12];
    size_t best = m + 1;
    search(item_len, m, 0, max_len, load, 0, &best);
    return m ? best : 0;
}
