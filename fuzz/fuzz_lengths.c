/* Fuzz target: lengths files (prepack_lengths_parse), then planning what
 * parses, with each algorithm. */
#include <stdint.h>
#include <stdlib.h>

#include "prepack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t *len = NULL;
    size_t n = 0;
    prepack_diag d;
    if (prepack_lengths_parse((const char *)data, size, "fuzz", &len, &n, NULL,
                              &d) != PREPACK_OK)
        return 0;
    /* Plans as large as the lengths ask for are legitimate but slow and
     * big: keep the fuzzer to those of at most 2^16 split items. */
    uint32_t L = 1 + (uint32_t)(size % 4096);
    uint64_t items = 0;
    for (size_t i = 0; i < n; i++)
        items += len[i] / L + 1;
    for (int algo = 0; algo < 3 && items <= 65536; algo++) {
        prepack_plan_options o = {.max_seq_len = L,
                                  .algo = (prepack_algo)algo,
                                  .overlong = PREPACK_OVERLONG_SPLIT};
        prepack_plan *p = NULL;
        if (prepack_plan_create(&p, len, n, &o, NULL) == PREPACK_OK) {
            prepack_report r;
            prepack_report_compute(p, len, n, 8, &r);
        }
        prepack_plan_free(p);
    }
    prepack_free(len, NULL);
    return 0;
}
