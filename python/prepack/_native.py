"""libprepack under Python, over its public API with ctypes: the one
module that declares the C structs and function signatures (prepack.h),
and packing sequences in memory through it. prefill.py uses the same
declarations. tests/python/test_seam.py holds every declaration here to
the header and to the compiler's layout (tests/seam/layout.c)."""

import ctypes
import ctypes.util
import os

import numpy as np

# The names Python accepts for prepack.h's enums, as the library spells
# them (prepack_algo_name, ...). Their numbers are the library's own,
# asked of its parsers when it loads (enum_value); tests/python/test_seam.py
# holds each list to the library's names.
ALGOS = ("ffd", "bfd", "nextfit")
OVERLONGS = ("error", "truncate", "split", "drop")
DTYPES = ("auto", "uint16", "uint32")
_FORMATS = ("arrow", "jsonl")  # the input formats Python names (dataset.py)

# prepack.h's error codes and limits that Python compares with without
# calling the library; test_seam.py checks each against the header's
# (PREPACK_<name>), as the C compiler sees it.
OK, EINVAL, ENOMEM, EIO, EFORMAT, ECORRUPT, EOVERLONG, ERANGE = \
    0, -1, -2, -3, -4, -5, -6, -7
MAX_SEQ_LEN_LIMIT = 1 << 24
_INSTALL = ("libprepack not found: `pip install .` from a clone ships it "
            "inside the package; or build it (`make build`) and set "
            "PREPACK_LIBRARY to build/libprepack.so, or install it "
            "(`cmake --install build`) where the loader finds it")


class _Options(ctypes.Structure):
    """prepack_pack_options"""
    _fields_ = [("max_seq_len", ctypes.c_uint32), ("algo", ctypes.c_int),
                ("overlong", ctypes.c_int), ("max_seqs_per_row", ctypes.c_uint32)]


class _Packed(ctypes.Structure):
    """prepack_packed"""
    _fields_ = [("rows", ctypes.c_size_t), ("num_seqs", ctypes.c_size_t),
                ("num_tokens", ctypes.c_size_t), ("max_seq_len", ctypes.c_uint32),
                ("input_ids", ctypes.POINTER(ctypes.c_uint32)),
                ("row_start", ctypes.POINTER(ctypes.c_int32)),
                ("cu_seqlens", ctypes.POINTER(ctypes.c_int32)),
                ("position_ids", ctypes.POINTER(ctypes.c_int32)),
                ("seq_ids", ctypes.POINTER(ctypes.c_uint64)),
                ("seq_row", ctypes.POINTER(ctypes.c_uint32)),
                ("seq_offset", ctypes.POINTER(ctypes.c_uint32)),
                ("max_seqlen", ctypes.c_uint32),
                ("seq_starts", ctypes.POINTER(ctypes.c_uint32))]


class Diag(ctypes.Structure):
    """prepack_diag"""
    _fields_ = [("code", ctypes.c_int), ("record", ctypes.c_uint64),
                ("message", ctypes.c_char * 256)]


# The library's messages name the command's flags and, rarely, its
# option structs' fields; in Python they read as the keyword that sets
# the same option (pack_dataset, prepack.pack, the streams and steps),
# and python -m prepack turns the keyword back into its flag: the one
# map, (the library's words, the keyword, python -m prepack's flag).
_PYTHON_WORDS = (
    ("--overwrite, or prepack_writer_options.overwrite", "overwrite=True",
     "--overwrite"),
    ("--overwrite", "overwrite=True", "--overwrite"),
    ("--token-dtype uint32 or auto", "token_dtype='uint32' or 'auto'",
     "--token-dtype uint32 or auto"),
    ("--overlong drop", "overlong='drop'", "--overlong drop"),
    ("shard_rows, --shard-rows", "shard_rows", None),
    ("prepack_writer_options.references", "references", None),
)


def python_words(message):
    """A library message with the command's option names (flags, struct
    fields) as the Python keywords of the same options."""
    for c_words, keyword, _ in _PYTHON_WORDS:
        message = message.replace(c_words, keyword)
    return message


def command_words(message):
    """A message in Python's words as python -m prepack says it: the
    keywords of python_words as the flags that set them."""
    for _, keyword, flag in _PYTHON_WORDS:
        if flag is not None:
            message = message.replace(keyword, flag)
    return message


def diag_message(diag, rc):
    """What a failed call with this Diag says, in Python's words."""
    text = diag.message.decode(errors="replace")
    return python_words(text) if text else f"prepack error {rc}"


class PrefillOptions(ctypes.Structure):
    """prepack_prefill_options"""
    _fields_ = [("capacity", ctypes.c_uint32), ("algo", ctypes.c_int),
                ("pad_id", ctypes.c_uint32)]


class Prefill(ctypes.Structure):
    """prepack_prefill"""
    _fields_ = [("rows", ctypes.c_size_t), ("capacity", ctypes.c_uint32),
                ("num_prompts", ctypes.c_size_t),
                ("input_ids", ctypes.POINTER(ctypes.c_uint32)),
                ("position_ids", ctypes.POINTER(ctypes.c_int32)),
                ("prompt_index", ctypes.POINTER(ctypes.c_int32)),
                ("row_tokens", ctypes.POINTER(ctypes.c_int32)),
                ("cu_seqlens", ctypes.POINTER(ctypes.c_int32)),
                ("row_first", ctypes.POINTER(ctypes.c_int32)),
                ("order", ctypes.POINTER(ctypes.c_uint32)),
                ("prompt_row", ctypes.POINTER(ctypes.c_uint32)),
                ("prompt_start", ctypes.POINTER(ctypes.c_uint32)),
                ("prompt_length", ctypes.POINTER(ctypes.c_uint32)),
                ("last_index", ctypes.POINTER(ctypes.c_uint64))]


# const uint32_t *const *tokens, passed as addresses (numpy's .ctypes.data)
_TOKENS = ctypes.POINTER(ctypes.c_void_p)


class Row(ctypes.Structure):
    """prepack_row (the arrays as addresses, ints to Python: a typed
    pointer field builds a pointer object on every read, and ShardSet[i]
    reads four a row)"""
    _fields_ = [("num_tokens", ctypes.c_size_t), ("num_seqs", ctypes.c_size_t),
                ("token_dtype", ctypes.c_int), ("input_ids", ctypes.c_void_p),
                ("cu_seqlens", ctypes.c_void_p), ("seq_ids", ctypes.c_void_p),
                ("loss_mask", ctypes.c_void_p),
                ("seq_starts", ctypes.c_void_p)]


class BatchOptions(ctypes.Structure):
    """prepack_batch_options"""
    _fields_ = [("padded", ctypes.c_int), ("pad_id", ctypes.c_int64),
                ("dense_mask", ctypes.c_int),
                ("pad_multiple", ctypes.c_uint32)]


class Batch(ctypes.Structure):
    """prepack_batch"""
    _fields_ = [("rows", ctypes.c_size_t), ("width", ctypes.c_size_t),
                ("num_seqs", ctypes.c_size_t), ("max_seqlen", ctypes.c_uint32),
                ("input_ids", ctypes.POINTER(ctypes.c_int64)),
                ("position_ids", ctypes.POINTER(ctypes.c_int64)),
                ("doc_ids", ctypes.POINTER(ctypes.c_int64)),
                ("labels", ctypes.POINTER(ctypes.c_int64)),
                ("cu_seqlens", ctypes.POINTER(ctypes.c_int32)),
                ("seq_ids", ctypes.POINTER(ctypes.c_uint64)),
                ("attention_mask", ctypes.POINTER(ctypes.c_uint8)),
                ("dense_mask", ctypes.POINTER(ctypes.c_uint8)),
                ("cu_seqlens_padded", ctypes.POINTER(ctypes.c_int32)),
                ("num_loss_tokens", ctypes.c_uint64)]


class BatchArrays(ctypes.Structure):
    """prepack_batch_arrays (the arrays as addresses: numpy's
    `.ctypes.data`, set per batch, is cheaper than typed pointers)"""
    _fields_ = [("input_ids", ctypes.c_void_p),
                ("position_ids", ctypes.c_void_p),
                ("doc_ids", ctypes.c_void_p), ("labels", ctypes.c_void_p),
                ("cu_seqlens", ctypes.c_void_p), ("seq_ids", ctypes.c_void_p),
                ("attention_mask", ctypes.c_void_p),
                ("dense_mask", ctypes.c_void_p),
                ("tokens_cap", ctypes.c_size_t), ("seqs_cap", ctypes.c_size_t),
                ("dense_cap", ctypes.c_size_t),
                ("cu_seqlens_padded", ctypes.c_void_p)]


class StoreOptions(ctypes.Structure):
    """prepack_store_options"""
    _fields_ = [("tmp_dir", ctypes.c_char_p), ("dtype", ctypes.c_int),
                ("lengths_only", ctypes.c_int), ("allocator", ctypes.c_void_p)]


# prepack_progress_fn: Python passes none (NULL)
_PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p,
                                ctypes.c_uint64, ctypes.c_uint64)


class IngestOptions(ctypes.Structure):
    """prepack_ingest_options"""
    _fields_ = [("format", ctypes.c_int), ("field", ctypes.c_char_p),
                ("has_doc_sep", ctypes.c_int), ("doc_sep", ctypes.c_uint32),
                ("sep_position", ctypes.c_int),
                ("allow_trailing_bytes", ctypes.c_int),
                ("progress", _PROGRESS_FN),
                ("progress_opaque", ctypes.c_void_p),
                ("threads", ctypes.c_int)]


class PlanOptions(ctypes.Structure):
    """prepack_plan_options"""
    _fields_ = [("max_seq_len", ctypes.c_uint32), ("algo", ctypes.c_int),
                ("overlong", ctypes.c_int),
                ("max_seqs_per_row", ctypes.c_uint32),
                ("shuffle_rows", ctypes.c_int),
                ("shuffle_seed", ctypes.c_uint64),
                ("allocator", ctypes.c_void_p),
                ("pad_multiple", ctypes.c_uint32)]


class WriterOptions(ctypes.Structure):
    """prepack_writer_options"""
    _fields_ = [("rows_per_frame", ctypes.c_uint32),
                ("shard_rows", ctypes.c_uint64),
                ("shard_bytes", ctypes.c_uint64), ("level", ctypes.c_int),
                ("overwrite", ctypes.c_int), ("threads", ctypes.c_int),
                ("allocator", ctypes.c_void_p), ("references", ctypes.c_int)]


class StepOptions(ctypes.Structure):
    """prepack_step_options"""
    _fields_ = [("inputs", ctypes.POINTER(ctypes.c_char_p)),
                ("ninputs", ctypes.c_size_t), ("ingest", IngestOptions),
                ("store", StoreOptions), ("plan", PlanOptions),
                ("writer", WriterOptions), ("batch_size", ctypes.c_uint32),
                ("text_key", ctypes.c_char_p)]


class StepResult(ctypes.Structure):
    """prepack_step_result"""
    _fields_ = [("already_done", ctypes.c_int)] + [
        (name, ctypes.c_uint64) for name in (
            "sequences", "tokens", "rows", "shards", "bytes_written",
            "bytes_mapped")]


class StepRange(ctypes.Structure):
    """prepack_step_range"""
    _fields_ = [("input", ctypes.c_uint32), ("whole", ctypes.c_int),
                ("begin", ctypes.c_uint64), ("end", ctypes.c_uint64)]


class StreamOptions(ctypes.Structure):
    """prepack_stream_options"""
    _fields_ = [("max_seq_len", ctypes.c_uint32), ("window", ctypes.c_uint32),
                ("lookahead", ctypes.c_uint32), ("overlong", ctypes.c_int),
                ("max_seqs_per_row", ctypes.c_uint32),
                ("allocator", ctypes.c_void_p)]


class StreamStats(ctypes.Structure):
    """prepack_stream_stats"""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "sequences", "items", "tokens", "rows", "dropped", "truncated_tokens",
        "open_rows", "buffered")]


class PlanStats(ctypes.Structure):
    """prepack_plan_stats (prepack_report begins with it)"""
    _fields_ = [("max_seq_len", ctypes.c_uint32), ("sequences", ctypes.c_uint64),
                ("input_tokens", ctypes.c_uint64), ("items", ctypes.c_uint64),
                ("tokens", ctypes.c_uint64), ("rows", ctypes.c_uint64),
                ("lower_bound", ctypes.c_uint64), ("efficiency", ctypes.c_double),
                ("max_items_per_row", ctypes.c_uint32),
                ("mean_items_per_row", ctypes.c_double),
                ("zero_length", ctypes.c_uint64), ("overlong", ctypes.c_uint64),
                ("truncated_tokens", ctypes.c_uint64),
                ("split_chunks", ctypes.c_uint64),
                ("dropped_sequences", ctypes.c_uint64),
                ("dropped_tokens", ctypes.c_uint64)]


class LengthSummary(ctypes.Structure):
    """prepack_length_summary"""
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "min", "median", "p90", "p99", "max")] + \
        [("over_max_seq_len", ctypes.c_uint64)]


class Layout(ctypes.Structure):
    """prepack_layout (one way of laying items out in rows)"""
    _fields_ = [("rows", ctypes.c_uint64), ("slots", ctypes.c_uint64),
                ("pad_tokens", ctypes.c_uint64),
                ("pad_fraction", ctypes.c_double),
                ("attention_cost", ctypes.c_double)]


class Report(ctypes.Structure):
    """prepack_report"""
    _fields_ = [("plan", PlanStats), ("lengths", LengthSummary),
                ("batch_size", ctypes.c_uint32), ("naive_batch", Layout),
                ("padded_to_max", Layout), ("packed", Layout),
                ("packed_dense_attention_cost", ctypes.c_double)]


class ManifestInfo(ctypes.Structure):
    """prepack_manifest_info"""
    _fields_ = [("plan", ctypes.POINTER(PlanOptions)),
                ("store", ctypes.c_void_p),
                ("report", ctypes.POINTER(Report))]


class CostModelStruct(ctypes.Structure):
    """prepack_cost_model"""
    _fields_ = [("per_token", ctypes.c_double), ("per_pair", ctypes.c_double)]


class ModelDims(ctypes.Structure):
    """prepack_model_dims"""
    _fields_ = [("hidden_size", ctypes.c_uint32),
                ("intermediate_size", ctypes.c_uint32),
                ("num_heads", ctypes.c_uint32), ("num_kv_heads", ctypes.c_uint32),
                ("num_layers", ctypes.c_uint32), ("bidirectional", ctypes.c_int)]


def _signatures():
    """Every function the package calls: name -> (argtypes, restype)."""
    p, i, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    diag, out = ctypes.POINTER(Diag), ctypes.POINTER(ctypes.c_void_p)
    return {
        "prepack_version": ([], ctypes.c_char_p),
        "prepack_dependency_version": ([ctypes.c_char_p], ctypes.c_char_p),
        # enum names and numbers (enum_value, dtype_name)
        "prepack_algo_parse": ([ctypes.c_char_p, ctypes.POINTER(i)], i),
        "prepack_overlong_parse": ([ctypes.c_char_p, ctypes.POINTER(i)], i),
        "prepack_dtype_parse": ([ctypes.c_char_p, ctypes.POINTER(i)], i),
        "prepack_format_parse": ([ctypes.c_char_p, ctypes.POINTER(i)], i),
        "prepack_dtype_name": ([i], ctypes.c_char_p),
        "prepack_dtype_width": ([i], size),
        "prepack_pack_sequences": ([ctypes.POINTER(ctypes.POINTER(_Packed)),
                                    _TOKENS, ctypes.POINTER(ctypes.c_uint32),
                                    size, ctypes.POINTER(_Options), diag], i),
        "prepack_packed_free": ([ctypes.POINTER(_Packed)], None),
        "prepack_prefill_create": ([ctypes.POINTER(ctypes.POINTER(Prefill)),
                                    _TOKENS, ctypes.POINTER(ctypes.c_uint32),
                                    size, ctypes.POINTER(PrefillOptions),
                                    diag], i),
        "prepack_prefill_free": ([ctypes.POINTER(Prefill)], None),
        # balancing (balance.py)
        "prepack_cost_model_for": ([ctypes.POINTER(ModelDims),
                                    ctypes.POINTER(CostModelStruct)], i),
        "prepack_balance": ([p, size, ctypes.c_uint32, p, diag], i),
        "prepack_balance_epoch": ([p, size, p, ctypes.c_uint32, ctypes.c_uint32,
                                   ctypes.c_uint32, p, p, diag], i),
        "prepack_reader_row_costs": ([p, ctypes.POINTER(CostModelStruct), p,
                                      diag], i),
        "prepack_plan_row_cost": ([ctypes.POINTER(CostModelStruct), p, size],
                                  ctypes.c_double),
        # the reader (_creader.py)
        "prepack_reader_open": ([out, ctypes.c_char_p, p, diag], i),
        "prepack_reader_free": ([p], None),
        "prepack_reader_row_count": ([p], size),
        "prepack_reader_max_seq_len": ([p], ctypes.c_uint32),
        "prepack_reader_token_dtype": ([p], i),
        "prepack_reader_row": ([p, size, ctypes.POINTER(Row), diag], i),
        "prepack_reader_batch_into": ([p, p, size,
                                       ctypes.POINTER(BatchOptions),
                                       ctypes.POINTER(BatchArrays),
                                       ctypes.POINTER(Batch), diag], i),
        # the stream packer (stream.py)
        "prepack_stream_create": ([out, ctypes.POINTER(StreamOptions), diag],
                                  i),
        "prepack_stream_free": ([p], None),
        "prepack_stream_push": ([p, ctypes.c_uint64, p, p, ctypes.c_uint32,
                                 diag], i),
        "prepack_stream_flush": ([p, diag], i),
        "prepack_stream_ready": ([p], size),
        "prepack_stream_pop": ([p, ctypes.POINTER(Row)], i),
        "prepack_stream_get_stats": ([p, ctypes.POINTER(StreamStats)], None),
        "prepack_stream_save": ([p, p, size, ctypes.POINTER(size), diag], i),
        "prepack_stream_restore": ([out, p, size, ctypes.POINTER(StreamOptions),
                                    diag], i),
        # a text scan task (steps.py)
        "prepack_step_scan_open": ([out, ctypes.c_char_p,
                                    ctypes.POINTER(StepOptions),
                                    ctypes.c_uint32, ctypes.c_uint32,
                                    ctypes.POINTER(StepRange),
                                    ctypes.POINTER(size), out,
                                    ctypes.POINTER(StepResult), diag], i),
        "prepack_step_scan_save": ([p, ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.POINTER(StepResult), diag], i),
        "prepack_step_scan_free": ([p], None),
        # store, plan, rows and writer (dataset.py)
        "prepack_store_create": ([out, ctypes.POINTER(StoreOptions), diag], i),
        "prepack_store_free": ([p], None),
        "prepack_store_begin_input": ([p, ctypes.c_char_p, i], i),
        "prepack_store_add_sequences": ([p, p, p, size, p, diag], i),
        "prepack_store_finish": ([p, diag], i),
        "prepack_store_join_sequences": ([p, p, size, diag], i),
        "prepack_store_sequence_count": ([p], size),
        "prepack_store_lengths": ([p], p),
        "prepack_store_dtype": ([p], i),
        "prepack_plan_store": ([out, p, ctypes.POINTER(PlanOptions), diag],
                               i),
        "prepack_plan_create": ([out, p, size, ctypes.POINTER(PlanOptions),
                                 diag], i),
        "prepack_plan_free": ([p], None),
        "prepack_plan_row_count": ([p], size),
        "prepack_report_compute": ([p, p, size, ctypes.c_uint32,
                                    ctypes.POINTER(Report)], i),
        "prepack_report_write_svg": ([ctypes.POINTER(Report), p, p, size, p], i),
        "prepack_row_builder_create": ([out, p, p, diag], i),
        "prepack_row_builder_get": ([p, size, ctypes.POINTER(Row)], i),
        "prepack_row_builder_free": ([p], None),
        # a flat batch of rows already in memory (collate)
        "prepack_row_input_ids": ([ctypes.POINTER(Row), ctypes.c_int64, p,
                                   size], None),
        "prepack_row_position_ids": ([ctypes.POINTER(Row), p, size], None),
        "prepack_row_doc_ids": ([ctypes.POINTER(Row), ctypes.c_int64, p,
                                 size], None),
        "prepack_row_labels": ([ctypes.POINTER(Row), p, size], None),
        "prepack_row_labels_unshifted": ([ctypes.POINTER(Row), p, size],
                                         None),
        "prepack_writer_create": ([out, ctypes.c_char_p, ctypes.c_uint32, i,
                                   ctypes.POINTER(WriterOptions), diag], i),
        "prepack_writer_add": ([p, ctypes.POINTER(Row), diag], i),
        "prepack_writer_finish": ([p, ctypes.POINTER(ManifestInfo), diag], i),
        "prepack_writer_free": ([p], None),
        "prepack_writer_bytes": ([p], ctypes.c_uint64),
    }


_lib = None
_numbers = None  # kind -> {name: number}, from the library (_enum_numbers)
_missing = False  # library() failed once (loaded)


def _bundled():
    """The libprepack.so that pip install put beside this module, if any."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "libprepack.so")
    return path if os.path.exists(path) else None


def version_line():
    """`prepack --version`'s line, from the library: its version and the
    versions of the libraries it uses."""
    lib = library()

    def dep(name):
        return (lib.prepack_dependency_version(name.encode()) or b"?").decode()
    deps = ", ".join(f"{name} {dep(name)}"
                     for name in ("zstd", "msgpack-c", "simdjson", "xxhash"))
    return f"prepack {lib.prepack_version().decode()} ({deps})"


def library():
    """libprepack, loaded once with every signature declared."""
    global _lib
    if _lib is None:
        path = os.environ.get("PREPACK_LIBRARY") or _bundled() or \
            ctypes.util.find_library("prepack")
        if not path:
            raise RuntimeError(_INSTALL)
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise RuntimeError(f"{_INSTALL} ({e})") from None
        global _numbers
        _lib = _Declared(lib, path)
        _numbers = _enum_numbers(_lib, path)
    return _lib


def loaded():
    """libprepack, or None where it does not load: for callers with a
    Python path beside the C one. The miss is remembered, since looking
    for the library (ctypes.util.find_library) runs a subprocess."""
    global _missing
    if _lib is None and not _missing:
        try:
            library()
        except RuntimeError:
            _missing = True
    return _lib


class _Declared:
    """libprepack's functions, each with its signature declared, and only
    those: ctypes would call an undeclared one with guessed int arguments
    (a numpy pointer cut to 32 bits), so using one is an AttributeError
    here instead of a crash there."""

    def __init__(self, lib, path):
        self._name = path  # the file loaded, named as ctypes.CDLL names it
        for name, (args, result) in _signatures().items():
            f = getattr(lib, name)
            f.argtypes, f.restype = args, result
            setattr(self, name, f)


def _enum_numbers(lib, path):
    """kind -> {name: number} for every enum name Python uses, numbered by
    the library's own parser (prepack_<kind>_parse): no number is copied
    from prepack.h."""
    numbers = {}
    value = ctypes.c_int()
    for kind, names in (("algo", ALGOS), ("overlong", OVERLONGS),
                        ("dtype", DTYPES), ("format", _FORMATS)):
        parse = getattr(lib, f"prepack_{kind}_parse")
        numbers[kind] = {}
        for name in names:
            if parse(name.encode(), ctypes.byref(value)) != OK:
                raise RuntimeError(f"{path}: prepack_{kind}_parse does not "
                                   f"know {name!r}: a libprepack of another "
                                   f"version than this package")
            numbers[kind][name] = value.value
    return numbers


def enum_value(kind, name):
    """The library's number for an enum name Python uses: kind "algo",
    "overlong", "dtype" or "format"; name from ALGOS, OVERLONGS, DTYPES
    or "arrow" (callers check names first, for their own message)."""
    library()
    return _numbers[kind][name]


def dtype_name(value):
    """A prepack_dtype the library returned, by name ("uint16", ...)."""
    name = library().prepack_dtype_name(value)
    if name is None:
        raise ValueError(f"prepack_dtype {value} has no name")
    return name.decode()


class Handle:
    """An object that owns one C handle, self._h, made from self._lib:
    close() frees it with the library function named by _free (once),
    and so does garbage collection."""
    _free = None

    def close(self):
        if self._h:
            getattr(self._lib, self._free)(self._h)
            self._h = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def copy_array(ptr, n, dtype):
    """Copies n elements the library owns into a new numpy array: ptr a
    typed pointer, or an address (a c_void_p field) read as dtype."""
    if isinstance(ptr, int):
        ptr = ctypes.cast(ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(
            np.dtype(dtype))))
    return np.ctypeslib.as_array(ptr, shape=(n,)).astype(dtype) if n else np.zeros(0, dtype)


MAX_ID = 2**32 - 1


def _bad_token(i, j, value, why):
    return ValueError(f"sequence {i}, position {j}: {value!r} {why} (token "
                      f"ids are integers in 0..{MAX_ID})")


def _first_bad_element(i, seq):
    """The ValueError for the first element of a list-like sequence that is
    not an integer token id."""
    for j, v in enumerate(seq):
        if isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, np.integer)):
            return _bad_token(i, j, v, "is not an integer")
        if not 0 <= int(v) <= MAX_ID:
            return _bad_token(i, j, int(v), "is out of range")
    return ValueError(f"sequence {i}: not a sequence of token ids")


_BOOLS = frozenset((bool, np.bool_))


def token_array(i, seq):
    """Sequence i as a contiguous uint32 array, or ValueError naming the
    sequence and position of the first value that is not a token id: never
    a silent wrap (-2, 2^33) or truncation (1.5). Takes lists, tuples,
    numpy arrays of any dtype and torch tensors."""
    if hasattr(seq, "detach") and hasattr(seq, "numpy"):  # a torch tensor
        seq = seq.detach().cpu().numpy()
    if isinstance(seq, np.ndarray):
        a = seq
    else:
        try:
            a = np.asarray(seq)
        except (ValueError, TypeError, OverflowError):
            raise _first_bad_element(i, seq) from None
    if a.ndim != 1:
        if a.ndim == 0 or a.dtype == object:
            raise ValueError(f"sequence {i}: not a sequence of token ids")
        raise ValueError(f"sequence {i}: {a.ndim}-dimensional, token "
                         f"sequences are 1-dimensional")
    if a.size == 0:
        return np.zeros(0, np.uint32)
    if a.dtype.kind in "ui":
        # numpy made True a 1; bool and np.bool_ cannot be subclassed, so
        # their exact types are all there is to find (7x a generator)
        if not isinstance(seq, np.ndarray) and not _BOOLS.isdisjoint(map(type, seq)):
            raise _first_bad_element(i, seq)
        bad = np.flatnonzero((a < 0) | (a > MAX_ID))
        if bad.size:
            j = int(bad[0])
            raise _bad_token(i, j, int(a[j]), "is out of range")
        return np.ascontiguousarray(a, dtype=np.uint32)
    if a.dtype.kind in "fcb":
        if not isinstance(seq, np.ndarray):
            raise _first_bad_element(i, seq)  # the first float of a list
        raise _bad_token(i, 0, a[0].item(),
                         f"is a {a.dtype} value, not an integer")
    if a.dtype == object:  # Python ints (maybe past int64) or anything
        values = a.tolist()
        if all(isinstance(v, (int, np.integer)) and not isinstance(
                v, (bool, np.bool_)) and 0 <= int(v) <= MAX_ID
               for v in values):
            return np.array(values, dtype=np.uint32)
        raise _first_bad_element(i, values)
    raise _first_bad_element(i, seq)


def _is_int_vector(s):
    """A numpy integer vector whose values concatenate exactly with int64
    (uint64 would turn the mix to float64: those take token_array)."""
    return isinstance(s, np.ndarray) and s.ndim == 1 and (
        s.dtype.kind == "i" or (s.dtype.kind == "u" and s.dtype.itemsize < 8))


def sequence_args(sequences):
    """The (keep, pointers, lengths, n) that the library's packers take for
    a list of token sequences; keep `keep` alive until the call returns.
    ValueError for anything that is not a token id, naming where.

    Every sequence goes into one uint32 buffer, checked at once; numpy
    integer arrays skip the per-sequence conversion (the common case, and
    the one where per-sequence Python work would dominate)."""
    seqs = list(sequences)
    n = len(seqs)
    parts = [s if _is_int_vector(s) else token_array(i, s)
             for i, s in enumerate(seqs)]
    sizes = np.fromiter((len(a) for a in parts), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.concatenate(parts) if n else np.zeros(0, np.uint32)
    if flat.size and flat.dtype != np.uint32:
        bad = (flat.min() < 0) or (flat.max() > MAX_ID)
        if bad:  # name the first bad one, as token_array would
            j = int(np.flatnonzero((flat < 0) | (flat > MAX_ID))[0])
            i = int(np.searchsorted(offsets, j, side="right")) - 1
            raise _bad_token(i, j - int(offsets[i]), int(flat[j]),
                             "is out of range")
        flat = flat.astype(np.uint32)
    flat = np.ascontiguousarray(flat, dtype=np.uint32)
    base = flat.ctypes.data
    ptrs = (ctypes.c_void_p * max(n, 1))(*(base + 4 * offsets[:-1]).tolist())
    lengths = (ctypes.c_uint32 * max(n, 1))(*sizes.tolist())
    return flat, ptrs, lengths, n


def pack(sequences, max_seq_len=0, algo="ffd", overlong="error",
         max_seqs_per_row=0):
    """Packs a list of token sequences (lists or integer arrays) into rows
    with the C library's planner, returning rows shaped like ShardSet
    items (input_ids uint32, cu_seqlens int32, seq_ids uint64, and under
    overlong="split" seq_starts uint32: where each chunk starts in its
    sequence), ready for prepack.collate. max_seq_len 0 means the longest
    sequence; overlong is "error", "truncate", "split" or "drop", as for
    `prepack pack`. Raises
    RuntimeError when libprepack is not installed, ValueError on bad input
    (the library's message)."""
    arrays, ptrs, lengths, n = sequence_args(sequences)
    lib = library()
    if algo not in ALGOS or overlong not in OVERLONGS:
        raise ValueError(f"algo must be one of {list(ALGOS)} and overlong one of "
                         f"{list(OVERLONGS)}")
    opts = _Options(max_seq_len, enum_value("algo", algo),
                    enum_value("overlong", overlong), max_seqs_per_row)
    out = ctypes.POINTER(_Packed)()
    diag = Diag()
    rc = lib.prepack_pack_sequences(ctypes.byref(out), ptrs, lengths, n,
                                    ctypes.byref(opts), ctypes.byref(diag))
    if rc != 0:
        raise ValueError(diag_message(diag, rc))
    try:
        p = out.contents
        ids = copy_array(p.input_ids, p.num_tokens, np.uint32)
        starts = copy_array(p.row_start, p.rows + 1, np.int64)
        cu = copy_array(p.cu_seqlens, p.num_seqs + 1, np.int64)
        seq = copy_array(p.seq_ids, p.num_seqs, np.uint64)
        chunk_starts = copy_array(p.seq_starts, p.num_seqs, np.uint32)
        split = overlong == "split"
        # each row's first item: where its first token is in cu_seqlens
        # (one vectorised search, not a Python loop over the items)
        first_item = np.searchsorted(cu, starts).tolist()
        starts = starts.tolist()
        rows = []
        for r in range(p.rows):
            lo, hi = starts[r], starts[r + 1]
            first, k = first_item[r], first_item[r + 1]
            row = {"input_ids": ids[lo:hi],
                   "cu_seqlens": (cu[first:k + 1] - lo).astype(np.int32),
                   "seq_ids": seq[first:k]}
            if split:  # as ShardSet rows carry it: where each chunk starts
                row["seq_starts"] = chunk_starts[first:k]
            rows.append(row)
        return rows
    finally:
        lib.prepack_packed_free(out)
