/* The lower bound on rows that the report measures plans against.
 *
 * ceil(tokens / L) alone is loose when many items are longer than L/2:
 * no two of those share a row, whatever their total. Martello and Toth's
 * L2 bound (Knapsack Problems, 1990, section 8.3.1) counts them: for each
 * k in 0..L/2,
 *   J1 = items longer than L - k, J2 = items in (L/2, L - k],
 *   J3 = items in [k, L/2];
 * every J1 and J2 item needs a row of its own, the J3 items fit at best in
 * the room J2's rows leave (no J3 item fits beside a J1 item), so
 *   L(k) = |J1| + |J2| + max(0, ceil((sum J3 - room in J2's rows) / L))
 * and L2 = max over k >= ceil(tokens / L). With max_seqs_per_row = K,
 * ceil(items / K) is a bound too. The bound is the largest of them:
 * still one that no plan can beat, whatever the algorithm. */
#include "plan/bound.h"

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

uint64_t pp_lower_bound(const uint32_t *count_of, uint32_t max_len,
                        uint64_t tokens, uint64_t items, uint32_t max_per_row)
{
    uint64_t L = max_len, half = max_len / 2; /* J3: lengths <= half */
    uint64_t big = 0, room = 0, small = 0;    /* |J1|+|J2|, J2's room, sum J3 */
    for (uint64_t v = half + 1; v <= L; v++) {
        big += count_of[v];
        room += (L - v) * count_of[v];
    }
    for (uint64_t v = 1; v <= half; v++)
        small += v * count_of[v];
    uint64_t best = ceil_div(tokens, L);
    /* k = 0 first; raising k to k + 1 drops the items of length k from J3
     * and moves those of length L - k from J2 to J1 (their room no longer
     * counts). */
    for (uint64_t k = 0; k <= half; k++) {
        if (k > 0) {
            small -= (k - 1) * count_of[k - 1];
            room -= (k - 1) * count_of[L - k + 1];
        }
        uint64_t need = big + (small > room ? ceil_div(small - room, L) : 0);
        if (need > best)
            best = need;
    }
    if (max_per_row && ceil_div(items, max_per_row) > best)
        best = ceil_div(items, max_per_row);
    return best;
}
