"""Optional packages and the extras that bring them (issue 29).

Every import of a package outside pyproject.toml's dependencies goes
through prepack._optional (read from the source); each require() names an
extra that installs the package; every extra's lower bound is the version
the test venv pins (requirements/test.txt, torch.txt), so the tests run
the lowest version an extra allows. Then each optional package is hidden
(a package of its name on PYTHONPATH that raises ModuleNotFoundError, as
an absent one does) and each feature that needs it is run: one line
naming the pip extra, exit 1, no traceback, nothing written."""
import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11's standard library

PACKAGE = os.path.join(ROOT, "python", "prepack")
PYTHON = os.path.join(ROOT, "python")


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _name(requirement):
    """A requirement's distribution name, normalised (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins():
    """{name: version} of the test venv's pins."""
    pins = {}
    for f in ("test.txt", "torch.txt"):
        with open(os.path.join(ROOT, "requirements", f)) as fh:
            for line in fh:
                line = line.split("#")[0].strip()
                if line:
                    name, version = line.split("==")
                    pins[_name(name)] = version.strip()
    return pins


# the pip package that installs a module, where the names differ
# (tokenizers comes with transformers, which requires it)
DISTRIBUTION_OF = {"tiktoken_ext": "tiktoken", "tokenizers": "transformers",
                   "lm_eval": "lm-eval"}


def _sources():
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            path = os.path.join(PACKAGE, name)
            with open(path) as f:
                yield name, ast.parse(f.read(), path)


def test_every_optional_import_goes_through_the_helper():
    """An `import X` or `from X import` of a package that is neither the
    standard library's nor a dependency of pyproject.toml is an error: it
    would raise a bare ModuleNotFoundError where the package is absent."""
    required = {_name(r).replace("-", "_")
                for r in pyproject()["dependencies"]}
    allowed = set(sys.stdlib_module_names) | required | {"prepack"}
    bare = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            bare += [f"{name}:{node.lineno}: {t}" for t in tops
                     if t not in allowed]
    assert bare == [], "import these through prepack._optional.require"


def _helper_calls():
    """(file:line, module, extra) of every _optional.require call."""
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and \
                    isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "require" and \
                    getattr(node.func.value, "id", None) == "_optional":
                args = [a.value if isinstance(a, ast.Constant) else None
                        for a in node.args[:2]]
                yield f"{name}:{node.lineno}", *args


def test_each_require_names_an_extra_that_installs_the_package():
    extras = {k: {_name(r) for r in v}
              for k, v in pyproject()["optional-dependencies"].items()}
    calls = list(_helper_calls())
    assert len(calls) > 20  # the scan finds them at all
    wrong = []
    for where, module, extra in calls:
        if module is None or extra is None:
            wrong.append(f"{where}: module and extra must be literals")
            continue
        top = module.split(".")[0]
        dist = _name(DISTRIBUTION_OF.get(top, top))
        if dist not in extras.get(extra, ()):
            wrong.append(f"{where}: [{extra}] does not install {dist}")
        if dist not in extras["all"]:
            wrong.append(f"{where}: [all] does not install {dist}")
    assert wrong == []


def test_extras_lower_bounds_are_the_tested_pins():
    """Every package of every extra is pinned in the test venv, and the
    extra's lower bound is that pin (torch: exactly the pin)."""
    pins = _pins()
    wrong = []
    for extra, reqs in pyproject()["optional-dependencies"].items():
        for r in reqs:
            name = _name(r)
            spec = r[len(re.match(r"[A-Za-z0-9._-]+", r).group(0)):].strip()
            if name not in pins:
                wrong.append(f"[{extra}] {r}: not pinned in requirements/")
            elif spec not in (f">={pins[name]}", f"=={pins[name]}"):
                wrong.append(f"[{extra}] {r}: the tests pin {pins[name]}")
    assert wrong == []
    assert "torch==2.13.0" in pyproject()["optional-dependencies"]["torch"]


def test_distribution_name_everywhere():
    """The distribution's name is prepack-tokens (prepack on PyPI is
    another project's): pyproject, the helper's messages, the wheel script
    and every pip install in the docs say it."""
    import prepack._optional as optional
    assert pyproject()["name"] == optional.DISTRIBUTION == "prepack-tokens"
    with open(os.path.join(ROOT, "scripts", "wheel.sh")) as f:
        assert "prepack_tokens-*" in f.read()
    docs = [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", n)
        for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md")]
    wrong = []
    for path in docs + [os.path.join(PACKAGE, n) for n in os.listdir(PACKAGE)
                        if n.endswith(".py")]:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if re.search(r"pip install ['\"]?prepack(?![-\w])|"
                             r"['\"]prepack\[", line):
                    wrong.append(f"{os.path.relpath(path, ROOT)}:{n}")
    assert wrong == []
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert "pip install dist/prepack_tokens-*.whl" in readme


# ---- each optional package hidden, each feature that needs it run -------

@pytest.fixture
def hide(tmp_path):
    """hide(name) -> an environment whose Python cannot import `name`: a
    package of that name first on PYTHONPATH raising ModuleNotFoundError
    as an absent package does (the command's export child keeps
    PYTHONPATH's absolute entries)."""
    def env(name):
        blocker = tmp_path / f"without-{name}"
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", "
            f"name={name!r})\n")
        return dict(os.environ, PREPACK_PYTHON=sys.executable,
                    PYTHONPATH=os.pathsep.join([str(blocker), PYTHON]))
    return env


def _one_line(p, package, extra):
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert f"'{package}'" in lines[0], lines[0]
    assert lines[0].endswith(f"pip install 'prepack-tokens[{extra}]'"), \
        lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A Parquet file of token ids and a JSONL file of text."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    d = tmp_path_factory.mktemp("inputs")
    pq.write_table(pa.table({"input_ids": [[1, 2, 3], [4, 5]]}),
                   d / "ids.parquet")
    (d / "text.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    import zstandard
    with open(os.path.join(ROOT, "fixtures", "text",
                           "r50k_base.tiktoken.zst"), "rb") as f:
        (d / "r50k_base.tiktoken").write_bytes(
            zstandard.ZstdDecompressor().stream_reader(f).read())
    return d


MODULE = [sys.executable, "-m", "prepack"]
TOKENIZER = os.path.join(ROOT, "fixtures", "text", "tokenizer")


FEATURES = [
    ("pyarrow", "arrow", ["pack", "{d}/ids.parquet", "-o", "{out}",
                          "--max-seq-len", "8"]),
    ("pyarrow", "arrow", ["stats", "{d}/ids.parquet", "--max-seq-len", "8"]),
    ("pyarrow", "arrow", ["export", "{set}", "--to", "hf-parquet",
                          "-o", "{out}"]),
    ("pyarrow", "arrow", ["export", "{set}", "--to", "nemo-parquet",
                          "-o", "{out}"]),
    ("datasets", "hf", ["export", "{set}", "--to", "hf", "-o", "{out}"]),
    ("transformers", "text", ["pack", "{d}/text.jsonl", "-o", "{out}",
                              "--max-seq-len", "8", "--tokenizer",
                              TOKENIZER]),
    ("tiktoken", "text", ["stats", "{d}/text.jsonl", "--max-seq-len", "8",
                          "--tokenizer", "{d}/r50k_base.tiktoken"]),
    ("transformers", "text", ["scan", "{d}/text.jsonl", "-o", "{out}",
                              "--max-seq-len", "8", "--task-index", "0",
                              "--task-count", "1", "--tokenizer",
                              TOKENIZER]),
]
# python -m prepack runs each; the prepack command hands export to it
# (pack --tokenizer only prints the python -m prepack command to run)
CASES = [("module",) + f for f in FEATURES] + \
    [("command",) + f for f in FEATURES if f[2][0] == "export"]


@pytest.mark.parametrize("front,package,extra,args", CASES)
def test_a_missing_package_is_one_line_naming_the_extra(
        prepack_bin, shard_set, inputs, hide, tmp_path, front, package,
        extra, args):
    out = tmp_path / "out"
    argv = [a.format(d=inputs, out=out, set=shard_set) for a in args]
    cmd = (MODULE if front == "module" else [prepack_bin]) + argv
    p = subprocess.run(cmd, capture_output=True, text=True,
                       env=hide(package), timeout=120)
    if p.returncode == 1 and "libprepack" in p.stderr:
        pytest.skip("no libprepack (sanitizer builds cannot load it)")
    _one_line(p, package, extra)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == [f"without-{package}"]


LIBRARY = """
import sys
from prepack._optional import MissingPackage
try:
{code}
except MissingPackage as e:
    print(e)
    sys.exit(1)
"""


@pytest.mark.parametrize("package,extra,code", [
    ("torch", "torch", "import prepack.torch"),
    ("torch", "torch", "import prepack; prepack.collate(prepack.pack("
                       "[[1, 2, 3], [4, 5]], max_seq_len=8), tensors='pt')"),
    ("ray", "ray", "import prepack.steps; prepack.steps.pack("
                   "['x.jsonl'], 'out', 8, prepack_bin=sys.argv[1])"),
    ("pyarrow", "arrow", "import prepack; prepack.pack_dataset("
                         "sys.argv[2] + '/ids.parquet', sys.argv[2] + "
                         "'/out', max_seq_len=8)"),
])
@pytest.mark.usefixtures("library")
def test_the_library_raises_missing_package(prepack_bin, inputs, hide,
                                            package, extra, code):
    """Library calls raise MissingPackage (an ImportError) whose message
    is the same one line."""
    program = LIBRARY.format(code="    " + code)
    p = subprocess.run([sys.executable, "-c", program, prepack_bin,
                        str(inputs)], capture_output=True, text=True,
                       env=hide(package), timeout=120, cwd=inputs)
    assert p.returncode == 1, p.stderr
    line = p.stdout.strip()
    assert f"'{package}'" in line, line
    assert line.endswith(f"pip install 'prepack-tokens[{extra}]'"), line
