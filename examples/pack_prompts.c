/* Packing a batch of prompts in memory, as a data loader or an inference
 * server would: four prompts of 7, 9, 6 and 10 tokens into rows of 16,
 * instead of four rows padded to 10 (or 16). Prints what a varlen
 * attention kernel receives and where each prompt went.
 *
 *   cc pack_prompts.c $(pkg-config --cflags --libs prepack) -o pack_prompts */
#include <prepack.h>
#include <stdio.h>

int main(void)
{
    uint32_t a[7], b[9], c[6], d[10];
    uint32_t *prompts[] = {a, b, c, d};
    uint32_t lengths[] = {7, 9, 6, 10};
    for (int p = 0; p < 4; p++)
        for (uint32_t t = 0; t < lengths[p]; t++)
            prompts[p][t] = 1000u * (uint32_t)(p + 1) + t; /* fake ids */

    prepack_pack_options o = {.max_seq_len = 16};
    prepack_packed *packed = NULL;
    prepack_diag diag = {0};
    if (prepack_pack_sequences(&packed, (const uint32_t *const *)prompts,
                               lengths, 4, &o, &diag) != PREPACK_OK) {
        fprintf(stderr, "pack_prompts: %s\n", diag.message);
        return 1;
    }
    printf("%zu prompts, %zu tokens -> %zu rows of %u (naive: 4 rows of "
           "10)\n",
           packed->num_seqs, packed->num_tokens, packed->rows,
           packed->max_seq_len);
    printf("cu_seqlens  ");
    for (size_t k = 0; k <= packed->num_seqs; k++)
        printf(" %d", packed->cu_seqlens[k]);
    printf("   max_seqlen %u\nposition_ids", packed->max_seqlen);
    for (size_t t = 0; t < packed->num_tokens; t++)
        printf(" %d", packed->position_ids[t]);
    printf("\n");
    for (int p = 0; p < 4; p++)
        printf("prompt %d: row %u, offset %u, first token %u\n", p,
               packed->seq_row[p], packed->seq_offset[p],
               packed->input_ids[packed->row_start[packed->seq_row[p]] +
                                 (int32_t)packed->seq_offset[p]]);
    prepack_packed_free(packed);
    return 0;
}
