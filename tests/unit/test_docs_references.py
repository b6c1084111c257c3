"""The docs name modules, files and functions of the code: every such name must exist.

A refactor that moves or renames a module leaves docs pointing nowhere (issue 14 moved ~40
modules).  This reads every backticked reference in README.md and docs/*.md:

- a path ending in ``.py`` (``etrans/app/emails.py``, ``adapters/sql/outbox.py``: relative to
  the repository or to ``etrans/``; a bare file name must exist somewhere in the repository);
- a path followed by ``: name`` (``app/emails.py: send_email``, ``client.py: Class.method``):
  that name must be defined in the file;
- a dotted module (``etrans.adapters.sql.outbox``): the module (or an attribute of its parent
  module) must exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_TICKED = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"^((?:[\w.-]+/)*[\w.-]+\.py)(?::\s*([\w.]+))?$")
_MODULE = re.compile(r"^etrans(?:\.\w+)+$")


def _resolve(path: str) -> Path | None:
    for base in (ROOT, ROOT / "etrans"):
        if (base / path).is_file():
            return base / path
    if "/" not in path:
        found = [p for p in ROOT.glob(f"**/{path}") if ".venv" not in p.parts]
        return found[0] if found else None
    # "sql/outbox_store.py" inside a sentence about adapters: a suffix of a real path
    found = [p for p in (ROOT / "etrans").glob(f"**/{path}")]
    return found[0] if len(found) == 1 else None


def _defines(source: Path, dotted: str) -> bool:
    tree = ast.parse(source.read_text())
    scope: list[ast.stmt] = tree.body
    for part in dotted.split("."):
        match: ast.stmt | None = None
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and node.name == part:
                match = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    match = node
        if match is None:
            return False
        scope = match.body if isinstance(match, ast.ClassDef) else []
    return True


def _module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                rest = ".".join(parts[cut:])
                return not rest or _defines(candidate, rest)
    return False


def _references() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for token in _TICKED.findall(doc.read_text()):
            found.append((doc.relative_to(ROOT).as_posix(), token.strip()))
    return found


def test_paths_and_names_in_docs_exist() -> None:
    broken = []
    for doc, token in _references():
        match = _PATH.match(token)
        if match:
            source = _resolve(match.group(1))
            if source is None:
                broken.append(f"{doc}: `{token}`: no such file")
            elif match.group(2) and not _defines(source, match.group(2)):
                broken.append(f"{doc}: `{token}`: {match.group(2)} is not defined there")
        elif _MODULE.match(token) and not _module_exists(token):
            broken.append(f"{doc}: `{token}`: no such module or name")
    assert not broken, "\n".join(broken)


def test_the_check_sees_references() -> None:
    # A regex that matched nothing would pass vacuously.
    kinds = [bool(_PATH.match(t)) for _, t in _references()]
    assert sum(kinds) > 50
