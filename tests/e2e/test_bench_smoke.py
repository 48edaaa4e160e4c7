"""Smoke run of the benchmark code paths (bench/), so they keep working as the code moves.

Runs each suite in its quick mode and renders the report from the results. It asserts the
shape of what they produce (goals with numeric values, tables, PNG plots, the report's
sections), never timings: benchmarks are not timed tests. About half a minute, most of
it booting three small guests.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import REPO

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_suite(module: str, *args: str, out: Path) -> dict[str, Any]:
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(out.parent), "LANG": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-m", module, *args, "--json", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "reproduce:" in proc.stdout  # every suite prints the command behind its numbers
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _assert_shape(data: dict[str, Any], suite: str) -> None:
    assert data["suite"] == suite
    assert data["command"].count("-m bench.") == 1
    assert data["goals"], f"{suite} reported no goals"
    for g in data["goals"]:
        assert isinstance(g["value"], float | int) and math.isfinite(g["value"]), g
        assert isinstance(g["ok"], bool)
        assert g["goal"].split()[0] in ("<=", ">=")
    for t in data["tables"]:
        assert t["rows"], t["title"]
        assert all(len(r) == len(t["columns"]) for r in t["rows"]), t["title"]


def test_suites_and_report_render(tmp_path: Path) -> None:
    results: dict[str, Any] = {"suites": {}}
    # Two cases on different host sides (the precreated tap, passt): a guest booted right
    # after another one on the same tap sometimes cannot be reached at all ("No route to
    # host"; seen in ~1 of 3 quick runs, cause not found yet, recorded in the report), which
    # is not what this smoke run is about. One retry for the remaining noise of 1-second
    # iperf3 runs through a TCG guest; both attempts' failures are shown if it fails twice.
    failures: list[Any] = []
    for _attempt in range(2):
        datapath = _run_suite("bench.datapath", "--quick", "--cases", "tapvirt,passt",
                              out=tmp_path / "datapath.json")
        if datapath["goals"]:
            break
        failures.append(datapath["series"].get("failures"))
    assert datapath["goals"], f"datapath reported no goals; failures: {failures}"
    _assert_shape(datapath, "datapath")
    avg = datapath["series"]["avg"]
    assert set(avg) == {"tapvirt", "passt"}
    for case in avg.values():  # both directions carried data through a real guest
        assert case["h2g"] > 0 and case["g2h"] > 0
    names = {g["name"] for g in datapath["goals"]}
    assert any("passt" in n for n in names)
    # tapvirt's own argv was captured: what the report shows is what ran
    assert any(a.startswith('{"type":"tap"') for a in datapath["series"]["argv"]["tapvirt"])

    connect = _run_suite("bench.connect", "--quick", "--links", "50", "--rounds", "200",
                         out=tmp_path / "connect.json")
    _assert_shape(connect, "connect")
    assert len(connect["series"]["links"]) == 2

    cli = _run_suite("bench.cli_startup", "--quick", "--runs", "2",
                     out=tmp_path / "cli.json")
    _assert_shape(cli, "cli")
    assert {g["unit"] for g in cli["goals"]} == {"ms"}

    for name, data in (("datapath", datapath), ("connect", connect), ("cli", cli)):
        results["suites"][name] = {"date": "smoke", "quick": True, "runs": [
            {"module": f"bench.{name}", "args": [], "rc": 0, "seconds": 1.0,
             "load_before": [0, 0, 0], "load_after": [0, 0, 0], "data": data, "text": ""}]}
    plots = tmp_path / "perf"
    plots.mkdir()
    (plots / "results.json").write_text(json.dumps(results))
    doc = tmp_path / "performance.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--render", "--out", str(doc),
         "--plots", str(plots)], cwd=REPO, env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}",
                                               "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    text = doc.read_text()
    for heading in ("## Goals", "## 1. Interface connect", "## 4. Data path", "## 5. CLI"):
        assert heading in text
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["cli-startup.png", "connect-vs-links.png", "datapath-throughput.png"]
    for png in pngs:
        assert (plots / png).read_bytes()[:8] == PNG_MAGIC
        assert f"(perf/{png})" in text
