"""Log lines of several processes sharing one stdout (``--processes N``: the children inherit the
parent's; the Containerfile sets PYTHONUNBUFFERED=1) stay whole: each line is one write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import sys
    from etrans.observability import configure, get_logger
    configure("sendmail", json=True, process=int(sys.argv[1]))
    log = get_logger()
    for i in range(int(sys.argv[2])):
        log.info("a line", index=i, pad="x" * 200)
""")


def test_lines_of_processes_sharing_stdout_are_whole(tmp_path: Path) -> None:
    out = tmp_path / "shared.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines_each = 3000
    with out.open("ab") as sink:  # O_APPEND, as journald's or a container runtime's file
        children = [subprocess.Popen([sys.executable, "-c", CHILD, str(i), str(lines_each)],
                                     stdout=sink, env=env) for i in range(2)]
        for child in children:
            assert child.wait(timeout=120) == 0
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # a torn line does not parse
    assert len(records) == 2 * lines_each
    for process in (0, 1):
        assert sorted(r["index"] for r in records if r["process"] == process) == \
            list(range(lines_each))
