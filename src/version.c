/* Versions: prepack's, and those of the libraries that shape its output
 * (zstd's compressed bytes can differ between zstd versions, so a bug
 * report or a golden-file test needs to know which one is linked). */
#include <string.h>

#include <msgpack.h>
#include <xxhash.h>
#include <zstd.h>

#include "ingest/readers.h"

#define PP_STR2(x) #x
#define PP_STR(x) PP_STR2(x)

const char *prepack_version(void)
{
    return PREPACK_VERSION_STRING;
}

const char *prepack_dependency_version(const char *name)
{
    if (!name)
        return NULL;
    if (!strcmp(name, "zstd"))
        return ZSTD_versionString(); /* the library linked at run time */
    if (!strcmp(name, "msgpack-c"))
        return msgpack_version();
    if (!strcmp(name, "xxhash")) /* header-only use: the version built with */
        return PP_STR(XXH_VERSION_MAJOR) "." PP_STR(
            XXH_VERSION_MINOR) "." PP_STR(XXH_VERSION_RELEASE);
    if (!strcmp(name, "simdjson"))
        return pp_simdjson_version();
    return NULL;
}
