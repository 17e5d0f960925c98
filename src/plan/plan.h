/* What the rest of the library needs of a plan beyond the public
 * accessors (struct prepack_plan itself is private to plan.c). */
#ifndef PP_PLAN_PLAN_H
#define PP_PLAN_PLAN_H

#include "prepack.h"

/* The overlong policy the plan was made with: the report and its picture
 * lay the same items out naively. */
prepack_overlong pp_plan_overlong(const prepack_plan *plan);
/* Whether any item starts past token 0 of its sequence (split chunks):
 * the row builder then stores each item's start. */
int pp_plan_has_offsets(const prepack_plan *plan);
/* Groups under DROP: the sequences left out with their group whatever
 * their own length (one byte a sequence), or NULL. */
const uint8_t *pp_plan_skipped(const prepack_plan *plan);
/* An overlong diag from prepack_plan_joined (record: a sequence id over
 * all inputs) retold naming the input that holds it (inputs: first_sequence
 * rising), as prepack_plan_store tells it; grouped: the plan had groups. */
void pp_plan_name_input(prepack_diag *diag, const prepack_input_info *inputs,
                        size_t ninputs, const uint32_t *lengths, size_t n,
                        int grouped, uint32_t max_seq_len);

#endif
