"""The lock files match pyproject.toml (issue 13 item 8): every dependency of etrans (and of its
``sentry`` and ``otel`` extras) is pinned in requirements.lock, every one of the test extras too in
requirements-test.lock, each pin satisfies pyproject's specifier (so the floors past known
advisories hold in what is installed), and every pin carries hashes (``--require-hashes``).

Refresh the locks after changing pyproject.toml: README.md, "Dependencies and lock files"."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {"requirements.lock": ("sentry", "otel"),
         "requirements-test.lock": ("sentry", "otel", "test")}


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int


def read_lock(path: Path) -> list[Pin]:
    """The ``name==version [; marker]`` entries of a pip-compile/uv lock, with their hash count."""
    text = path.read_text().replace("\\\n", " ")
    pins = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        spec, _, options = line.partition(" --hash")
        requirement = Requirement(spec.strip())
        [specifier] = list(requirement.specifier)
        assert specifier.operator == "==", f"{path.name}: {line[:80]} is not pinned"
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", "--hash" + options))
        pins.append(Pin(canonicalize_name(requirement.name), Version(specifier.version),
                        requirement.marker, hashes))
    return pins


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = PYPROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return requirements


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_dependency_is_pinned_within_its_specifier(lock: str) -> None:
    pins = read_lock(ROOT / lock)
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
    problems = []
    for requirement in declared(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        found = by_name.get(name)
        if not found:
            problems.append(f"{requirement} is not in {lock}")
            continue
        for pin in found:  # one per environment marker in a universal lock
            if not requirement.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{lock} pins {name}=={pin.version}, pyproject wants "
                                f"{requirement.specifier}")
        for extra in requirement.extras:  # e.g. psycopg[binary] -> psycopg-binary
            if extra == "binary" and canonicalize_name(f"{name}-binary") not in by_name:
                problems.append(f"{lock} lacks {name}-binary for {requirement}")
    assert not problems, "\n".join(problems) + "\nrefresh the locks (README.md)"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_has_hashes(lock: str) -> None:
    pins = read_lock(ROOT / lock)
    assert len(pins) > 20
    assert [p.name for p in pins if p.hashes == 0] == []


def test_the_test_lock_holds_the_runtime_lock_versions() -> None:
    """What the tests run is what the image installs: no package differs between the locks."""
    test = {(p.name, p.version) for p in read_lock(ROOT / "requirements-test.lock")}
    differ = [f"{p.name}=={p.version}" for p in read_lock(ROOT / "requirements.lock")
              if (p.name, p.version) not in test]
    assert not differ


def test_the_test_extras_include_what_the_suite_needs() -> None:
    names = {canonicalize_name(r.name) for r in declared(("test",))}
    assert {"pytest", "pytest-trio", "pytest-xdist", "hypothesis", "aiosmtpd"} <= names
