/* The C side of the seam with Python: every public struct's size,
 * alignment and fields (offset, size), every public enum constant and
 * numeric #define, each enum's size and the names the library gives its
 * values, as JSON lines. tests/python/test_seam.py compares them with the
 * ctypes mirrors in python/prepack, and checks this list against the
 * structs and constants prepack.h declares, so it cannot fall behind. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "prepack.h"

typedef struct field {
    const char *name;
    size_t offset, size;
} field;

static void put_struct(const char *name, size_t size, size_t align,
                       const field *f, size_t n)
{
    printf("{\"struct\": \"%s\", \"size\": %zu, \"align\": %zu, "
           "\"fields\": [",
           name, size, align);
    for (size_t i = 0; i < n; i++)
        printf("%s[\"%s\", %zu, %zu]", i ? ", " : "", f[i].name, f[i].offset,
               f[i].size);
    printf("]}\n");
}

/* STRUCT(T, F(a), F(b), ...): T's layout, its fields in declaration
 * order. */
#define STRUCT(T, ...)                                                         \
    do {                                                                       \
        typedef T S_;                                                          \
        static const field f_[] = {__VA_ARGS__};                               \
        put_struct(#T, sizeof(S_), _Alignof(S_), f_, sizeof f_ / sizeof *f_);  \
    } while (0)
/* clang-format off */
#define F(f) {#f, offsetof(S_, f), sizeof(((S_ *)0)->f)}
/* clang-format on */

static void structs(void)
{
    STRUCT(prepack_diag, F(code), F(record), F(message));
    STRUCT(prepack_allocator, F(malloc_fn), F(realloc_fn), F(free_fn),
           F(opaque));
    STRUCT(prepack_plan_options, F(max_seq_len), F(algo), F(overlong),
           F(max_seqs_per_row), F(shuffle_rows), F(shuffle_seed), F(allocator),
           F(pad_multiple));
    STRUCT(prepack_item, F(seq_id), F(offset), F(length));
    STRUCT(prepack_plan_stats, F(max_seq_len), F(sequences), F(input_tokens),
           F(items), F(tokens), F(rows), F(lower_bound), F(efficiency),
           F(max_items_per_row), F(mean_items_per_row), F(zero_length),
           F(overlong), F(truncated_tokens), F(split_chunks),
           F(dropped_sequences), F(dropped_tokens));
    STRUCT(prepack_pack_options, F(max_seq_len), F(algo), F(overlong),
           F(max_seqs_per_row));
    STRUCT(prepack_packed, F(rows), F(num_seqs), F(num_tokens), F(max_seq_len),
           F(input_ids), F(row_start), F(cu_seqlens), F(position_ids),
           F(seq_ids), F(seq_row), F(seq_offset), F(max_seqlen), F(seq_starts));
    STRUCT(prepack_prefill_options, F(capacity), F(algo), F(pad_id));
    STRUCT(prepack_prefill, F(rows), F(capacity), F(num_prompts), F(input_ids),
           F(position_ids), F(prompt_index), F(row_tokens), F(cu_seqlens),
           F(row_first), F(order), F(prompt_row), F(prompt_start),
           F(prompt_length), F(last_index));
    STRUCT(prepack_layout, F(rows), F(slots), F(pad_tokens), F(pad_fraction),
           F(attention_cost));
    STRUCT(prepack_length_summary, F(min), F(median), F(p90), F(p99), F(max),
           F(over_max_seq_len));
    STRUCT(prepack_report, F(plan), F(lengths), F(batch_size), F(naive_batch),
           F(padded_to_max), F(packed), F(packed_dense_attention_cost));
    STRUCT(prepack_store_options, F(tmp_dir), F(dtype), F(lengths_only),
           F(allocator));
    STRUCT(prepack_input_info, F(path), F(format), F(first_sequence),
           F(sequences), F(tokens), F(documents), F(partial_sequences));
    STRUCT(prepack_ingest_options, F(format), F(field), F(has_doc_sep),
           F(doc_sep), F(sep_position), F(allow_trailing_bytes), F(progress),
           F(progress_opaque), F(threads));
    STRUCT(prepack_row, F(num_tokens), F(num_seqs), F(token_dtype),
           F(input_ids), F(cu_seqlens), F(seq_ids), F(loss_mask),
           F(seq_starts));
    STRUCT(prepack_row_references, F(source), F(offset));
    STRUCT(prepack_stream_options, F(max_seq_len), F(window), F(lookahead),
           F(overlong), F(max_seqs_per_row), F(allocator));
    STRUCT(prepack_stream_stats, F(sequences), F(items), F(tokens), F(rows),
           F(dropped), F(truncated_tokens), F(open_rows), F(buffered));
    STRUCT(prepack_writer_options, F(rows_per_frame), F(shard_rows),
           F(shard_bytes), F(level), F(overwrite), F(threads), F(allocator),
           F(references));
    STRUCT(prepack_manifest_info, F(plan), F(store), F(report));
    STRUCT(prepack_cost_model, F(per_token), F(per_pair));
    STRUCT(prepack_model_dims, F(hidden_size), F(intermediate_size),
           F(num_heads), F(num_kv_heads), F(num_layers), F(bidirectional));
    STRUCT(prepack_step_options, F(inputs), F(ninputs), F(ingest), F(store),
           F(plan), F(writer), F(batch_size), F(text_key));
    STRUCT(prepack_step_range, F(input), F(whole), F(begin), F(end));
    STRUCT(prepack_step_result, F(already_done), F(sequences), F(tokens),
           F(rows), F(shards), F(bytes_written), F(bytes_mapped));
    STRUCT(prepack_reader_options, F(allocator), F(open_damaged));
    STRUCT(prepack_batch_options, F(padded), F(pad_id), F(dense_mask),
           F(pad_multiple));
    STRUCT(prepack_batch, F(rows), F(width), F(num_seqs), F(max_seqlen),
           F(input_ids), F(position_ids), F(doc_ids), F(labels), F(cu_seqlens),
           F(seq_ids), F(attention_mask), F(dense_mask), F(cu_seqlens_padded),
           F(num_loss_tokens));
    STRUCT(prepack_batch_arrays, F(input_ids), F(position_ids), F(doc_ids),
           F(labels), F(cu_seqlens), F(seq_ids), F(attention_mask),
           F(dense_mask), F(tokens_cap), F(seqs_cap), F(dense_cap),
           F(cu_seqlens_padded));
}

static void put_signed(const char *name, long long v)
{
    printf("{\"constant\": \"%s\", \"value\": %lld}\n", name, v);
}

static void put_unsigned(const char *name, unsigned long long v)
{
    printf("{\"constant\": \"%s\", \"value\": %llu}\n", name, v);
}

/* A constant's value, printed by its own signedness (UINT64_MAX and -5
 * both exactly). */
#define CONSTANT(c)                                                            \
    _Generic((c), int                                                          \
             : put_signed, long                                                \
             : put_signed, long long                                           \
             : put_signed, default                                             \
             : put_unsigned)(#c, c)

static void constants(void)
{
    CONSTANT(PREPACK_VERSION_MAJOR);
    CONSTANT(PREPACK_VERSION_MINOR);
    CONSTANT(PREPACK_VERSION_PATCH);
    CONSTANT(PREPACK_OK);
    CONSTANT(PREPACK_EINVAL);
    CONSTANT(PREPACK_ENOMEM);
    CONSTANT(PREPACK_EIO);
    CONSTANT(PREPACK_EFORMAT);
    CONSTANT(PREPACK_ECORRUPT);
    CONSTANT(PREPACK_EOVERLONG);
    CONSTANT(PREPACK_ERANGE);
    CONSTANT(PREPACK_NO_RECORD);
    CONSTANT(PREPACK_ALGO_FFD);
    CONSTANT(PREPACK_ALGO_BFD);
    CONSTANT(PREPACK_ALGO_NEXTFIT);
    CONSTANT(PREPACK_OVERLONG_ERROR);
    CONSTANT(PREPACK_OVERLONG_TRUNCATE);
    CONSTANT(PREPACK_OVERLONG_SPLIT);
    CONSTANT(PREPACK_OVERLONG_DROP);
    CONSTANT(PREPACK_MAX_SEQ_LEN_LIMIT);
    CONSTANT(PREPACK_MAX_ITEMS);
    CONSTANT(PREPACK_DEFAULT_BATCH_SIZE);
    CONSTANT(PREPACK_DTYPE_AUTO);
    CONSTANT(PREPACK_DTYPE_UINT16);
    CONSTANT(PREPACK_DTYPE_UINT32);
    CONSTANT(PREPACK_FORMAT_AUTO);
    CONSTANT(PREPACK_FORMAT_JSONL);
    CONSTANT(PREPACK_FORMAT_MEGATRON);
    CONSTANT(PREPACK_FORMAT_LLMC);
    CONSTANT(PREPACK_FORMAT_RAW_U16);
    CONSTANT(PREPACK_FORMAT_ARROW);
    CONSTANT(PREPACK_SEP_DEFAULT);
    CONSTANT(PREPACK_SEP_BEFORE);
    CONSTANT(PREPACK_SEP_AFTER);
    CONSTANT(PREPACK_DEFAULT_FRAME_TOKENS);
    CONSTANT(PREPACK_DEFAULT_SHARD_ROWS);
    CONSTANT(PREPACK_DEFAULT_ZSTD_LEVEL);
}

/* An enum's size (ctypes declares enum fields as c_int) and, where the
 * library names its values, the names by value: the vocabulary Python
 * accepts must be the library's. */
static void put_enum(const char *name, size_t size, const char *(*name_of)(int))
{
    printf("{\"enum\": \"%s\", \"size\": %zu, \"names\": [", name, size);
    for (int v = 0; name_of && name_of(v); v++)
        printf("%s\"%s\"", v ? ", " : "", name_of(v));
    printf("]}\n");
}

static const char *algo_name(int v)
{
    return prepack_algo_name((prepack_algo)v);
}

static const char *overlong_name(int v)
{
    return prepack_overlong_name((prepack_overlong)v);
}

static const char *dtype_name(int v)
{
    return prepack_dtype_name((prepack_dtype)v);
}

static const char *format_name(int v)
{
    return prepack_format_name((prepack_format)v);
}

static void enums(void)
{
    put_enum("prepack_algo", sizeof(prepack_algo), algo_name);
    put_enum("prepack_overlong", sizeof(prepack_overlong), overlong_name);
    put_enum("prepack_dtype", sizeof(prepack_dtype), dtype_name);
    put_enum("prepack_format", sizeof(prepack_format), format_name);
    put_enum("prepack_sep_position", sizeof(prepack_sep_position), NULL);
}

int main(void)
{
    structs();
    constants();
    enums();
    return fflush(stdout) == 0 ? 0 : 1;
}
