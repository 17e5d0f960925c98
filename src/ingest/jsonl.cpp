// JSON lines: one object per line with an integer array of token ids and
// optionally a loss_mask (0/1) or Hugging Face labels (-100 = not trained).
//
// The one C++ file of the library, behind a C function: simdjson's DOM
// parse_many validates every byte of every document (On Demand validates
// only what is read, and a corrupt unused field must still be an error)
// and reads JSON lines at hundreds of MB/s. See docs/DESIGN.md.
//
// Traps of simdjson 3.0.1 handled here: a document longer than the batch
// size fails, so the batch size follows the longest line of each chunk;
// the buffer needs SIMDJSON_PADDING readable bytes past its end, so chunks
// are copied into a padded buffer, never parsed from a mapping; and a
// document cut short shows only in truncated_bytes(), so chunks end at a
// newline, the remainder is carried over, and a remainder at the end of
// the file is an error.
#include <simdjson.h>

#include "common/json_count.h"

#include <algorithm>
#include <condition_variable>
#include <cstdarg>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern "C" {
#include "common/error.h"
#include "ingest/jsonl_simple.h"
#include "ingest/readers.h"
#include "ingest/source.h"
#include "ingest/store.h"
}

namespace
{

constexpr size_t kFirstChunk = size_t(16) << 20;
constexpr size_t kMaxChunk = size_t(1) << 30;
constexpr size_t kMinBatch = size_t(1) << 20;
constexpr size_t kSmallChunk = size_t(64) << 10;

size_t count_newlines(const unsigned char *p, size_t n);
size_t longest_line(const unsigned char *p, size_t n, size_t *newlines);

const char *type_name(simdjson::dom::element_type t)
{
    using T = simdjson::dom::element_type;
    switch (t) {
    case T::ARRAY:
        return "an array";
    case T::OBJECT:
        return "an object";
    case T::STRING:
        return "a string";
    case T::BOOL:
        return "a boolean";
    case T::NULL_VALUE:
        return "null";
    default:
        return "a number";
    }
}

// What parsing a chunk of whole lines makes: every document's tokens, loss
// mask and group, in order, up to the first error (kept with the byte it
// is at: its line is counted by whoever knows where the chunk starts).
struct Parsed {
    struct Doc {
        uint32_t len;
        bool has_mask, has_group;
        uint32_t group_len;
    };
    std::vector<uint32_t> tokens;
    std::vector<uint8_t> masks; // of the documents that have one
    std::vector<Doc> docs;
    std::string groups; // the documents' group values, concatenated
    int err = PREPACK_OK;
    size_t err_at = 0;
    std::string err_msg;
    size_t consumed = 0; // bytes of complete documents
    size_t newlines = 0; // in the whole chunk

    void clear()
    {
        tokens.clear();
        masks.clear();
        docs.clear();
        groups.clear();
        err = PREPACK_OK;
        err_at = consumed = newlines = 0;
        err_msg.clear();
    }
};

// Parses chunks: simdjson's DOM parse_many over the chunk, every field
// checked. One per thread (a simdjson parser is not shared).
struct ChunkParser {
    std::string field;
    simdjson::dom::parser parser;
    const unsigned char *buf = nullptr; // what simdjson parses, padded
    size_t origin = 0;                  // where buf starts in the chunk
    size_t doc_len = 0;                 // bytes of the document being taken
    Parsed *out = nullptr;
    // the simple path's buffers: ids, mask, labels of one line
    std::vector<uint32_t> simple_ids, scratch;
    std::vector<uint8_t> simple_mask;

    explicit ChunkParser(const std::string &f) : field(f) {}
    void parse(const unsigned char *chunk, size_t end, Parsed *p);
    size_t simple_prefix(const unsigned char *chunk, size_t end,
                         size_t *lines);
    int err(int code, size_t at, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 4, 5)))
#endif
        ;
    int take_document(simdjson::dom::element doc, size_t at);
    int read_ids(simdjson::dom::array ids, size_t at);
    int bad_id(simdjson::dom::element v, size_t i, size_t at);
    std::string id_text(size_t i, size_t at);
    int read_mask(simdjson::dom::array arr, bool labels, size_t at,
                  const uint32_t *ids, size_t n);
};

int ChunkParser::err(int code, size_t at, const char *fmt, ...)
{
    char msg[sizeof(prepack_diag::message)];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    out->err = code;
    out->err_at = origin + at;
    out->err_msg = msg;
    return code;
}

// Element i of the ids as the line writes it (2.0, 1e3, -0), found again
// with simdjson's On Demand parser, which keeps each value's raw text: the
// DOM keeps only the number. The slow path of an error message.
std::string ChunkParser::id_text(size_t i, size_t at)
{
    simdjson::padded_string doc(reinterpret_cast<const char *>(buf) + at,
                                doc_len);
    simdjson::ondemand::parser od;
    simdjson::ondemand::document d;
    simdjson::ondemand::array ids;
    if (od.iterate(doc).get(d) || d[field].get_array().get(ids))
        return "?";
    size_t j = 0;
    for (auto v : ids) {
        std::string_view raw;
        if (j++ != i)
            continue;
        if (v.raw_json_token().get(raw))
            return "?";
        while (!raw.empty() && std::strchr(" \t\r\n", raw.back()))
            raw.remove_suffix(1);
        return std::string(raw.substr(0, 64));
    }
    return "?";
}

// Why element i of the ids is not a token id (the slow path). Numbers are
// quoted as written: "2.0", not the 2 they parse to.
int ChunkParser::bad_id(simdjson::dom::element v, size_t i, size_t at)
{
    using T = simdjson::dom::element_type;
    const char *f = field.c_str();
    T t = v.type();
    if (t == T::INT64 && int64_t(v) < 0)
        return err(PREPACK_EFORMAT, at,
                   "%s[%zu] is %s: token ids must be non-negative", f, i,
                   id_text(i, at).c_str());
    if (t == T::INT64 || t == T::UINT64)
        return err(PREPACK_ERANGE, at,
                   "%s[%zu] is %s: token ids must be at most 4294967295", f, i,
                   id_text(i, at).c_str());
    if (t == T::DOUBLE)
        return err(PREPACK_EFORMAT, at, "%s[%zu] is %s, not an integer", f, i,
                   id_text(i, at).c_str());
    return err(PREPACK_EFORMAT, at, "%s[%zu] is %s, not an integer", f, i,
               type_name(t));
}

// Appends the ids to out->tokens.
int ChunkParser::read_ids(simdjson::dom::array ids, size_t at)
{
    size_t base = out->tokens.size();
    out->tokens.resize(base + pp_json_array_count(ids));
    uint32_t *t = out->tokens.data() + base;
    size_t i = 0;
    for (simdjson::dom::element v : ids) {
        int64_t x;
        if (v.get_int64().get(x) != simdjson::SUCCESS || x < 0 ||
            x > int64_t(UINT32_MAX))
            return bad_id(v, i, at);
        t[i++] = uint32_t(x);
    }
    out->tokens.resize(base + i);
    return PREPACK_OK;
}

// loss_mask: 0/1 per token. labels (Hugging Face): the token itself, or
// -100 for a token that is not trained. Appends to out->masks.
int ChunkParser::read_mask(simdjson::dom::array arr, bool labels, size_t at,
                           const uint32_t *ids, size_t n_ids)
{
    using T = simdjson::dom::element_type;
    const char *name = labels ? "labels" : "loss_mask";
    const std::string &f = field;
    size_t n = pp_json_array_count(arr);
    if (n != n_ids)
        return err(PREPACK_EFORMAT, at, "%s has %zu values, %s %zu", name, n,
                   f.c_str(), n_ids);
    size_t i = 0;
    for (simdjson::dom::element v : arr) {
        if (v.type() != T::INT64)
            return err(PREPACK_EFORMAT, at, "%s[%zu] is %s, not %s", name, i,
                       type_name(v.type()),
                       labels ? "a token id or -100" : "0 or 1");
        int64_t x = int64_t(v);
        if (!labels && x != 0 && x != 1)
            return err(PREPACK_EFORMAT, at, "%s[%zu] is %lld: must be 0 or 1",
                       name, i, (long long)x);
        if (labels && x != -100 && x != int64_t(ids[i]))
            return err(PREPACK_EFORMAT, at,
                       "labels[%zu] is %lld but %s[%zu] is %u (labels "
                       "must be the token or -100)",
                       i, (long long)x, f.c_str(), i, ids[i]);
        out->masks.push_back(labels ? uint8_t(x != -100) : uint8_t(x));
        i++;
    }
    return PREPACK_OK;
}

// What a key says of a record that has text where tokens were expected
// (docs/TEXT.md's shapes, ShareGPT's "conversations" among them): what
// the message calls it, or null for any other key.
const char *text_record_kind(std::string_view key)
{
    if (key == "messages" || key == "conversations")
        return "conversations";
    if (key == "text" || key == "prompt" || key == "completion")
        return "text";
    return nullptr;
}

int ChunkParser::take_document(simdjson::dom::element doc, size_t at)
{
    const std::string &f = field;
    simdjson::dom::object obj;
    if (doc.get_object().get(obj))
        return err(PREPACK_EFORMAT, at, "expected a JSON object, got %s",
                   type_name(doc.type()));
    simdjson::dom::array ids, mask_arr, labels_arr;
    bool has_ids = false, has_mask = false, has_labels = false;
    bool has_group = false;
    const char *text_kind = nullptr; // a record of text, not of tokens
    size_t group_at = out->groups.size();
    for (simdjson::dom::key_value_pair kv : obj) {
        if (!text_kind)
            text_kind = text_record_kind(kv.key);
        if (kv.key == "group") {
            if (has_group)
                return err(PREPACK_EFORMAT, at,
                           "field \"group\" appears twice");
            has_group = true;
            int64_t i;
            uint64_t u;
            std::string_view text;
            if (!kv.value.get_int64().get(i))
                out->groups += "i" + std::to_string(i);
            else if (!kv.value.get_uint64().get(u))
                out->groups += "i" + std::to_string(u);
            else if (!kv.value.get_string().get(text))
                out->groups.append("s").append(text);
            else
                return err(PREPACK_EFORMAT, at,
                           "\"group\" is %s: an integer or a string",
                           type_name(kv.value.type()));
            continue;
        }
        bool is_ids = kv.key == field, is_mask = kv.key == "loss_mask",
             is_labels = kv.key == "labels";
        if (!is_ids && !is_mask && !is_labels)
            continue;
        bool &seen = is_ids ? has_ids : is_mask ? has_mask : has_labels;
        const char *name = is_ids    ? f.c_str()
                           : is_mask ? "loss_mask"
                                     : "labels";
        if (seen)
            return err(PREPACK_EFORMAT, at, "field \"%s\" appears twice",
                       name);
        seen = true;
        simdjson::dom::array &dst = is_ids    ? ids
                                    : is_mask ? mask_arr
                                              : labels_arr;
        if (kv.value.get_array().get(dst))
            return err(PREPACK_EFORMAT, at, "\"%s\" is %s, not an array", name,
                       type_name(kv.value.type()));
    }
    if (!has_ids && text_kind)
        return err(PREPACK_EFORMAT, at,
                   "no \"%s\" field; it looks like %s to tokenize: "
                   "python -m prepack pack FILE --tokenizer PATH "
                   "(docs/TEXT.md)",
                   f.c_str(), text_kind);
    if (!has_ids)
        return err(PREPACK_EFORMAT, at, "no \"%s\" field", f.c_str());
    if (has_mask && has_labels)
        return err(PREPACK_EFORMAT, at,
                   "both \"loss_mask\" and \"labels\": give one");
    size_t first = out->tokens.size();
    int rc = read_ids(ids, at);
    size_t n = out->tokens.size() - first;
    if (rc == PREPACK_OK && (has_mask || has_labels))
        rc = read_mask(has_mask ? mask_arr : labels_arr, has_labels, at,
                       out->tokens.data() + first, n);
    if (rc != PREPACK_OK)
        return rc;
    if (n > UINT32_MAX)
        return err(PREPACK_ERANGE, at, "more than %u token ids", UINT32_MAX);
    out->docs.push_back({uint32_t(n), has_mask || has_labels, has_group,
                         uint32_t(out->groups.size() - group_at)});
    return PREPACK_OK;
}

bool blank_line(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

// The chunk's first lines, for as long as they have the simple shape
// (jsonl_simple.h), parsed by hand and added to out; blank lines skipped.
// Returns where the first other line starts (end: none), which simdjson
// then reads: a line the simple path declines may still be valid; *lines:
// the lines taken (each ends with a newline).
size_t ChunkParser::simple_prefix(const unsigned char *chunk, size_t end,
                                  size_t *lines)
{
    size_t at = 0;
    *lines = 0;
    while (at < end) {
        const unsigned char *line = chunk + at;
        auto nl = static_cast<const unsigned char *>(
            std::memchr(line, '\n', end - at));
        if (!nl) // the file's last line, without its newline
            return at;
        size_t len = size_t(nl - line);
        if (!blank_line(line, len)) {
            // a value and its separator take 2 bytes at least; the
            // buffers only grow, so they are not cleared line by line
            size_t cap = len / 2 + 1;
            if (simple_ids.size() < cap) {
                simple_ids.resize(cap);
                simple_mask.resize(cap);
                scratch.resize(cap);
            }
            pp_simple_line sl = {simple_ids.data(), simple_mask.data(),
                                 scratch.data(), cap, 0, 0, 0, nullptr, 0};
            if (!pp_jsonl_simple_line(line, len, field.data(), field.size(),
                                      &sl))
                return at;
            out->tokens.insert(out->tokens.end(), sl.ids, sl.ids + sl.n);
            if (sl.has_mask)
                out->masks.insert(out->masks.end(), sl.mask, sl.mask + sl.n);
            size_t group_len = 0;
            if (sl.group_kind) { // as take_document writes it
                out->groups.push_back(sl.group_kind);
                out->groups.append(reinterpret_cast<const char *>(sl.group),
                                   sl.group_len);
                group_len = sl.group_len + 1;
            }
            out->docs.push_back({uint32_t(sl.n), sl.has_mask != 0,
                                 sl.group_kind != 0, uint32_t(group_len)});
        }
        at += len + 1;
        ++*lines;
    }
    return at;
}

// Parses chunk[0, end) into *p: p->consumed = bytes of complete documents
// (a document cut by the chunk's end is left for the next one). Simple
// lines first, by hand; from the first other line on, simdjson.
void ChunkParser::parse(const unsigned char *chunk, size_t end, Parsed *p)
{
    out = p;
    p->clear();
    size_t simple_lines = 0, rest_lines = 0;
    origin = simple_prefix(chunk, end, &simple_lines);
    p->newlines = simple_lines;
    if (origin == end) {
        p->consumed = end;
        return;
    }
    buf = chunk + origin; // a line start; padded as the chunk is
    size_t n = end - origin;
    // the batch must hold simdjson's longest document: its longest line
    size_t longest = longest_line(buf, n, &rest_lines);
    p->newlines += rest_lines;
    size_t batch = std::max(std::min(kMinBatch, n), longest + 1);
    simdjson::dom::document_stream stream;
    auto e = parser.parse_many(buf, n, batch).get(stream);
    if (e) {
        err(PREPACK_EFORMAT, 0, "invalid JSON: %s", simdjson::error_message(e));
        return;
    }
    bool first = true;    // no document yet in this stream
    size_t prev_end = 0;  // where the previous document ended
    for (auto it = stream.begin(); it != stream.end(); ++it) {
        size_t at = it.current_index();
        simdjson::dom::element doc;
        if ((e = (*it).get(doc))) {
            err(PREPACK_EFORMAT, at, "invalid JSON: %s",
                simdjson::error_message(e));
            return;
        }
        // parse_many takes any whitespace between documents; JSON lines
        // wants a newline: two objects on one line are one bad record.
        if (!first && !memchr(buf + prev_end, '\n', at - prev_end)) {
            err(PREPACK_EFORMAT, at,
                "a second JSON value on the line (JSON lines holds one "
                "object per line)");
            return;
        }
        first = false;
        prev_end = at + it.source().size();
        doc_len = it.source().size();
        if (take_document(doc, at) != PREPACK_OK)
            return;
    }
    p->consumed = end - stream.truncated_bytes();
}

// A chunk of whole lines on its way through the parsing threads.
struct Chunk {
    std::vector<unsigned char> bytes; // len + SIMDJSON_PADDING
    size_t len = 0;
    Parsed parsed;
    bool done = false;
};

// Threads that parse chunks, each with its own parser, results kept with
// their chunk; the reading thread waits for them in order.
class ParsePool
{
  public:
    ParsePool(int threads, const std::string &field)
    {
        for (int i = 0; i < threads; i++)
            workers_.emplace_back([this, field] { work(field); });
    }
    ~ParsePool()
    {
        {
            std::lock_guard<std::mutex> g(m_);
            stop_ = true;
        }
        queue_cv_.notify_all();
        for (auto &t : workers_)
            t.join();
    }
    void submit(Chunk *c)
    {
        {
            std::lock_guard<std::mutex> g(m_);
            c->done = false;
            queue_.push_back(c);
        }
        queue_cv_.notify_one();
    }
    void wait(Chunk *c)
    {
        std::unique_lock<std::mutex> g(m_);
        done_cv_.wait(g, [c] { return c->done; });
    }

  private:
    void work(std::string field)
    {
        ChunkParser parser(field);
        for (;;) {
            Chunk *c;
            {
                std::unique_lock<std::mutex> g(m_);
                queue_cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
                if (queue_.empty())
                    return;
                c = queue_.front();
                queue_.pop_front();
            }
            try {
                parser.parse(c->bytes.data(), c->len, &c->parsed);
            } catch (const std::bad_alloc &) {
                c->parsed.err = PREPACK_ENOMEM;
                c->parsed.err_at = 0;
                c->parsed.err_msg = "out of memory";
            }
            {
                std::lock_guard<std::mutex> g(m_);
                c->done = true;
            }
            done_cv_.notify_all();
        }
    }
    std::mutex m_;
    std::condition_variable queue_cv_, done_cv_;
    std::deque<Chunk *> queue_;
    bool stop_ = false;
    std::vector<std::thread> workers_;
};

// Reads an input (or a part of a plain one) as chunks of whole lines,
// parses them (on worker threads when asked) and adds what they hold to
// the store in input order, so the store and every message are the same
// whatever the threads.
struct JsonlReader {
    prepack_store *store;
    const char *path;
    std::string field;
    prepack_diag *diag;
    pp_source *src = nullptr;
    const prepack_ingest_options *opts;
    size_t cap = 0;           // the chunk size (grows for a longer line)
    bool eof = false;
    std::vector<unsigned char> rest; // read past the last chunk's newline
    uint64_t line = 1;        // line number of the next chunk's first byte
    uint64_t range_begin = 0; // a part of the file: its first byte
    // the previous record's "group" value (a group: consecutive records
    // with one value), or none
    std::string prev_group;
    bool prev_has_group = false;
    // the first record's group, for a scan task's part (pp_input_part)
    std::string first_group;
    bool first_has_group = false, seen_record = false;

    JsonlReader(prepack_store *s, const char *p,
                const prepack_ingest_options *o, prepack_diag *d)
        : store(s), path(p), field(o->field ? o->field : "input_ids"), diag(d),
          opts(o)
    {
    }
    JsonlReader(const JsonlReader &) = delete;
    JsonlReader &operator=(const JsonlReader &) = delete;
    ~JsonlReader()
    {
        pp_source_close(src);
    }
    uint64_t lines_before_range() const;
    int fail(int code, uint64_t at_line, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 4, 5)))
#endif
        ;
    int run();
    int next_chunk(Chunk *c);
    int apply(const Parsed &p, const unsigned char *bytes);
    int check_bom(const Chunk &c);
};

// The newlines before a part's first byte: counted only for an error
// message, so a scan task reading the end of a large file does not read
// the rest of it. 0 when it cannot be counted (the message then names
// the line within the part).
uint64_t JsonlReader::lines_before_range() const
{
    if (range_begin == 0)
        return 0;
    FILE *f = std::fopen(path, "rb");
    if (!f)
        return 0;
    std::vector<unsigned char> chunk(size_t(1) << 20);
    uint64_t left = range_begin, count = 0;
    while (left > 0) {
        size_t want = size_t(std::min<uint64_t>(left, chunk.size()));
        size_t got = std::fread(chunk.data(), 1, want, f);
        if (got == 0)
            break;
        count += count_newlines(chunk.data(), got);
        left -= got;
    }
    std::fclose(f);
    return count;
}

int JsonlReader::fail(int code, uint64_t at_line, const char *fmt, ...)
{
    at_line += lines_before_range();
    char where[sizeof diag->message];
    snprintf(where, sizeof where, "%s:%llu", path, (unsigned long long)at_line);
    va_list ap;
    va_start(ap, fmt);
    pp_vfail(diag, code, at_line, where, fmt, ap);
    va_end(ap);
    return code;
}

size_t count_newlines(const unsigned char *p, size_t n)
{
    size_t count = 0;
    for (const unsigned char *end = p + n;;) {
        const void *nl = std::memchr(p, '\n', size_t(end - p));
        if (!nl)
            return count;
        count++;
        p = static_cast<const unsigned char *>(nl) + 1;
    }
}

// The longest line in [p, p + n), newline included, and the newlines.
size_t longest_line(const unsigned char *p, size_t n, size_t *newlines)
{
    size_t longest = 0;
    *newlines = 0;
    for (const unsigned char *end = p + n; p < end;) {
        const void *nl = std::memchr(p, '\n', size_t(end - p));
        const unsigned char *stop =
            nl ? static_cast<const unsigned char *>(nl) + 1 : end;
        longest = std::max(longest, size_t(stop - p));
        *newlines += nl != nullptr;
        p = stop;
    }
    return longest;
}

// The next chunk: what was left after the last one's final newline, then
// the input up to `cap` bytes, cut after its last newline (the rest waits
// for the next chunk; at the end of the input, all of it). A full buffer
// without a newline grows the chunk size. c->len 0: the input is done.
int JsonlReader::next_chunk(Chunk *c)
{
    c->bytes.resize(std::max(cap, rest.size()) + simdjson::SIMDJSON_PADDING);
    if (!rest.empty())
        std::memcpy(c->bytes.data(), rest.data(), rest.size());
    size_t len = rest.size();
    rest.clear();
    for (;;) {
        while (!eof && len < cap) {
            size_t got = 0;
            int rc = pp_source_read(src, c->bytes.data() + len, cap - len,
                                    &got, diag);
            if (rc != PREPACK_OK)
                return rc;
            eof = got == 0;
            len += got;
        }
        if (opts->progress)
            opts->progress(opts->progress_opaque, "ingest",
                           pp_source_done(src), pp_source_size(src));
        size_t end = len;
        if (!eof)
            while (end > 0 && c->bytes[end - 1] != '\n')
                end--;
        if (end > 0 || eof) {
            rest.assign(c->bytes.begin() + ptrdiff_t(end),
                        c->bytes.begin() + ptrdiff_t(len));
            c->len = end;
            return PREPACK_OK;
        }
        if (cap >= kMaxChunk) // a full buffer and no newline in it
            return fail(PREPACK_ERANGE, line, "a line longer than %zu bytes",
                        kMaxChunk);
        cap *= 2;
        c->bytes.resize(cap + simdjson::SIMDJSON_PADDING);
    }
}

int JsonlReader::check_bom(const Chunk &c)
{
    const unsigned char *b = c.bytes.data();
    if (range_begin == 0 && c.len >= 3 && b[0] == 0xEF && b[1] == 0xBB &&
        b[2] == 0xBF)
        return fail(PREPACK_EFORMAT, 1,
                    "starts with a UTF-8 byte order mark (BOM), which "
                    "JSON lines does not allow: save the file without "
                    "it (e.g. sed -i '1s/^\\xEF\\xBB\\xBF//')");
    return PREPACK_OK;
}

// Adds a parsed chunk's documents to the store, in order, then reports its
// error (at the line its byte falls on), if any: a store error of an
// earlier document comes first, as it would line by line.
int JsonlReader::apply(const Parsed &p, const unsigned char *bytes)
{
    const uint32_t *t = p.tokens.data();
    const uint8_t *m = p.masks.data();
    const char *g = p.groups.data();
    for (const Parsed::Doc &d : p.docs) {
        int rc = prepack_store_add(store, t, d.len, d.has_mask ? m : nullptr,
                                   diag);
        if (rc == PREPACK_OK)
            rc = pp_store_end_sequence(store, 1, diag);
        std::string_view group(g, d.group_len);
        if (rc == PREPACK_OK && d.has_group && prev_has_group &&
            group == prev_group) {
            uint64_t id = prepack_store_sequence_count(store) - 1;
            rc = prepack_store_join_sequences(store, &id, 1, diag);
        }
        if (rc != PREPACK_OK)
            return rc;
        if (!seen_record) {
            seen_record = true;
            first_has_group = d.has_group;
            first_group.assign(group);
        }
        prev_has_group = d.has_group;
        if (d.has_group)
            prev_group.assign(group);
        t += d.len;
        m += d.has_mask ? d.len : 0;
        g += d.group_len;
    }
    if (p.err != PREPACK_OK)
        return fail(p.err, line + count_newlines(bytes, p.err_at), "%s",
                    p.err_msg.c_str());
    return PREPACK_OK;
}

int JsonlReader::run()
{
    // A small file gets a buffer its size (it grows when a line needs it):
    // no 16 MiB buffer, and no parser capacity to match, for a few lines.
    cap = std::min<uint64_t>(
        kFirstChunk, std::max<uint64_t>(kSmallChunk, pp_source_size(src) + 1));
    int threads = opts->threads > 1 ? opts->threads : 0;
    ChunkParser here(field); // the reading thread's own: no threads, or a
                             // document that spans two chunks
    // Chunks in flight, oldest first: the threads parse while this thread
    // reads the next and adds the oldest to the store.
    std::deque<std::unique_ptr<Chunk>> flight;
    size_t most = threads ? size_t(threads) + 1 : 1;
    std::vector<unsigned char> carry; // a document cut by a chunk's end
    // chunks done with, kept with their buffers: a fresh 16 MiB buffer a
    // chunk costs page faults and zero-filling (7% of a 2-thread run)
    std::vector<std::unique_ptr<Chunk>> spare;
    // Declared after the chunks, so destroyed (its threads joined, every
    // submitted chunk parsed) before them, even when an exception leaves.
    std::unique_ptr<ParsePool> pool;
    if (threads)
        pool.reset(new ParsePool(threads, field));
    bool first = true;
    int rc = PREPACK_OK;
    while (rc == PREPACK_OK) {
        while (rc == PREPACK_OK && flight.size() < most && !(eof && rest.empty())) {
            std::unique_ptr<Chunk> c;
            if (spare.empty()) {
                c.reset(new Chunk);
            } else {
                c = std::move(spare.back());
                spare.pop_back();
            }
            rc = next_chunk(c.get());
            if (rc == PREPACK_OK && first)
                rc = check_bom(*c);
            first = false;
            if (rc != PREPACK_OK || (c->len == 0 && eof))
                break;
            Chunk *raw = c.get();
            flight.push_back(std::move(c)); /* owned before a thread sees it */
            if (pool)
                pool->submit(raw);
        }
        if (rc != PREPACK_OK || flight.empty())
            break;
        std::unique_ptr<Chunk> c = std::move(flight.front());
        flight.pop_front();
        if (pool)
            pool->wait(c.get());
        if (!carry.empty()) { // parse the cut document with this chunk
            carry.insert(carry.end(), c->bytes.begin(),
                         c->bytes.begin() + ptrdiff_t(c->len));
            c->len = carry.size();
            c->bytes.swap(carry);
            c->bytes.resize(c->len + simdjson::SIMDJSON_PADDING);
            carry.clear();
            here.parse(c->bytes.data(), c->len, &c->parsed);
        } else if (!pool) {
            here.parse(c->bytes.data(), c->len, &c->parsed);
        }
        rc = apply(c->parsed, c->bytes.data());
        size_t done = c->parsed.consumed;
        if (rc == PREPACK_OK && done < c->len)
            carry.assign(c->bytes.begin() + ptrdiff_t(done),
                         c->bytes.begin() + ptrdiff_t(c->len));
        line += done == c->len ? c->parsed.newlines
                               : count_newlines(c->bytes.data(), done);
        spare.push_back(std::move(c));
    }
    if (rc == PREPACK_OK && !carry.empty())
        rc = fail(PREPACK_EFORMAT, line,
                  "JSON cut short: the last document is not closed");
    while (pool && !flight.empty()) { // an error: let the threads finish
        pool->wait(flight.front().get());
        flight.pop_front();
    }
    return rc;
}

// The first line start at or after byte `at` of a plain file of `size`
// bytes: `at` itself when it is 0 or follows a newline. Scan tasks split a
// file at these points, so each line belongs to the one part it starts
// in. Sets *ok = false on a read error.
uint64_t line_start_at(std::FILE *f, uint64_t at, uint64_t size, bool *ok)
{
    if (at == 0 || at >= size)
        return std::min(at, size);
    unsigned char chunk[1 << 16];
    for (uint64_t pos = at - 1; pos < size;) {
        if (std::fseek(f, long(pos), SEEK_SET) != 0) {
            *ok = false;
            return size;
        }
        size_t got = std::fread(chunk, 1, sizeof chunk, f);
        if (got == 0) {
            *ok = false;
            return size;
        }
        const void *nl = std::memchr(chunk, '\n', got);
        if (nl)
            return pos + uint64_t(static_cast<const unsigned char *>(nl) -
                                  chunk) +
                   1;
        pos += got;
    }
    return size;
}

} // namespace

// A copy of a group value for a part's record (NULL when none).
static char *copy_group(bool has, const std::string &g, size_t *len)
{
    *len = g.size();
    if (!has)
        return nullptr;
    char *p = static_cast<char *>(std::malloc(g.size() + 1));
    if (p)
        std::memcpy(p, g.data(), g.size() + 1);
    return p;
}

extern "C" int pp_ingest_jsonl_part(prepack_store *s, const char *path,
                                    const prepack_ingest_options *o,
                                    uint64_t begin, uint64_t end,
                                    pp_input_part *part, prepack_diag *diag)
{
    try {
        JsonlReader r(s, path, o, diag);
        int rc = pp_source_open(&r.src, path, pp_store_allocator(s), diag);
        if (rc != PREPACK_OK)
            return rc;
        if (!pp_source_is_plain(r.src))
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "%s: a compressed file is read whole, not in "
                           "parts",
                           path);
        uint64_t size = pp_source_size(r.src);
        std::FILE *f = std::fopen(path, "rb");
        bool ok = f != nullptr;
        uint64_t p0 = ok ? line_start_at(f, begin, size, &ok) : 0;
        uint64_t p1 = ok ? line_start_at(f, end, size, &ok) : 0;
        if (f)
            std::fclose(f);
        if (!ok)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "%s: reading it to find line starts failed", path);
        r.range_begin = p0;
        rc = pp_source_limit(r.src, p0, p1, diag);
        if (rc == PREPACK_OK)
            rc = r.run();
        if (rc == PREPACK_OK) {
            part->first_group = copy_group(r.first_has_group, r.first_group,
                                           &part->first_group_len);
            part->last_group = copy_group(r.prev_has_group, r.prev_group,
                                          &part->last_group_len);
            if ((r.first_has_group && !part->first_group) ||
                (r.prev_has_group && !part->last_group))
                throw std::bad_alloc();
        }
        return rc;
    } catch (const std::bad_alloc &) {
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "%s: out of memory", path);
    }
}

extern "C" int pp_ingest_jsonl(prepack_store *s, const char *path,
                               const prepack_ingest_options *o,
                               prepack_diag *diag)
{
    try {
        JsonlReader r(s, path, o, diag);
        int rc = pp_source_open(&r.src, path, pp_store_allocator(s), diag);
        if (rc == PREPACK_OK)
            rc = pp_source_threads(r.src, o ? o->threads : 0, diag);
        return rc == PREPACK_OK ? r.run() : rc;
    } catch (const std::bad_alloc &) {
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "%s: out of memory", path);
    }
}

extern "C" const char *pp_simdjson_version(void)
{
#define PP_SIMDJSON_STR2(x) #x
#define PP_SIMDJSON_STR(x) PP_SIMDJSON_STR2(x)
    return PP_SIMDJSON_STR(SIMDJSON_VERSION);
}
