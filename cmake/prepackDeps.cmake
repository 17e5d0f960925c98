# The C libraries prepack builds against, found through pkg-config. A
# missing one fails the configure with one message naming the Debian
# packages to install (the names scripts/deps.sh installs), or the wheel
# to use instead, rather than pkg-config's bare "package not found"
# (pip install . runs this too). tests/install/test_cmake_deps.sh hides
# each library and reads the message.
set(_prepack_missing "")
find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  list(APPEND _prepack_missing pkg-config)
endif()

# prepack_find_library(PREFIX DEBIAN_PACKAGE MODULE...): the first MODULE
# pkg-config knows, as PkgConfig::PREFIX; else DEBIAN_PACKAGE is missing.
macro(prepack_find_library prefix debian)
  if(PKG_CONFIG_FOUND)
    pkg_search_module(${prefix} QUIET IMPORTED_TARGET ${ARGN})
  endif()
  if(NOT ${prefix}_FOUND)
    list(APPEND _prepack_missing ${debian})
  endif()
endmacro()

# Debian 12: libzstd.pc, zlib.pc, simdjson.pc (see docs/DESIGN.md for why
# each library is here). msgpack-c: upstream 6.x names its module
# msgpack-c, Debian 12's 4.0.0 msgpack (-lmsgpackc); take whichever is
# there.
prepack_find_library(ZSTD libzstd-dev libzstd)
prepack_find_library(ZLIB zlib1g-dev zlib)
prepack_find_library(SIMDJSON libsimdjson-dev simdjson)
prepack_find_library(MSGPACK libmsgpack-dev msgpack-c msgpack)
prepack_find_library(XXHASH libxxhash-dev libxxhash)

if(_prepack_missing)
  list(JOIN _prepack_missing " " _prepack_apt)
  message(FATAL_ERROR
    "prepack: the C libraries' development packages are missing: "
    "${_prepack_apt}. On Debian or Ubuntu:\n"
    "  sudo apt-get install -y ${_prepack_apt}\n"
    "(scripts/deps.sh build installs what is missing), then build again. "
    "Or install the wheel that carries the libraries, built by "
    "scripts/wheel.sh on a machine that has them: "
    "pip install dist/prepack_tokens-*.whl (README.md).")
endif()
