"""The house rules a reader relies on, checked: no function in src/ longer than
60 lines (Python, Cython and C alike), and no test of layer or optimiser types
outside the table of fusions."""
import ast
import pathlib
import re

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 60
pytestmark = pytest.mark.skipif(not SRC.is_dir(), reason="the source tree is not beside tests/")


def _python_functions(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


_CYTHON_DEF = re.compile(r"^(\s*)(?:cdef|cpdef|def)\s+(?!extern|class|struct)[^=(]*?(\w+)\s*\(")


def _cython_functions(path):
    """def/cdef/cpdef functions with a body: from the signature to the last line
    indented deeper than it."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = _CYTHON_DEF.match(line)
        if not m:
            continue
        indent, j, depth = len(m.group(1)), i, 0
        while True:     # to the line that closes the signature's parentheses
            code = lines[j].split("#")[0]
            depth += code.count("(") - code.count(")")
            if depth <= 0:
                break
            j += 1
        if not code.rstrip().endswith(":"):
            continue        # a declaration (.pxd, extern): no body
        end = j + 1
        while end < len(lines) and (not lines[end].strip()
                                    or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        while not lines[end - 1].strip():
            end -= 1
        if end > j + 1:
            yield m.group(2), i + 1, end - i


def _c_functions(path):
    """Top-level C function bodies (and function-defining macros): from the line
    that opens the definition to its closing brace at column 0 (or the macro's
    last continued line)."""
    lines = path.read_text().splitlines()
    start = None
    for i, line in enumerate(lines):
        opens = r"^(static|void|int|ptrdiff_t|size_t|const|CC_|#define \w+\()"
        if start is None and re.match(opens, line) and "(" in line \
                and not line.rstrip().endswith(";"):
            start, name = i, re.findall(r"(\w+)\s*\(", line)[0]
            macro = line.startswith("#define")
        if start is None:
            continue
        if (macro and not line.rstrip().endswith("\\")) or (not macro and line.startswith("}")):
            if not macro or i > start:
                yield name, start + 1, i - start + 1
            start = None


def _all_functions():
    for path in sorted(SRC.rglob("*")):
        kind = {".py": _python_functions, ".pyx": _cython_functions, ".pxd": _cython_functions,
                ".h": _c_functions, ".c": _c_functions}.get(path.suffix)
        if kind:
            for name, line, length in kind(path):
                yield f"{path.relative_to(SRC)}:{line} {name}", length


def test_the_length_counter_sees_every_kind_of_source():
    seen = {where.split(":")[0].rsplit(".", 1)[-1] for where, _ in _all_functions()}
    assert {"py", "pyx", "h", "c"} <= seen


def test_no_function_longer_than_60_lines():
    long = [f"{where} ({n} lines)" for where, n in _all_functions() if n > MAX_LINES]
    assert not long, "\n".join(long)


def test_layer_and_optimiser_types_are_tested_only_in_the_fusion_table():
    found = []
    for path in sorted((SRC / "pyconv").rglob("*.py")):
        if path.name == "fusion.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"isinstance\([^)]*\b(Conv2D|Dense|MaxPool2D|Dropout|Flatten|ReLU|Tanh|"
                         r"Layer|Adam|SGD|Optimizer)\b|hasattr\(\s*(layer|step|opt|optimizer|"
                         r"self\.optimizer)\b", line):
                found.append(f"{path.name}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
