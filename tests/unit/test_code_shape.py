"""The size limits of the code (issue 14, STYLE.md): no module under ``etrans/`` over 400 lines,
no function over 60, and the domain on the standard library alone.

Read with ``ast``, so nested functions and methods count on their own; migrations (generated
revisions) are left out.  There is no allow-list: issue 14 split every offender, and a new one
is split before it lands.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "etrans"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts)


def name_of(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def long_functions(path: Path) -> dict[str, int]:
    """``qualified.name`` -> lines, for every function (methods and nested ones too) over the
    limit; a function's lines run from its ``def`` to its last line."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found[name] = lines
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), str(path)), "")
    return found


def test_the_scan_sees_the_package():
    names = {name_of(path) for path in modules()}
    assert "etrans/domain/quota.py" in names
    assert not any("migrations" in name for name in names)


def test_modules_stay_under_the_line_limit():
    too_long = {}
    for path in modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_long[name_of(path)] = lines
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them): {too_long}"


def test_functions_stay_under_the_line_limit():
    too_long = {}
    for path in modules():
        for name, lines in long_functions(path).items():
            too_long[f"{name_of(path)}:{name}"] = lines
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (shorten them): {too_long}"


def test_a_long_function_is_found_with_its_qualified_name(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "sample.py"
    source.write_text(f"class A:\n    def long(self):\n{body}\n\n    def short(self):\n"
                      "        pass\n")
    assert long_functions(source) == {"A.long": MAX_FUNCTION_LINES + 1}


def test_the_domain_imports_only_the_standard_library():
    """STYLE.md: ``domain/`` holds pure rules; besides itself it may use ``etrans.errors``."""
    foreign = {}
    for path in sorted((PACKAGE / "domain").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ours = name == "etrans.errors" or name.startswith("etrans.domain")
                if top not in sys.stdlib_module_names and not ours:
                    foreign.setdefault(name_of(path), []).append(name)
    assert not foreign, f"the domain imports beyond the standard library: {foreign}"
