/* Planning a store, or lengths with the joins that make groups: the one
 * place that decides whether a plan has groups, and that tells an overlong
 * sequence or group in terms of the input holding it. */
#include <stdio.h>

#include "common/alloc.h"
#include "common/error.h"
#include "ingest/store.h"
#include "plan/plan.h"

/* With groups when there are any (first != NULL), else plainly. */
static int plan_groups_or_not(prepack_plan **out, const uint32_t *lengths,
                              size_t n, const uint64_t *first, size_t groups,
                              const prepack_plan_options *o, prepack_diag *diag)
{
    if (first)
        return prepack_plan_create_groups(out, lengths, n, first, groups, o,
                                          diag);
    return prepack_plan_create(out, lengths, n, o, diag);
}

/* group_first from the joins: every sequence not joining starts a group. */
static uint64_t *groups_from_joins(size_t n, const uint64_t *joins,
                                   size_t njoins, const prepack_allocator *a)
{
    size_t groups = n - njoins, g = 0, j = 0;
    uint64_t *first = pp_alloc(a, groups + 1, sizeof *first);
    for (uint64_t i = 0; first && i < n; i++) {
        if (j < njoins && joins[j] == i)
            j++;
        else
            first[g++] = i;
    }
    if (first)
        first[g] = n;
    return first;
}

/* Joins are distinct sequences 1..n-1: a count past n - 1 is refused
 * before the array is read (a caller's njoins may run past it). */
static int check_joins(size_t n, const uint64_t *joins, size_t njoins,
                       prepack_diag *diag)
{
    if (njoins && njoins >= n)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%zu joins for %zu sequences: at most one fewer",
                       njoins, n);
    for (size_t j = 0; j < njoins; j++)
        if (joins[j] == 0 || joins[j] >= n || (j && joins[j] <= joins[j - 1]))
            return pp_fail(diag, PREPACK_EINVAL, j,
                           "join %zu (sequence %llu) is out of range or "
                           "order: joins rise within 1..%zu",
                           j, (unsigned long long)joins[j], n ? n - 1 : 0);
    return PREPACK_OK;
}

int prepack_plan_joined(prepack_plan **out, const uint32_t *lengths, size_t n,
                        const uint64_t *joins, size_t njoins,
                        const prepack_plan_options *opts, prepack_diag *diag)
{
    if (!out || !opts || (njoins && !joins))
        return pp_invalid_argument(diag);
    *out = NULL;
    int rc = check_joins(n, joins, njoins, diag);
    if (rc != PREPACK_OK)
        return rc;
    if (!njoins)
        return plan_groups_or_not(out, lengths, n, NULL, 0, opts, diag);
    uint64_t *first = groups_from_joins(n, joins, njoins, opts->allocator);
    if (!first)
        return pp_out_of_memory(diag);
    rc = plan_groups_or_not(out, lengths, n, first, n - njoins, opts, diag);
    pp_free(opts->allocator, first);
    return rc;
}

void pp_plan_name_input(prepack_diag *diag, const prepack_input_info *inputs,
                        size_t ninputs, const uint32_t *lengths, size_t n,
                        int grouped, uint32_t max_seq_len)
{
    uint64_t seq = diag->record;
    for (size_t i = ninputs; i-- > 0;) {
        const prepack_input_info *in = &inputs[i];
        if (seq < in->first_sequence || seq >= n)
            continue;
        if (grouped) {
            char why[sizeof diag->message];
            snprintf(why, sizeof why, "%s", diag->message);
            pp_fail(diag, PREPACK_EOVERLONG, seq,
                    "%s: %s (sequence ids over all inputs; this input "
                    "starts at %llu; groups are placed whole: "
                    "--overlong drop leaves them out)",
                    in->path, why, (unsigned long long)in->first_sequence);
        } else {
            pp_fail(diag, PREPACK_EOVERLONG, seq,
                    "%s: sequence %llu has %u tokens, more than "
                    "max_seq_len %u",
                    in->path, (unsigned long long)(seq - in->first_sequence),
                    lengths[seq], max_seq_len);
        }
        return;
    }
}

int prepack_plan_store(prepack_plan **out, const prepack_store *store,
                       const prepack_plan_options *opts, prepack_diag *diag)
{
    if (!out || !store || !opts)
        return pp_invalid_argument(diag);
    size_t n = prepack_store_sequence_count(store), groups = 0, ninputs = 0;
    const uint32_t *lengths = prepack_store_lengths(store);
    const uint64_t *first = prepack_store_group_first(store, &groups);
    int rc = plan_groups_or_not(out, lengths, n, first, groups, opts, diag);
    if (rc == PREPACK_EOVERLONG && diag) {
        const prepack_input_info *in = pp_store_inputs(store, &ninputs);
        pp_plan_name_input(diag, in, ninputs, lengths, n, first != NULL,
                           opts->max_seq_len);
    }
    return rc;
}
