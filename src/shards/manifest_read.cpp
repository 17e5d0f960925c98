// Reading manifest.json (docs/FORMAT.md) with simdjson, the parser the
// library already carries for JSONL; only the keys a reader needs are
// taken, and every one is checked.
#include <simdjson.h>

#include "common/json_count.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <functional>
#include <utility>
#include <vector>

extern "C" {
#include "common/alloc.h"
#include "common/error.h"
#include "common/io.h"
#include "shards/manifest.h"
#include "shards/shard_format.h"
}

namespace
{

int bad(prepack_diag *diag, const char *path, const std::string &what)
{
    return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD, "%s: %s", path,
                   what.c_str());
}

bool get_u64(simdjson::dom::object o, const char *key, uint64_t *out)
{
    return !o[key].get_uint64().get(*out);
}

// A shard's claimed rows and tokens against what its bytes and L allow:
// each frame of up to R rows costs at least a seek-table entry and the
// smallest zstd frame, and each row holds 1..L tokens. Nothing is sized or
// looped over from a count before this.
std::string check_shard_claims(const pp_shard_info *s, uint64_t L, uint64_t R)
{
    if (s->rows == 0)
        return "holds no rows (a writer never writes an empty shard)";
    uint64_t frames = s->rows / R + (s->rows % R != 0);
    uint64_t fixed = pp_seek_table_bytes(0);
    if (s->bytes < fixed ||
        frames > (s->bytes - fixed) / (PP_SEEK_ENTRY_BYTES + PP_MIN_FRAME_BYTES))
        return std::to_string(s->rows) + " rows need " +
               std::to_string(frames) + " frames, more than its " +
               std::to_string(s->bytes) + " bytes can hold";
    uint64_t most;
    if (s->tokens < s->rows ||
        (!__builtin_mul_overflow(s->rows, L, &most) && s->tokens > most))
        return std::to_string(s->tokens) + " tokens in " +
               std::to_string(s->rows) + " rows of 1 to " + std::to_string(L) +
               " tokens";
    return "";
}

// Exactly 16 lowercase hex digits, as written (strtoull alone would take
// "0x", a sign, blanks and capitals).
bool parse_hex64(std::string_view text, uint64_t *out)
{
    std::string h(text);
    if (h.size() != 16 ||
        h.find_first_not_of("0123456789abcdef") != std::string::npos)
        return false;
    *out = strtoull(h.c_str(), nullptr, 16);
    return true;
}

char *copy_string(const prepack_allocator *a, std::string_view v)
{
    char *p = pp_strndup(a, v.data(), v.size());
    if (!p)
        throw std::bad_alloc();
    return p;
}

// One entry of "sources": an absolute path, a token width prepack reads,
// the file's size and sampled hash, and optionally its index's.
std::string read_source(simdjson::dom::object o, const prepack_allocator *a,
                        pp_set_source *s)
{
    std::string_view file, hash, index;
    uint64_t width = 0;
    bool is_signed = false;
    simdjson::dom::element e;
    if (o["path"].get_string().get(file) || !get_u64(o, "width", &width) ||
        o["signed"].get_bool().get(is_signed) ||
        !get_u64(o, "bytes", &s->bytes) ||
        o["sample_xxh64"].get_string().get(hash))
        return "needs path, width, signed, bytes and sample_xxh64";
    if (file.empty() || file[0] != '/' || file.find('\0') != file.npos)
        return "path must be an absolute path";
    if (width != 1 && width != 2 && width != 4 && width != 8)
        return "width must be 1, 2, 4 or 8 bytes";
    if (!parse_hex64(hash, &s->sample_xxh64))
        return "sample_xxh64 must be 16 lowercase hex digits";
    s->width = unsigned(width);
    s->is_signed = is_signed;
    s->path = copy_string(a, file);
    if (o["index"].get(e))
        return "";
    if (e.get_string().get(index) || index.empty() || index[0] != '/' ||
        index.find('\0') != index.npos ||
        !get_u64(o, "index_bytes", &s->index_bytes) ||
        o["index_xxh64"].get_string().get(hash) ||
        !parse_hex64(hash, &s->index_xxh64))
        return "index needs an absolute path, index_bytes and index_xxh64";
    s->index = copy_string(a, index);
    return "";
}

// How many sources a set may list before any is opened: one per input
// (each token file is one), or without inputs one per token its rows
// could reference; never past the uint32 of ref_source.
uint64_t sources_bound(simdjson::dom::object root)
{
    simdjson::dom::array inputs;
    uint64_t most = 0;
    if (!root["inputs"].get_array().get(inputs))
        most = pp_json_array_count(inputs);
    if (most == 0 && !get_u64(root, "tokens", &most))
        most = 0;
    most = most ? most : 1;
    return most < UINT32_MAX ? most : UINT32_MAX;
}

// Version 2's "storage": a plan-only set ("references") lists the files
// its rows' tokens are read from.
int read_storage(simdjson::dom::object root, const char *path, uint64_t version,
                 pp_manifest *m, prepack_diag *diag)
{
    std::string_view storage = "tokens";
    simdjson::dom::element e;
    if (version >= 2 && !root["storage"].get(e) &&
        e.get_string().get(storage))
        return bad(diag, path, "storage must be a string");
    if (storage != "tokens" && storage != "references")
        return bad(diag, path,
                   "storage must be \"tokens\" or \"references\", not \"" +
                       std::string(storage) + "\"");
    if (storage == "tokens")
        return PREPACK_OK;
    m->references = 1;
    simdjson::dom::array sources;
    if (root["sources"].get_array().get(sources))
        return bad(diag, path, "a set of references needs a \"sources\" array");
    m->nsources = pp_json_array_count(sources);
    uint64_t most = sources_bound(root);
    if (m->nsources > most)
        return bad(diag, path,
                   std::to_string(m->nsources) + " sources, more than the " +
                       std::to_string(most) +
                       " a set of its inputs or tokens can reference");
    m->sources = static_cast<pp_set_source *>(
        pp_calloc(m->alloc, m->nsources ? m->nsources : 1, sizeof *m->sources));
    if (!m->sources)
        throw std::bad_alloc();
    size_t i = 0;
    for (simdjson::dom::element s : sources) {
        simdjson::dom::object o;
        std::string wrong = s.get_object().get(o)
                                ? std::string("is not an object")
                                : read_source(o, m->alloc, &m->sources[i]);
        if (!wrong.empty())
            return bad(diag, path,
                       "source " + std::to_string(i) + ": " + wrong);
        i++;
    }
    return PREPACK_OK;
}

int read_shards(simdjson::dom::object root, const char *path, pp_manifest *m,
                prepack_diag *diag)
{
    simdjson::dom::array shards;
    if (root["shards"].get_array().get(shards))
        return bad(diag, path, "no \"shards\" array");
    m->nshards = pp_json_array_count(shards);
    m->shards = static_cast<pp_shard_info *>(
        pp_calloc(m->alloc, m->nshards ? m->nshards : 1, sizeof *m->shards));
    if (!m->shards)
        throw std::bad_alloc();
    size_t i = 0;
    uint64_t rows = 0, tokens = 0;
    for (simdjson::dom::element e : shards) {
        simdjson::dom::object o;
        std::string_view file, hash;
        pp_shard_info *s = &m->shards[i];
        std::string at = "shard entry " + std::to_string(i) + ": ";
        if (e.get_object().get(o) || o["file"].get_string().get(file) ||
            !get_u64(o, "rows", &s->rows) ||
            !get_u64(o, "tokens", &s->tokens) ||
            !get_u64(o, "bytes", &s->bytes) ||
            o["xxh64"].get_string().get(hash))
            return bad(diag, path,
                       at + "needs file, rows, tokens, bytes and xxh64");
        // Shard i is shard-NNNNN.zst for i: a name listed twice, out of
        // order or skipped is a manifest that lies about the set.
        pp_shard_name(s->file, i);
        if (file != s->file)
            return bad(diag, path,
                       at + "names '" + std::string(file) + "', shard " +
                           std::to_string(i) + " is " + s->file);
        if (!parse_hex64(hash, &s->xxh64))
            return bad(diag, path,
                       at + "xxh64 must be 16 lowercase hex digits");
        std::string wrong =
            check_shard_claims(s, m->max_seq_len, m->rows_per_frame);
        if (!wrong.empty())
            return bad(diag, path, at + wrong);
        if (__builtin_add_overflow(rows, s->rows, &rows) ||
            __builtin_add_overflow(tokens, s->tokens, &tokens) ||
            rows > SIZE_MAX)
            return bad(diag, path, at + "the totals overflow");
        i++;
    }
    if (!get_u64(root, "rows", &m->rows) || !get_u64(root, "tokens", &m->tokens))
        return bad(diag, path, "needs \"rows\" and \"tokens\" totals");
    if (m->rows != rows || m->tokens != tokens)
        return bad(diag, path,
                   "says " + std::to_string(m->rows) + " rows and " +
                       std::to_string(m->tokens) + " tokens, its shards " +
                       std::to_string(rows) + " and " + std::to_string(tokens));
    return PREPACK_OK;
}

// "inputs": each input's first_sequence follows the ones before it; their
// sum is what "stats" says was packed.
// A plan-only set lists one input per source, in order: each source
// learns its input's sequence ids (a Megatron reference is checked
// against the index entry of its sequence).
void give_sources_their_inputs(pp_manifest *m, uint64_t i, uint64_t first,
                               uint64_t seqs)
{
    if (i < m->nsources) {
        m->sources[i].first_sequence = first;
        m->sources[i].sequences = seqs;
        m->sources[i].has_input = 1;
    }
}

int read_inputs(simdjson::dom::object root, const char *path, pp_manifest *m,
                uint64_t *tokens, prepack_diag *diag)
{
    simdjson::dom::element e;
    simdjson::dom::array inputs;
    if (root["inputs"].get(e))
        return PREPACK_OK; // optional: a set made without a store
    if (e.get_array().get(inputs))
        return bad(diag, path, "\"inputs\" must be an array");
    uint64_t next = 0, i = 0;
    for (simdjson::dom::element in : inputs) {
        simdjson::dom::object o;
        uint64_t seqs, toks, first;
        std::string at = "input " + std::to_string(i++) + ": ";
        if (in.get_object().get(o) || !get_u64(o, "sequences", &seqs) ||
            !get_u64(o, "tokens", &toks) ||
            !get_u64(o, "first_sequence", &first))
            return bad(diag, path,
                       at + "needs sequences, tokens and first_sequence");
        if (first != next)
            return bad(diag, path,
                       at + "first_sequence " + std::to_string(first) +
                           ", the inputs before it hold " +
                           std::to_string(next));
        give_sources_their_inputs(m, i - 1, first, seqs);
        if (__builtin_add_overflow(next, seqs, &next) ||
            __builtin_add_overflow(*tokens, toks, tokens))
            return bad(diag, path, at + "the totals overflow");
    }
    for (size_t k = 0; i != m->nsources && k < m->nsources; k++)
        m->sources[k].has_input = 0; /* not one input per source */
    m->has_inputs = i > 0;
    m->input_sequences = next;
    return PREPACK_OK;
}

struct stat_check {
    const char *name;
    uint64_t got, want;
};

// "stats": the figures that follow from the shards' totals and L must
// follow from them; the ones only the rows can prove are kept for verify.
int read_stats(simdjson::dom::object root, const char *path, pp_manifest *m,
               uint64_t input_tokens, prepack_diag *diag)
{
    simdjson::dom::element e;
    if (root["stats"].get(e) || e.is_null()) {
        m->has_stats = 0;
        return PREPACK_OK;
    }
    simdjson::dom::object st, packed;
    uint64_t srows, stokens, bound, prows, slots, pad, seq_tokens;
    pp_manifest_stats *s = &m->stats;
    if (e.get_object().get(st) || st["packed"].get_object().get(packed) ||
        !get_u64(st, "sequences", &s->sequences) ||
        !get_u64(st, "input_tokens", &seq_tokens) ||
        !get_u64(st, "items", &s->items) || !get_u64(st, "tokens", &stokens) ||
        !get_u64(st, "rows", &srows) || !get_u64(st, "lower_bound", &bound) ||
        !get_u64(st, "max_seqs_in_row", &s->max_seqs_in_row) ||
        !get_u64(packed, "rows", &prows) || !get_u64(packed, "slots", &slots) ||
        !get_u64(packed, "pad_tokens", &pad))
        return bad(diag, path,
                   "\"stats\" needs sequences, input_tokens, items, tokens, "
                   "rows, lower_bound, max_seqs_in_row and packed {rows, "
                   "slots, pad_tokens}");
    m->has_stats = 1;
    uint64_t L = m->max_seq_len;
    uint64_t need_slots;
    if (__builtin_mul_overflow(m->rows, L, &need_slots))
        return bad(diag, path, "rows x max_seq_len overflows");
    const stat_check checks[] = {
        {"rows", srows, m->rows},
        {"tokens", stokens, m->tokens},
        {"packed.rows", prows, m->rows},
        {"packed.slots", slots, need_slots},
        {"packed.pad_tokens", pad, need_slots - m->tokens},
        {"sequences", s->sequences,
         m->has_inputs ? m->input_sequences : s->sequences},
        {"input_tokens", seq_tokens, m->has_inputs ? input_tokens : seq_tokens},
    };
    for (const stat_check &c : checks)
        if (c.got != c.want)
            return bad(diag, path,
                       std::string("stats.") + c.name + " is " +
                           std::to_string(c.got) +
                           ", the rest of the manifest makes it " +
                           std::to_string(c.want));
    // the bound is at least the token count's and, being a bound, at most
    // the rows any packing used
    uint64_t least = m->tokens / L + (m->tokens % L != 0);
    if (bound < least || bound > m->rows)
        return bad(diag, path,
                   "stats.lower_bound " + std::to_string(bound) +
                       " is outside " + std::to_string(least) + ".." +
                       std::to_string(m->rows));
    if (s->items < m->rows || s->max_seqs_in_row > s->items ||
        (m->rows && !s->max_seqs_in_row))
        return bad(diag, path, "stats.items and max_seqs_in_row do not fit "
                               "its rows");
    return PREPACK_OK;
}

// How the set was planned: what verify --input needs to tell a sequence
// left out on purpose from one lost.
int read_policy(simdjson::dom::object root, const char *path, pp_manifest *m,
                prepack_diag *diag)
{
    // Both optional (a hand-written manifest may leave them out): absent,
    // every sequence was placed whole, any number to a row.
    std::string_view overlong;
    uint64_t most = 0;
    m->overlong = PREPACK_OVERLONG_ERROR;
    simdjson::dom::element e;
    if (!root["overlong"].get(e) &&
        (e.get_string().get(overlong) ||
         prepack_overlong_parse(std::string(overlong).c_str(), &m->overlong) !=
             PREPACK_OK))
        return bad(diag, path,
                   "overlong must be error, truncate, split or drop");
    if (!root["max_seqs_per_row"].get(e) &&
        (e.get_uint64().get(most) || most > UINT32_MAX))
        return bad(diag, path, "bad max_seqs_per_row");
    m->max_seqs_per_row = uint32_t(most);
    uint64_t pad = 1;
    if (!root["pad_multiple"].get(e) &&
        (e.get_uint64().get(pad) || pad < 2 || pad > m->max_seq_len ||
         m->max_seq_len % pad != 0))
        return bad(diag, path,
                   "pad_multiple must be an integer from 2 that divides "
                   "max_seq_len");
    m->pad_multiple = uint32_t(pad);
    return PREPACK_OK;
}

// 2^20 shards of 16384 rows: far beyond any set, far below memory limits.
constexpr uint64_t kMaxManifestBytes = uint64_t(256) << 20;

// The file opened once (O_NONBLOCK: a FIFO cannot block the open),
// checked through that descriptor and read from it: a path swapped after
// the check cannot choose what is read. A manifest is ~150 bytes a
// shard: refuse what no set would need rather than read a hostile file
// of any size into memory.
int load_fd(int fd, const char *path, simdjson::padded_string *json,
            prepack_diag *diag)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot read %s: %s", path, std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        return bad(diag, path, "not a regular file");
    if (uint64_t(st.st_size) > kMaxManifestBytes)
        return bad(diag, path,
                   "holds " + std::to_string(st.st_size) +
                       " bytes, more than a manifest can (" +
                       std::to_string(kMaxManifestBytes) + ")");
    size_t n = size_t(st.st_size);
    simdjson::padded_string text(n);
    if (!text.data())
        throw std::bad_alloc();
    if (pp_read_at(fd, text.data(), n, 0) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot read %s: %s", path,
                       errno ? std::strerror(errno) : "cut short");
    *json = std::move(text);
    return PREPACK_OK;
}

// Why DIR/manifest.json could not be opened, said of DIR where DIR is
// the cause: missing, not a directory, or a directory with no manifest.
int manifest_open_fail(const char *path, prepack_diag *diag)
{
    int err = errno;
    std::string dir(path);
    size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : dir.substr(0, slash);
    while (dir.size() > 1 && dir.back() == '/') // "set/" + "/manifest.json"
        dir.pop_back();
    struct stat st;
    if (err == ENOENT && stat(dir.c_str(), &st) != 0 && errno == ENOENT)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: no such directory", dir.c_str());
    if (err == ENOTDIR)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s is not a directory (a shard set is a directory "
                       "holding manifest.json)",
                       dir.c_str());
    if (err == ENOENT)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s is not a shard set (no manifest.json; or its "
                       "writing was interrupted)",
                       dir.c_str());
    return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "cannot read %s: %s",
                   path, std::strerror(err));
}

int load_manifest(const char *path, simdjson::padded_string *json,
                  prepack_diag *diag)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return manifest_open_fail(path, diag);
    int rc;
    try {
        errno = 0;
        rc = load_fd(fd, path, json, diag);
    } catch (...) {
        close(fd);
        throw;
    }
    close(fd);
    return rc;
}

// A key as one line of a message: bytes outside printable ASCII as '?'.
std::string printable(std::string_view key)
{
    std::string out(key.substr(0, 64));
    for (char &c : out)
        if (c < 0x20 || c > 0x7e)
            c = '?';
    return out;
}

struct key_place {
    uint64_t hash;
    size_t place; // the key's index in its object
};

// The keys of o by hash, then place: integers sorted, 16 bytes a key in
// one allocation (a hash set took a node per key: a 246 MiB manifest of
// one object of 23M keys went from 1.4 to 2.7 GB and 1.5 to 25 s).
std::vector<key_place> keys_by_hash(simdjson::dom::object o,
                                    std::vector<std::string_view> &names)
{
    std::vector<key_place> keys;
    keys.reserve(o.size());
    names.reserve(o.size());
    for (auto field : o) {
        keys.push_back({std::hash<std::string_view>{}(field.key),
                        names.size()});
        names.push_back(field.key);
    }
    std::sort(keys.begin(), keys.end(), [](key_place a, key_place b) {
        return a.hash != b.hash ? a.hash < b.hash : a.place < b.place;
    });
    return keys;
}

// The earliest second use of a key among keys[lo, hi) (one hash, in
// place order; colliding names told apart), or SIZE_MAX.
size_t second_use(const std::vector<key_place> &keys,
                  const std::vector<std::string_view> &names, size_t lo,
                  size_t hi)
{
    std::vector<key_place> run(keys.begin() + long(lo),
                               keys.begin() + long(hi));
    std::stable_sort(run.begin(), run.end(), [&](key_place a, key_place b) {
        return names[a.place] < names[b.place];
    }); // a crafted collision costs a sort, never a quadratic scan
    size_t best = SIZE_MAX;
    for (size_t i = 1; i < run.size(); i++)
        if (names[run[i].place] == names[run[i - 1].place] &&
            (i < 2 || names[run[i - 2].place] != names[run[i].place]))
            best = std::min(best, run[i].place);
    return best;
}

// The key of o given twice whose second use comes first, as Python's
// json meets it, or "".
std::string repeated_key(simdjson::dom::object o)
{
    std::vector<std::string_view> names;
    std::vector<key_place> keys = keys_by_hash(o, names);
    size_t best = SIZE_MAX;
    for (size_t lo = 0, hi; lo < keys.size(); lo = hi) {
        for (hi = lo + 1; hi < keys.size() && keys[hi].hash == keys[lo].hash;)
            hi++;
        if (hi - lo > 1)
            best = std::min(best, second_use(keys, names, lo, hi));
    }
    return best == SIZE_MAX ? "" : printable(names[best]);
}

// A key given twice in any object, or "" when none is. JSON leaves
// duplicates to the reader; simdjson's lookup takes the first and Python's
// json the last, so the two readers would check different manifests: both
// refuse them instead. The walk's depth is bounded by the parser's
// (PP_MANIFEST_MAX_DEPTH).
std::string duplicate_key(simdjson::dom::element e)
{
    simdjson::dom::object o;
    simdjson::dom::array arr;
    if (!e.get_object().get(o)) {
        std::string twice = repeated_key(o); // freed before going deeper
        if (!twice.empty())
            return twice;
        for (auto field : o) {
            std::string inner = duplicate_key(field.value);
            if (!inner.empty())
                return inner;
        }
    } else if (!e.get_array().get(arr)) {
        for (simdjson::dom::element v : arr) {
            std::string inner = duplicate_key(v);
            if (!inner.empty())
                return inner;
        }
    }
    return "";
}

int read_manifest(const char *path, pp_manifest *m, prepack_diag *diag)
{
    simdjson::padded_string json;
    int rc = load_manifest(path, &json, diag);
    if (rc != PREPACK_OK)
        return rc;
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    simdjson::dom::object root;
    auto err = parser.allocate(json.size(), PP_MANIFEST_MAX_DEPTH);
    if (!err)
        err = parser.parse(json).get(doc);
    if (!err)
        err = doc.get_object().get(root);
    if (err)
        return bad(diag, path,
                   std::string("invalid JSON: ") +
                       simdjson::error_message(err));
    std::string twice = duplicate_key(doc);
    if (!twice.empty())
        return bad(diag, path,
                   "invalid JSON: key \"" + twice + "\" given twice");
    std::string_view format, dtype;
    uint64_t version = 0, L = 0, rpf = 0;
    if (root["format"].get_string().get(format) || format != "prepack-shards")
        return bad(diag, path, "not a prepack shard set manifest");
    if (!get_u64(root, "version", &version) || version < 1 || version > 4)
        return bad(diag, path,
                   "unknown manifest version (this reader knows 1 to 4)");
    if (!get_u64(root, "max_seq_len", &L) || L == 0 ||
        L > PREPACK_MAX_SEQ_LEN_LIMIT)
        return bad(diag, path, "bad max_seq_len");
    if (!get_u64(root, "rows_per_frame", &rpf) || rpf == 0 || rpf > UINT32_MAX)
        return bad(diag, path, "bad rows_per_frame");
    if (root["token_dtype"].get_string().get(dtype) ||
        (dtype != "uint16" && dtype != "uint32"))
        return bad(diag, path, "token_dtype must be uint16 or uint32");
    m->max_seq_len = uint32_t(L);
    m->version = uint32_t(version);
    m->rows_per_frame = uint32_t(rpf);
    m->dtype = dtype == "uint16" ? PREPACK_DTYPE_UINT16 : PREPACK_DTYPE_UINT32;
    uint64_t input_tokens = 0;
    rc = read_policy(root, path, m, diag);
    if (rc == PREPACK_OK)
        rc = read_storage(root, path, version, m, diag);
    if (rc == PREPACK_OK)
        rc = read_shards(root, path, m, diag);
    if (rc == PREPACK_OK)
        rc = read_inputs(root, path, m, &input_tokens, diag);
    if (rc == PREPACK_OK)
        rc = read_stats(root, path, m, input_tokens, diag);
    // A set with no rows is one packed from nothing to place, and says so.
    if (rc == PREPACK_OK && m->nshards == 0 &&
        !(m->has_stats ? m->stats.items == 0
                       : m->has_inputs && m->input_sequences == 0))
        rc = bad(diag, path,
                 "lists no shards, yet does not say it was packed from "
                 "nothing (stats.items 0, or inputs of no sequences): a "
                 "truncated or edited manifest?");
    return rc;
}

} // namespace

extern "C" int pp_manifest_read(const char *path, const prepack_allocator *a,
                                pp_manifest *m, prepack_diag *diag)
{
    std::memset(m, 0, sizeof *m);
    m->alloc = a;
    try {
        int rc = read_manifest(path, m, diag);
        if (rc != PREPACK_OK)
            pp_manifest_free(m);
        return rc;
    } catch (const std::bad_alloc &) {
        pp_manifest_free(m);
        return pp_out_of_memory(diag);
    }
}

extern "C" void pp_manifest_free(pp_manifest *m)
{
    pp_free(m->alloc, m->shards);
    m->shards = nullptr;
    m->nshards = 0;
    pp_sources_free(m->alloc, m->sources, m->nsources);
    m->sources = nullptr;
    m->nsources = 0;
}
