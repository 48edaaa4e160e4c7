"""CLI start-up: wall time of `tapvirt --version` and `tapvirt list` (goals 60 ms / 100 ms),
next to the bare interpreter, with a `python -X importtime` breakdown of each path.

Runs tapvirt the way the installed console script does (a tiny script that imports
`tapvirt.cli.main` and calls `main()`), with this checkout's `src` first on the path and a
private config directory holding a few defined domains. No root needed.

    cd REPO && PYTHONPATH=src python3 -m bench.cli_startup [--quick] [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Goal, Table, goal, loadavg, median, write_json

GOALS_MS = {"--version": 60.0, "list": 100.0}
# Modules that have no business on the --version / list paths (big, or only needed to
# parse XML or talk to the kernel).
HEAVY = ("lxml", "pyroute2", "asyncio", "xml.etree", "ctypes", "tapvirt.conf.parse",
         "tapvirt.host")

# The same body as the console script pip writes for `tapvirt = tapvirt.cli.main:main`.
ENTRY = """import re
import sys
from tapvirt.cli.main import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""

SAMPLE_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <interface type='ethernet'>
      <target dev='tap{n}' managed='no'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"PYTHONPATH": str(REPO / "src"), "XDG_CONFIG_HOME": str(config),
                "HOME": str(config), "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms = user + system) of one run. CPU time is what a loaded machine
    inflates least: on a shared box the wall time includes waiting for a core."""
    c0 = _cpu_children()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    wall = (time.perf_counter() - t0) * 1000
    cpu = (_cpu_children() - c0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
    return wall, cpu


def importtime(argv: list[str], env: dict[str, str]) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) per import, from `python -X importtime`."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        self_us, cum_us, raw = parts[0].strip(), parts[1].strip(), parts[2]
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        rows.append((raw.strip(), int(self_us), int(cum_us), depth))
    return rows


def breakdown(rows: list[tuple[str, int, int, int]]) -> dict[str, Any]:
    """Top-level imports by cumulative time, tapvirt's own modules, and heavy ones seen."""
    top = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])
    total = sum(r[2] for r in rows if r[3] == 0)
    tapvirt = sorted((r for r in rows if r[0].startswith("tapvirt")), key=lambda r: -r[1])
    heavy = sorted({r[0] for r in rows if r[0].startswith(HEAVY)})
    return {"total_ms": round(total / 1000, 1),
            "top": [[n, round(c / 1000, 2)] for n, _s, c, _d in top[:8]],
            "tapvirt_self": [[n, round(s / 1000, 2)] for n, s, _c, _d in tapvirt[:8]],
            "heavy": heavy, "modules": len(rows)}


def setup_config(root: Path, domains: int, python: str) -> None:
    env = _env(root)
    for n in range(domains):
        xml = root / f"d{n}.xml"
        xml.write_text(SAMPLE_XML.format(name=f"bench{n}", n=n))
        subprocess.run([python, "-m", "tapvirt.cli.main", "define", str(xml)], env=env,
                       check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 runs each")
    ap.add_argument("--runs", type=int, default=None, help="runs per command (default 30)")
    ap.add_argument("--domains", type=int, default=5, help="defined domains (default 5)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write results as JSON")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 30)
    python = sys.executable
    root = Path(tempfile.mkdtemp(prefix="tv-cli-"))
    try:
        setup_config(root, args.domains, python)
        (root / "bin").mkdir()
        entry = root / "bin" / "tapvirt"
        entry.write_text(ENTRY)
        env = _env(root)
        cmds = {"python -c pass (interpreter floor)": [python, "-c", "pass"],
                "tapvirt --version": [python, str(entry), "--version"],
                "tapvirt list": [python, str(entry), "list"],
                "tapvirt list --all": [python, str(entry), "list", "--all"]}
        for c in cmds.values():  # warm the page cache
            _time(c, env)
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        cpu: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(runs):  # interleaved: drift hits every command alike
            for k, c in cmds.items():
                wall, used = _time(c, env)
                samples[k].append(wall)
                cpu[k].append(used)
        med = {k: median(v) for k, v in samples.items()}
        med_cpu = {k: median(v) for k, v in cpu.items()}
        floor = med["python -c pass (interpreter floor)"]
        imports = {k: breakdown(importtime(c, env)) for k, c in cmds.items()
                   if k.startswith("tapvirt")}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"CLI start-up, median of {runs} runs ({args.domains} defined domains, none "
          f"running), load average {loadavg()}")
    rows: list[list[Any]] = []
    for k, v in samples.items():
        extra = imports.get(k)
        heavy = ", ".join(extra["heavy"]) if extra else ""
        print(f"  {k:<36} {med[k]:6.1f} ms (min {min(v):5.1f}, CPU {med_cpu[k]:5.1f}, "
              f"+{med[k] - floor:5.1f} over the interpreter)"
              + (f"; imports {extra['total_ms']} ms" if extra else "")
              + (f"; heavy: {heavy}" if heavy else ""))
        rows.append([k, round(med[k], 1), round(min(v), 1), round(med_cpu[k], 1),
                     round(med[k] - floor, 1), extra["total_ms"] if extra else "",
                     heavy or ("none" if extra else "")])
    goals: list[Goal] = [
        goal("tapvirt --version wall time", med["tapvirt --version"], "<=",
             GOALS_MS["--version"], "ms"),
        goal("tapvirt list wall time", med["tapvirt list"], "<=", GOALS_MS["list"], "ms")]
    for g in goals:
        print(f"  {g['name']}: {g['value']:.1f} ms (goal {g['goal']} ms) "
              f"{'OK' if g['ok'] else 'MISSED'}")
    tables: list[Table] = [{
        "title": "CLI wall time (ms, median)",
        "columns": ["command", "median", "min", "CPU (user+sys)", "over bare python",
                    "imports (ms)", "heavy modules imported"],
        "rows": rows,
        "note": f"{runs} interleaved runs each; {args.domains} defined domains, none running",
    }]
    for k, b in imports.items():
        tables.append({"title": f"`{k}`: slowest imports (cumulative ms)",
                       "columns": ["module", "ms"], "rows": b["top"],
                       "note": f"{b['modules']} modules imported, {b['total_ms']} ms in all"})
    cmd = (f"PYTHONPATH=src {sys.executable} -m bench.cli_startup"
           + (" --quick" if args.quick else "") + (f" --runs {args.runs}" if args.runs else ""))
    print(f"reproduce: {cmd}")
    write_json(args.json, {"suite": "cli", "command": cmd, "quick": args.quick,
                           "goals": goals, "tables": tables,
                           "series": {"samples_ms": samples, "cpu_ms": cpu,
                                      "imports": imports},
                           "load_after": loadavg()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
