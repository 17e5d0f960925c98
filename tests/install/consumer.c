/* A program built against an installed prepack: plans, builds rows from a
 * store, and prints what a varlen kernel would receive. */
#include <prepack.h>
#include <stdio.h>

int main(void)
{
    uint32_t a[] = {1, 2, 3, 4, 5, 6, 7},
             b[] = {8, 9, 10, 11, 12, 13, 14, 15, 16};
    prepack_store *s = NULL;
    if (prepack_store_create(&s, NULL, NULL) != PREPACK_OK)
        return 1;
    prepack_store_add(s, a, 7, NULL, NULL);
    prepack_store_end_sequence(s, NULL);
    prepack_store_add(s, b, 9, NULL, NULL);
    prepack_store_end_sequence(s, NULL);
    prepack_store_finish(s, NULL);
    prepack_plan_options o = {.max_seq_len = 16};
    prepack_plan *p = NULL;
    prepack_row_builder *rb = NULL;
    prepack_row row;
    if (prepack_plan_create(&p, prepack_store_lengths(s), 2, &o, NULL) ||
        prepack_row_builder_create(&rb, p, s, NULL) ||
        prepack_row_builder_get(rb, 0, &row))
        return 1;
    printf("prepack %s: %zu row(s), cu_seqlens", prepack_version(),
           prepack_plan_row_count(p));
    for (size_t j = 0; j <= row.num_seqs; j++)
        printf(" %d", row.cu_seqlens[j]);
    printf("\n");
    prepack_row_builder_free(rb);
    prepack_plan_free(p);
    prepack_store_free(s);
    return 0;
}
