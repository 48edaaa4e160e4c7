"""Helpers shared by the benchmarks: statistics, machine facts, machine-readable results.

Every suite can write its results as JSON (`--json FILE`) in one shape, which
`bench/report.py` turns into docs/performance.md:

    {"suite": "datapath", "command": "...", "quick": false,
     "goals":  [{"name": ..., "value": 1.02, "goal": ">= 0.95", "ok": true, "unit": "x"}],
     "tables": [{"title": ..., "columns": [...], "rows": [[...], ...], "note": ...}],
     "series": {...suite-specific data for plots...}}
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

REPO = Path(__file__).resolve().parents[1]


class Goal(TypedDict):
    name: str
    value: float
    goal: str
    ok: bool
    unit: str


class Table(TypedDict, total=False):
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str


def median(xs: Sequence[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    n = len(s)
    return float(s[n // 2]) if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def goal(name: str, value: float, op: str, target: float, unit: str = "x") -> Goal:
    """A goal like 'ratio >= 0.95'; `ok` is computed here so every suite agrees."""
    ok = value >= target if op == ">=" else value <= target
    return {"name": name, "value": round(value, 4), "goal": f"{op} {target:g}", "ok": ok,
            "unit": unit}


def interleaved(cases: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, case) in the order a,b,c then c,b,a ...: drift hits every case alike."""
    out: list[tuple[int, str]] = []
    for r in range(rounds):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        out += [(r, c) for c in order]
    return out


def reproduce(module: str, argv: Sequence[str]) -> str:
    """The command line that reproduces a suite's numbers (run from the repository)."""
    args = " ".join(shlex.quote(a) for a in argv if a)
    return f"sudo PYTHONPATH=src {sys.executable} -m {module}" + (f" {args}" if args else "")


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _deb(package: str) -> str:
    return _first_line(["dpkg-query", "-W", "-f", "${Version}", package])


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge the numbers (hardware, versions, load)."""
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_gib": _mem_gib(),
        "python": platform.python_version(),
        "qemu": _first_line(["qemu-system-x86_64", "--version"]),
        "iperf3": _deb("iperf3"),
        "passt": _deb("passt"),
        "libvirt": _deb("libvirt-daemon"),
        # the benchmarks always use TCG: KVM does not work on this machine type
        "kvm_node": os.path.exists("/dev/kvm"),
        "loadavg": loadavg(),
    }


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
