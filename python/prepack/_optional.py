"""The optional packages, imported in one place. require() gives the
module or raises MissingPackage, whose message is one line naming the
feature, the package and the pip extra that installs it; find() gives the
module or None where a feature only improves on something that works
without it. Every import of a package outside pyproject.toml's
dependencies goes through here (tests/python/test_optional.py reads the
package's source to hold it)."""
import importlib
import sys

# pyproject.toml's [project] name: what pip installs; the import name is
# prepack (the name prepack on PyPI is another project's)
DISTRIBUTION = "prepack-tokens"


# a module whose pip package has another name
_PACKAGES = {"tiktoken_ext": "tiktoken", "lm_eval": "lm-eval"}


class MissingPackage(ImportError):
    """An optional package is not installed: str() is the one line to
    print, naming the extra to install."""


def install_line(extra):
    """The pip command that brings an extra's packages."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(module, extra, feature):
    """`module` imported (a dotted name: pyarrow.parquet), or
    MissingPackage: "FEATURE needs the Python package P (No module named
    ...): pip install 'prepack-tokens[EXTRA]'". A package that is there
    but fails to import one of its own dependencies is named too."""
    loaded = sys.modules.get(module)  # per batch: the import system's
    if loaded is not None:           # lookup costs more than the batch's
        return loaded                # other Python work
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (e.name or module).split(".")[0]
        missing = _PACKAGES.get(missing, missing)
        raise MissingPackage(
            f"{feature} needs the Python package {missing!r} ({e}): "
            f"{install_line(extra)}", name=missing) from None


def find(module):
    """`module` imported, or None when it (or a package it needs) is not
    installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
