"""config/grafana-dashboard.json is built from the names of the metrics catalog: every metric
an expression names exists (issue 17 item 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from etrans.adapters.metrics.prometheus import CATALOG

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum")


def exposed(name: str) -> bool:
    if name in CATALOG:
        return True
    return any(name.endswith(s) and CATALOG.get(name.removesuffix(s), ("",))[0] == "histogram"
               for s in SUFFIXES)


def test_every_dashboard_expression_names_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        names = re.findall(r"\betrans_[a-z_]+", expr)
        assert names, expr
        unknown = [n for n in names if not exposed(n)]
        assert not unknown, (expr, unknown)


def test_catalog_names_follow_prometheus_conventions() -> None:
    for name, (kind, _labels, _help) in CATALOG.items():
        assert name.startswith("etrans_")
        assert name.endswith("_total") == (kind == "counter"), name
