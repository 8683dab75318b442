"""The import graph of src/pyconv, read from the source (every import
statement, those inside functions too): no circle; each module imports only
its own floor and the floors below (the layers of pyproject.toml's
import-linter contract, which CI checks with lint-imports as well); no
module imports convcore.reference or a private module of convcore."""
import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
pytestmark = pytest.mark.skipif(not (SRC / "pyconv").is_dir() or sys.version_info < (3, 11),
                                reason="the source tree is not beside tests/ (or no tomllib)")


def _module_name(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in sorted((SRC / "pyconv").rglob("*.py"))}


def _imports(name, path, known):
    """The modules `name` imports: absolute and relative, anywhere in the file;
    `from package import sub` counts as importing the submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def graph():
    mods = _modules()
    return {name: {m for m in _imports(name, path, mods) if m.startswith(("pyconv", "convcore"))}
            for name, path in mods.items()}


def _cycles(edges):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _floors():
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return [[m.strip() for m in floor.split("|")] for floor in layers]


def _floor_of(module, floors):
    for i, floor in enumerate(floors):
        if any(module == m or module.startswith(m + ".") for m in floor):
            return i, next(m for m in floor if module == m or module.startswith(m + "."))
    return None, None


def test_the_reader_sees_imports_inside_functions():
    edges = graph()
    assert "pyconv.model" in edges["pyconv.train"]                  # from ..model import
    assert "pyconv.data.idx" in edges["pyconv.data.datasets"]       # from . import idx
    assert "pyconv.io.onnx" in edges["pyconv.cli.main"]


def test_no_import_circle():
    assert _cycles(graph()) == []


def test_a_circle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_module_imports_only_its_floor_and_below():
    floors, bad = _floors(), []
    for module, targets in graph().items():
        mine, home = _floor_of(module, floors)
        for target in targets:
            theirs, other = _floor_of(target, floors)
            if mine is None or theirs is None or home == other:
                continue
            if theirs < mine or (theirs == mine and home != other):
                bad.append(f"{module} (floor {mine}) imports {target} (floor {theirs})")
    assert not bad, "\n".join(bad)


def test_pyconv_uses_convcores_public_face_only():
    bad = [f"{m} imports {t}" for m, ts in graph().items() for t in ts
           if t.startswith("convcore.") and (t == "convcore.reference"
                                              or t.split(".")[1].startswith("_"))]
    assert not bad, "\n".join(bad)
