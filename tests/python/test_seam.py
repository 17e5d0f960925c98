"""The seam between C and Python, checked rather than trusted: every
ctypes mirror in python/prepack against the compiler's layout of the
struct it mirrors (tests/seam/layout.c: sizeof, alignof, each field's
offsetof and sizeof) and against prepack.h's declared field types; every
ctypes signature against the header's declaration; every enum name and
constant Python uses against the library's.

layout.c lists the structs and constants by hand; this test reads
prepack.h (comments stripped) and fails when the header declares a struct,
a field or a constant that layout.c does not print, so the list cannot
fall behind the header."""
import ast
import ctypes
import importlib
import json
import os
import re
import subprocess

import pytest

from conftest import ROOT

HEADER = os.path.join(ROOT, "include", "prepack.h")
PACKAGE = os.path.join(ROOT, "python", "prepack")

# Public structs Python does not mirror, and why: Python never passes or
# reads one (a NULL pointer stands for each optional one it passes).
UNMIRRORED = {
    "prepack_allocator": "Python passes NULL: the C library's malloc",
    "prepack_item": "Python reads no plan items (rows come built)",
    "prepack_input_info": "Python reads no per-input figures",
    "prepack_row_references": "plan-only sets are written by the command",
    "prepack_reader_options": "Python opens readers with NULL options",
}


# ---- prepack.h, read as text -------------------------------------------

def _header():
    with open(HEADER, encoding="utf-8") as f:
        return re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)


def _words(text):
    """Identifiers, stars and array brackets of a declaration."""
    return re.findall(r"[A-Za-z_]\w*|\*|\[\s*\w*\s*\]", text)


class CType:
    """A declared C type, reduced to what ctypes must match: a base name
    ("uint32_t", "prepack_row", "fn" for a function pointer), pointer
    depth and array length."""

    def __init__(self, base, depth=0, length=None):
        self.base, self.depth, self.length = base, depth, length

    def pointee(self):
        return CType(self.base, self.depth - 1)

    def __repr__(self):
        return self.base + "*" * self.depth + \
            (f"[{self.length}]" if self.length else "")


def _declarator(tokens, base):
    """(name, CType) of one declarator's tokens after the base type."""
    names = [t for t in tokens if re.match(r"\w", t) and t != "const"]
    arrays = [t for t in tokens if t.startswith("[")]
    length = int(arrays[0].strip("[] ")) if arrays else None
    return (names[-1] if names else None,
            CType(base, tokens.count("*"), length))


def _declaration(decl):
    """[(name, CType)] of one declaration: `T a, *b;`, `T c[4];` or a
    function pointer `R (*f)(...)`."""
    fn = re.search(r"\(\s*\*\s*(\w+)\s*\)\s*\(", decl)
    if fn:
        return [(fn.group(1), CType("fn", 1))]
    pieces = decl.split(",")
    tokens = _words(pieces[0])
    types = [t for t in tokens if re.match(r"\w", t) and t != "const"]
    base = types[0]
    first = tokens[tokens.index(base) + 1:]
    out = [_declarator(first, base)]
    out += [_declarator(_words(p), base) for p in pieces[1:]]
    return out


def header_structs(text):
    """name -> [(field, CType)] for each `typedef struct NAME {...} NAME;`"""
    out = {}
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{([^{}]*)\}\s*(\w+)"
                         r"\s*;", text):
        name, body, alias = m.groups()
        assert name == alias, f"typedef struct {name} {{...}} {alias}"
        fields = []
        for decl in body.split(";"):
            if decl.strip():
                fields += _declaration(" ".join(decl.split()))
        out[name] = fields
    return out


def header_enums(text):
    """The names of typedef'd enums, and every enum constant."""
    types = set(re.findall(r"typedef\s+enum\s+\w*\s*\{[^}]*\}\s*(\w+)\s*;",
                           text))
    constants = set()
    for body in re.findall(r"\benum\s*\w*\s*\{([^}]*)\}", text):
        constants |= {m.group(1) for m in
                      re.finditer(r"(?:^|,)\s*(PREPACK_\w+)", body)}
    return types, constants


def header_defines(text):
    """The numeric #define constants (not the guard, not PREPACK_API, not
    the version string)."""
    out = set()
    for name, value in re.findall(r"^#define\s+(PREPACK_\w+)[ \t]*(.*)$",
                                  text, flags=re.M):
        if name not in ("PREPACK_H", "PREPACK_API") and \
                not value.strip().startswith('"'):
            out.add(name)
    return out


def header_functions(text):
    """name -> (return CType, [parameter CType]) of every function."""
    text = re.sub(r"^#.*$", " ", text, flags=re.M)
    out = {}
    for decl in text.split(";"):
        decl = " ".join(re.split(r"[{}]", decl)[-1].split())
        m = re.match(r"(?:PREPACK_API )?([^()]*?)\b(prepack_\w+)\s*\((.*)\)$",
                     decl)
        if not m or decl.startswith("typedef"):
            continue
        ret, name, params = m.groups()
        rtokens = _words(ret)
        rbase = [t for t in rtokens if re.match(r"\w", t) and t != "const"][0]
        args = []
        for p in _split_top(params):
            if p.strip() == "void":
                continue
            args.append(_declaration(p)[0][1])
        for a in args:  # an array parameter is a pointer
            if a.length is not None:
                a.depth, a.length = a.depth + 1, None
        out[name] = (CType(rbase, rtokens.count("*")), args)
    return out


def _split_top(params):
    """A parameter list split at its top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in params:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


# ---- the layout program ------------------------------------------------

@pytest.fixture(scope="module")
def layout():
    path = os.environ.get("PREPACK_LAYOUT")
    if not path:
        pytest.skip("PREPACK_LAYOUT unset: run through ctest (tests/"
                    "CMakeLists.txt sets it to the seam_layout program)")
    out = subprocess.run([path], check=True, capture_output=True,
                         text=True).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    return {"structs": {x["struct"]: x for x in lines if "struct" in x},
            "constants": {x["constant"]: x["value"] for x in lines
                          if "constant" in x},
            "enums": {x["enum"]: x for x in lines if "enum" in x}}


@pytest.fixture(scope="module")
def header():
    return _header()


def test_layout_covers_every_struct_and_field(layout, header):
    declared = header_structs(header)
    assert len(declared) >= 25, "prepack.h's structs were not read"
    assert set(layout["structs"]) == set(declared), \
        "tests/seam/layout.c must list exactly prepack.h's structs"
    for name, fields in declared.items():
        printed = [f[0] for f in layout["structs"][name]["fields"]]
        assert printed == [f for f, _ in fields], \
            f"{name}: layout.c's fields differ from prepack.h's"


def test_layout_covers_every_constant(layout, header):
    types, constants = header_enums(header)
    wanted = constants | header_defines(header)
    assert {"PREPACK_ECORRUPT", "PREPACK_ALGO_FFD",
            "PREPACK_MAX_SEQ_LEN_LIMIT"} <= wanted
    assert set(layout["constants"]) == wanted, \
        "tests/seam/layout.c must print exactly prepack.h's constants"
    assert set(layout["enums"]) == types


# ---- the ctypes mirrors ------------------------------------------------

def _structure_classes():
    """Every ctypes.Structure subclass defined in python/prepack, found in
    the source (so a module that is never imported is not missed)."""
    found = []
    for file in sorted(os.listdir(PACKAGE)):
        if not file.endswith(".py"):
            continue
        with open(os.path.join(PACKAGE, file), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    "Structure" in ast.unparse(b) for b in node.bases):
                found.append((file[:-3], node.name))
    classes = []
    for module, name in found:
        classes.append(getattr(importlib.import_module(f"prepack.{module}"),
                               name))
    return classes


def mirrors():
    """C struct name -> its ctypes class: each mirror's docstring begins
    with the name of the struct it mirrors."""
    out = {}
    for cls in _structure_classes():
        doc = (cls.__doc__ or "").split()
        assert doc and doc[0].startswith("prepack_"), \
            f"{cls.__module__}.{cls.__name__}: its docstring must begin " \
            f"with the prepack.h struct it mirrors"
        assert doc[0] not in out, f"{doc[0]} is mirrored twice"
        out[doc[0]] = cls
    return out


_SCALARS = {"uint8_t": ctypes.c_uint8, "uint16_t": ctypes.c_uint16,
            "uint32_t": ctypes.c_uint32, "uint64_t": ctypes.c_uint64,
            "size_t": ctypes.c_size_t, "int": ctypes.c_int,
            "int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64,
            "double": ctypes.c_double, "char": ctypes.c_char}


def _matches(py, c, mirrored, enums):
    """Whether ctypes type py can stand for declared C type c."""
    if c.length is not None:
        return issubclass(py, ctypes.Array) and py._length_ == c.length \
            and _matches(py._type_, CType(c.base), mirrored, enums)
    if c.depth:
        if py is ctypes.c_void_p:
            return True
        if py is ctypes.c_char_p:
            return c.base == "char" and c.depth == 1
        if c.base == "fn" and issubclass(py, ctypes._CFuncPtr):
            return True
        return issubclass(py, ctypes._Pointer) and \
            _matches(py._type_, c.pointee(), mirrored, enums)
    if c.base in _fn_typedefs() and not c.depth:  # a function pointer type
        return issubclass(py, ctypes._CFuncPtr)
    if c.base in enums:  # ctypes has no enum: an int of the enum's size
        return py in (ctypes.c_int, ctypes.c_uint)
    if c.base in mirrored:
        return py is mirrored[c.base]
    want = _SCALARS.get(c.base)
    return want is not None and getattr(py, "_type_", None) == want._type_


def _fn_typedefs():
    """The function pointer types prepack.h names (typedef R (*NAME)(...))."""
    return set(re.findall(r"typedef[^;{}]*\(\s*\*\s*(\w+)\s*\)\s*\(",
                          _header()))


def _untyped(py, c, declared):
    """A pointer to a struct Python mirrors (or should) passed as
    c_void_p: the mirror's layout would go unchecked."""
    return py is ctypes.c_void_p and c.depth == 1 and c.base in declared \
        and c.base not in UNMIRRORED


def test_every_mirror_matches_the_compiler(layout, header):
    declared = header_structs(header)
    enum_types, _ = header_enums(header)
    mirrored = mirrors()
    assert {"prepack_report", "prepack_row", "prepack_diag"} <= set(mirrored)
    for name, cls in mirrored.items():
        assert name in declared, f"{cls.__name__} mirrors {name}, which " \
            f"prepack.h does not declare"
        c = layout["structs"][name]
        where = f"{cls.__name__} ({name})"
        assert ctypes.sizeof(cls) == c["size"], f"{where}: size"
        assert ctypes.alignment(cls) == c["align"], f"{where}: alignment"
        py = [f[0] for f in cls._fields_]
        assert py == [f[0] for f in c["fields"]], \
            f"{where}: fields differ from prepack.h's, in name or order"
        types = dict(declared[name])
        for (field, offset, size), (_, ftype) in zip(c["fields"],
                                                     cls._fields_):
            got = getattr(cls, field)
            assert (got.offset, got.size) == (offset, size), \
                f"{where}.{field}: offset {got.offset} size {got.size}, " \
                f"C has {offset} and {size}"
            assert not _untyped(ftype, types[field], declared), \
                f"{where}.{field}: a {types[field].base} as c_void_p"
            assert _matches(ftype, types[field], mirrored, enum_types), \
                f"{where}.{field}: {ftype.__name__} cannot hold " \
                f"{types[field]!r}"


def test_every_struct_is_mirrored_or_listed(header):
    declared = set(header_structs(header))
    mirrored = set(mirrors())
    assert set(UNMIRRORED) <= declared, "UNMIRRORED names a struct " \
        "prepack.h lost"
    assert not mirrored & set(UNMIRRORED), "mirrored yet listed unmirrored"
    missing = declared - mirrored - set(UNMIRRORED)
    assert not missing, f"neither mirrored nor listed (with why) in " \
        f"UNMIRRORED: {sorted(missing)}"


def test_enums_are_int_sized(layout):
    for name, e in layout["enums"].items():
        assert e["size"] == ctypes.sizeof(ctypes.c_int), name


# ---- the signatures ----------------------------------------------------

def test_every_signature_matches_the_header(header):
    from prepack import _native
    declared = header_functions(header)
    assert len(declared) >= 100, "prepack.h's functions were not read"
    enum_types, _ = header_enums(header)
    declared_structs = header_structs(header)
    mirrored = mirrors()
    for name, (args, result) in _native._signatures().items():
        assert name in declared, f"{name} is not declared in prepack.h"
        ret, params = declared[name]
        assert len(args) == len(params), \
            f"{name}: {len(args)} arguments, prepack.h has {len(params)}"
        for k, (py, c) in enumerate(zip(args, params)):
            assert not _untyped(py, c, declared_structs), \
                f"{name}: argument {k} passes a {c.base} as c_void_p"
            assert _matches(py, c, mirrored, enum_types), \
                f"{name}: argument {k} is {py.__name__}, prepack.h's {c!r}"
        if ret.base == "void" and not ret.depth:
            assert result is None, f"{name} returns void"
        else:
            assert result is not None and \
                _matches(result, ret, mirrored, enum_types), \
                f"{name}: returns {ret!r}, not {result}"


def test_no_buffer_sized_by_a_guess():
    """A struct the library fills is a mirror, never a byte buffer of a
    guessed size (create_string_buffer(4096) standing in for a report)."""
    for file in sorted(os.listdir(PACKAGE)):
        if not file.endswith(".py"):
            continue
        with open(os.path.join(PACKAGE, file), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and \
                    ast.unparse(node.func).endswith("create_string_buffer"):
                size = node.args[0] if node.args else None
                assert not isinstance(size, ast.Constant) and not (
                    isinstance(size, ast.Name) and size.id.isupper()), \
                    f"{file}:{node.lineno}: a buffer of a constant size"


# ---- enum names and constants ------------------------------------------

def test_enum_names_are_the_librarys(layout):
    from prepack import _native
    names = {e: x["names"] for e, x in layout["enums"].items()}
    assert list(_native.ALGOS) == names["prepack_algo"]
    assert list(_native.OVERLONGS) == names["prepack_overlong"]
    assert list(_native.DTYPES) == names["prepack_dtype"]
    assert set(_native._FORMATS) <= set(names["prepack_format"])


def test_constants_are_the_headers(layout):
    """Each constant _native keeps for Python (an error code, a limit)
    equals prepack.h's PREPACK_<name>."""
    from prepack import _native
    checked = 0
    for name, value in vars(_native).items():
        if name.isupper() and isinstance(value, int) and \
                f"PREPACK_{name}" in layout["constants"]:
            assert value == layout["constants"][f"PREPACK_{name}"], name
            checked += 1
    assert checked >= 9  # the eight codes and MAX_SEQ_LEN_LIMIT


def test_enum_numbers_come_from_the_library(layout):
    """The numbers Python passes are the library's parsers' answers, the
    header's constants (the library loaded, so not in sanitizer builds)."""
    if os.environ.get("PREPACK_SANITIZED"):
        pytest.skip("no library in Python in the sanitizer build: the "
                    "names and constants above are checked there")
    from prepack import _native
    c = layout["constants"]
    for kind, names in (("algo", _native.ALGOS),
                        ("overlong", _native.OVERLONGS),
                        ("dtype", _native.DTYPES),
                        ("format", _native._FORMATS)):
        for name in names:
            want = c[f"PREPACK_{kind.upper()}_" +
                     name.upper().replace("-", "_")]
            assert _native.enum_value(kind, name) == want, (kind, name)
    assert _native.dtype_name(c["PREPACK_DTYPE_UINT16"]) == "uint16"


def test_token_width_is_the_librarys():
    """The pure-Python reader's bytes per token id (_format.token_width)
    are prepack_dtype_width's, for every dtype the format names."""
    if os.environ.get("PREPACK_SANITIZED"):
        pytest.skip("no library in Python in the sanitizer build")
    from prepack import _format, _native
    lib = _native.library()
    for name in _format.TOKEN_DTYPES:
        assert _format.token_width(name) == \
            lib.prepack_dtype_width(_native.enum_value("dtype", name)), name
    assert lib.prepack_dtype_width(_native.enum_value("dtype", "auto")) == 0


def test_every_function_python_calls_is_declared():
    """Every libprepack function the package, the benchmarks and the
    examples call (an attribute named prepack_*) has its signature in
    _native._signatures(): the library object holds only those, and
    ctypes would call any other with int-sized guesses."""
    from prepack import _native
    declared = set(_native._signatures())
    used = {}
    for folder in (PACKAGE, os.path.join(ROOT, "bench"),
                   os.path.join(ROOT, "examples")):
        for dirpath, _, files in os.walk(folder):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                with open(path, encoding="utf-8") as src:
                    tree = ast.parse(src.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and \
                            node.attr.startswith("prepack_"):
                        used.setdefault(node.attr, f"{path}:{node.lineno}")
    assert len(used) > 30, used  # the walk found the calls
    missing = {n: where for n, where in used.items() if n not in declared}
    assert not missing, missing
