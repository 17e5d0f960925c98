"""The shape of python/prepack, read from its source (ast, no imports):
no import cycle among its modules, no module reading another object's
private attributes (ShardSet is the front; its readers are its own), and
_format.py the twin of src/shards/shard_format.h, number for number."""
import ast
import os
import re

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "python", "prepack")
# private names of objects a module did not make that it may still read:
# ctypes' Structure._fields_ (the declared layout), namedtuple's _fields,
# and transformers' config._attn_implementation (its documented way to
# read which attention a model runs)
ALLOWED = {"_fields_", "_fields", "_attn_implementation"}


def modules():
    """{module name: its parsed source} for every module of the package."""
    out = {}
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            with open(os.path.join(PACKAGE, name)) as f:
                out[name[:-3]] = ast.parse(f.read(), name)
    return out


def imported_modules(tree, known):
    """The package's modules this source imports, at any depth (an import
    inside a function closes a cycle as well as one at the top)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            relative = node.level > 0 or (node.module or "").split(".")[0] \
                == "prepack"
            if not relative:
                continue
            base = (node.module or "").split(".")
            base = base[1:] if base[0] == "prepack" else base
            if base and base[0]:
                out.add(base[0])
            else:  # from . import a, b: modules, or names of __init__
                out.update(a.name if a.name in known else "__init__"
                           for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "prepack":
                    out.add(parts[1] if len(parts) > 1 else "__init__")
    return out & set(known)


def find_cycle(graph):
    """A cycle of the graph as a list of names, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def module_aliases(tree):
    """Names a module binds to modules by import: reading their private
    names is reading a module's, not an object's."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0]
                         for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is None:
            names.update(a.asname or a.name for a in node.names)
    return names


def private_reaches(tree):
    """(line, text) of each read of an underscore attribute of something
    other than self, cls, super() or a module: x._y, and getattr(x, "_y")."""
    mine = {"self", "cls"} | module_aliases(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner, attr = node.value, node.attr
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr") \
                and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str):
            owner, attr = node.args[0], node.args[1].value
        else:
            continue
        dunder = attr.startswith("__") and attr.endswith("__")
        if not attr.startswith("_") or dunder or attr in ALLOWED:
            continue
        if isinstance(owner, ast.Name) and owner.id in mine:
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) \
                and owner.func.id == "super":  # an override calling its own base
            continue
        out.append((node.lineno, f"{ast.unparse(owner)}.{attr}"))
    return out


def test_no_import_cycle():
    """_creader imported _shards (for its errors) while _shards imported
    _creader: a cycle an import order could trip on. None may remain."""
    trees = modules()
    graph = {name: imported_modules(tree, trees) - {name}
             for name, tree in trees.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_reads_another_objects_private_fields():
    """torch.py read shards._c, balancing.py shards._c._h: ShardSet's
    methods (batch, row_costs) are the way in."""
    found = {f"{name}.py:{line}: {text}"
             for name, tree in modules().items()
             for line, text in private_reaches(tree)}
    assert not found, sorted(found)


@pytest.mark.parametrize("source,flagged", [
    ("import x\nshards = x.ShardSet()\nshards._c.batch()\n", True),
    ("def f(s):\n    return s._c._h\n", True),
    ("def f(s):\n    return getattr(s, '_c')\n", True),
    ("from . import _native\n_native._OVERLONG\n", False),
    ("class A:\n    def f(self):\n        return self._c\n", False),
    ("def f(d):\n    return d._fields_, d.__class__\n", False),
])
def test_the_private_field_check_itself(source, flagged):
    assert bool(private_reaches(ast.parse(source))) == flagged


def test_the_cycle_check_itself():
    known = {"_a": None, "_b": None, "__init__": None}
    a = ast.parse("def f():\n    from ._b import x\n")
    b = ast.parse("from . import _a\n")
    graph = {"_a": imported_modules(a, known),
             "_b": imported_modules(b, known), "__init__": set()}
    assert find_cycle(graph) == ["_a", "_b", "_a"]
    assert find_cycle({"_a": {"_b"}, "_b": set()}) is None


# ---- _format.py against src/shards/shard_format.h ----------------------

HEADER = os.path.join(ROOT, "src", "shards", "shard_format.h")


def header_constants(text):
    """PP_X -> value for the header's #defines and enum members."""
    out = {}
    for name, value in re.findall(
            r"#define PP_(\w+) (0x[0-9A-Fa-f]+|\d+)u?\b", text):
        out[name] = int(value, 0)
    for name, value in re.findall(r'#define PP_(\w+) "([^"]*)"', text):
        out[name] = value
    for body in re.findall(r"enum\s*\{([^}]*)\}", text):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        for name, value in re.findall(r"PP_(\w+)\s*=\s*(0x[0-9A-Fa-f]+|\d+)",
                                      body):
            out[name] = int(value, 0)
    return out


def header_bounds(text):
    """The header's one-line inline functions as Python functions: their
    return expressions over its constants, C's integer division made
    Python's."""
    found = re.findall(r"static inline uint64_t pp_(\w+)\(([^)]*)\)\s*\{\s*"
                       r"return ([^;]+);\s*\}", text)
    scope = {f"PP_{k}": v for k, v in header_constants(text).items()}
    for name, params, expr in found:
        args = [p.split()[-1] for p in params.split(",")]
        expr = " ".join(expr.split()).replace("/", "//")
        expr = re.sub(r"\bpp_(\w+)\(", r"\1(", expr)
        exec(f"def {name}({', '.join(args)}):\n    return {expr}\n", scope)
    return {name: scope[name] for name, _, _ in found}


def test_format_constants_are_the_headers():
    from prepack import _format as f
    with open(HEADER) as h:
        c = header_constants(h.read())
    assert c == {
        "SKIPPABLE_MAGIC": f.SKIPPABLE_MAGIC,
        "SEEKABLE_MAGIC": f.SEEKABLE_MAGIC,
        "SEEK_HEADER_BYTES": f.SEEK_HEADER.size,
        "SEEK_ENTRY_BYTES": f.SEEK_ENTRY.size,
        "SEEK_FOOTER_BYTES": f.SEEK_FOOTER.size,
        "SEEK_CHECKSUMS": f.SEEK_CHECKSUMS,
        "MIN_FRAME_BYTES": f.MIN_FRAME_BYTES,
        "REF_BYTES": f.REF_BYTES,
        "MANIFEST_NAME": f.MANIFEST_NAME,
        "MANIFEST_MAX_DEPTH": f.MANIFEST_MAX_DEPTH,
        "TMP_SUFFIX": f.TMP_SUFFIX,
        "SHARD_NAME_MAX": f.SHARD_NAME_MAX,
        "FIRST_ID3_VERSION": f.FIRST_ID3_VERSION,
        "FIRST_ID_CODE_VERSION": f.FIRST_ID_CODE_VERSION,
        "ID_ONE_BYTE": f.ID_ONE_BYTE,
        "ID_ESCAPE": f.ID_ESCAPE,
        "ID_TABLE_MAX": f.ID_TABLE_MAX,
        "ID_TABLE_ID_LIMIT": f.ID_TABLE_ID_LIMIT,
        "INDEX_MAGIC": f.INDEX_MAGIC,
        "INDEX_HEAD": f.INDEX_HEAD.size,
        "INDEX_FRAME_HEAD": f.INDEX_FRAME_HEAD.size,
    }


def test_format_bounds_are_the_headers():
    from prepack import _format as f
    with open(HEADER) as h:
        c = header_bounds(h.read())
    assert set(c) == {"seek_table_bytes", "row_bytes_bound",
                      "frame_bytes_bound", "zstd_expansion_bound",
                      "index_frame_bytes"}
    for n in (0, 1, 16320):
        for width in (2, 4):
            for frames in (0, 1, 300):
                assert f.index_frame_bytes(n, width, frames) == \
                    c["index_frame_bytes"](n, width, frames)
    for n in (0, 1, 7, 4096, 1 << 24):
        assert f.seek_table_bytes(n) == c["seek_table_bytes"](n)
        assert f.zstd_expansion_bound(n) == c["zstd_expansion_bound"](n)
        for width in (2, 4, f.REF_BYTES):
            assert f.row_bytes_bound(n, width) == \
                c["row_bytes_bound"](n, width)
            for rows in (1, 3, 1000):
                assert f.frame_bytes_bound(rows, n, width) == \
                    c["frame_bytes_bound"](rows, n, width)


def test_token_widths():
    """uint16 is 2 bytes, uint32 4: what the C reader's token_dtype says
    (test_backends compares their rows, dtypes included)."""
    from prepack import _format as f
    assert [f.token_width(d) for d in f.TOKEN_DTYPES] == [2, 4]
    assert [f.token_numpy_dtype(d).str for d in f.TOKEN_DTYPES] == \
        ["<u2", "<u4"]
