// Reading manifest.json (docs/FORMAT.md) with simdjson, the parser the
// library already carries for JSONL; only the keys a reader needs are
// taken, and every one is checked.
#include <simdjson.h>

#include "common/json_count.h"

#include <sys/stat.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

extern "C" {
#include "common/alloc.h"
#include "common/error.h"
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
        if (!pp_is_shard_name(file.data(), file.size()))
            return bad(diag, path,
                       at + "bad file name '" + std::string(file) + "'");
        char *end = nullptr;
        std::string h(hash);
        s->xxh64 = strtoull(h.c_str(), &end, 16);
        if (h.size() != 16 || *end)
            return bad(diag, path, at + "xxh64 must be 16 hex digits");
        snprintf(s->file, sizeof s->file, "%.*s", int(file.size()),
                 file.data());
        i++;
    }
    return PREPACK_OK;
}

// 2^20 shards of 16384 rows: far beyond any set, far below memory limits.
constexpr uint64_t kMaxManifestBytes = uint64_t(256) << 20;

int read_manifest(const char *path, pp_manifest *m, prepack_diag *diag)
{
    // A manifest is ~150 bytes a shard: refuse what no set would need
    // rather than read a hostile file of any size into memory.
    struct stat st;
    if (stat(path, &st) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot read %s: %s", path, std::strerror(errno));
    if (uint64_t(st.st_size) > kMaxManifestBytes)
        return bad(diag, path,
                   "holds " + std::to_string(st.st_size) +
                       " bytes, more than a manifest can (" +
                       std::to_string(kMaxManifestBytes) + ")");
    simdjson::padded_string json;
    if (simdjson::padded_string::load(path).get(json))
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "cannot read %s",
                       path);
    simdjson::dom::parser parser;
    simdjson::dom::object root;
    auto err = parser.parse(json).get_object().get(root);
    if (err)
        return bad(diag, path,
                   std::string("invalid JSON: ") +
                       simdjson::error_message(err));
    std::string_view format, dtype;
    uint64_t version = 0, L = 0, rpf = 0;
    if (root["format"].get_string().get(format) || format != "prepack-shards")
        return bad(diag, path, "not a prepack shard set manifest");
    if (!get_u64(root, "version", &version) || version != 1)
        return bad(diag, path, "unknown manifest version");
    if (!get_u64(root, "max_seq_len", &L) || L == 0 ||
        L > PREPACK_MAX_SEQ_LEN_LIMIT)
        return bad(diag, path, "bad max_seq_len");
    if (!get_u64(root, "rows_per_frame", &rpf) || rpf == 0 || rpf > UINT32_MAX)
        return bad(diag, path, "bad rows_per_frame");
    if (root["token_dtype"].get_string().get(dtype) ||
        (dtype != "uint16" && dtype != "uint32"))
        return bad(diag, path, "token_dtype must be uint16 or uint32");
    m->max_seq_len = uint32_t(L);
    m->rows_per_frame = uint32_t(rpf);
    m->dtype = dtype == "uint16" ? PREPACK_DTYPE_UINT16 : PREPACK_DTYPE_UINT32;
    return read_shards(root, path, m, diag);
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
}
