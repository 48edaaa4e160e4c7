"""Run the benchmark suites and regenerate docs/performance.md with its plots.

    cd REPO && sudo PYTHONPATH=src /opt/tapvirt/venv/bin/python -m bench.report
    ... --only datapath,cli     run a subset; the other suites keep their last results
    ... --quick                 smoke run (seconds per suite, numbers meaningless)
    ... --render                no runs: rebuild the report from docs/perf/results.json

Each suite runs as its own process (`python -m bench.X --json FILE`) and prints as it goes;
its JSON (goals, tables, series; see bench/common.py) is merged into
docs/perf/results.json, from which the Markdown and the PNG plots are rendered. A suite
that cannot write JSON is still run and its text output is kept in the report.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, loadavg, machine_facts

DOC = REPO / "docs" / "performance.md"
PLOTS = REPO / "docs" / "perf"
RESULTS = PLOTS / "results.json"
ORDER = ("connect", "start", "datapath", "cli")


def suite_commands(name: str, quick: bool) -> list[list[str]]:
    """The module runs that make up a suite (the connect curve needs several link counts)."""
    q = ["--quick"] if quick else []
    if name == "connect":
        counts = [200] if quick else [1000, 10000]
        return [["bench.connect", *q, "--links", str(n)] for n in counts]
    if name == "start":
        return [["bench.start", *q]]
    if name == "datapath":
        return [["bench.datapath", *q]]
    if name == "cli":
        return [["bench.cli_startup", *q]]
    raise ValueError(name)


def available(module: str) -> bool:
    return (REPO / (module.replace(".", "/") + ".py")).is_file()


def run_module(args: list[str]) -> tuple[dict[str, Any] | None, str, int, float]:
    """Run `python -m MODULE ARGS --json F`; stream its output; (json, text, rc, seconds)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + str(REPO))
    with tempfile.TemporaryDirectory(prefix="tv-report-") as tmp:
        out = Path(tmp) / "result.json"
        t0 = time.monotonic()
        text, rc = _stream([sys.executable, "-m", *args, "--json", str(out)], env)
        printed = False
        if rc == 2 and "unrecognized arguments" in text:
            if "unrecognized arguments: --json" in text:  # a text-only suite
                text, rc = _stream([sys.executable, "-m", *args], env)
            else:  # `--json` is a flag: the suite prints its JSON after its text
                text, rc = _stream([sys.executable, "-m", *args, "--json"], env)
                printed = True
        seconds = time.monotonic() - t0
        data = json.loads(out.read_text()) if out.is_file() else None
    if printed:
        data = _trailing_json(text)
    if data is not None and "suite" not in data:
        data = ADAPTERS.get(args[0], lambda _d: None)(data)
        if data is not None:
            data["command"] = f"sudo PYTHONPATH=src {sys.executable} -m {' '.join(args)}"
    return data, text, rc, seconds


def _trailing_json(text: str) -> dict[str, Any] | None:
    """The JSON object a suite printed last (after its human-readable lines)."""
    start = text.rfind("\n{\n")
    if start < 0:
        return None
    try:
        data: dict[str, Any] = json.loads(text[start:])
    except ValueError:
        return None
    return data


def _ms(xs: Any) -> float:
    from bench.common import median

    return median([float(x) * 1000 for x in xs]) if isinstance(xs, list) and xs else float("nan")


def adapt_start(raw: dict[str, Any]) -> dict[str, Any] | None:
    """bench/start.py's own result keys -> goals, tables and series for the report."""
    from bench.common import goal

    goals = []
    rows: list[list[Any]] = []
    start = raw.get("start") or {}
    many = raw.get("many") or {}
    lv = raw.get("libvirt")
    tv_ms = _ms(start.get("tapvirt_start_s"))
    if start:
        direct = _ms(start.get("direct_qemu_to_qmp_s"))
        goals.append(goal("tapvirt start / bare QEMU until QMP", tv_ms / direct, "<=",
                          float(start.get("goal", 1.5))))
        rows += [["tapvirt start (until running)"
                  + (", no supervisor" if start.get("tapvirt_start_supervised_s") else ""),
                  round(tv_ms), "1.00"]]
        if start.get("tapvirt_start_supervised_s"):
            sup_ms = _ms(start["tapvirt_start_supervised_s"])
            goals.append(goal("tapvirt start with a supervisor / bare QEMU until QMP",
                              sup_ms / direct, "<=", float(start.get("goal", 1.5))))
            rows.append(["tapvirt start, with a supervisor (TAPVIRT_SUPERVISOR=always)",
                         round(sup_ms), f"{sup_ms / tv_ms:.2f}"])
        rows.append(["bare QEMU, same argv and fds, until QMP answers", round(direct),
                     f"{direct / tv_ms:.2f}"])
    if isinstance(lv, dict) and lv.get("virsh_start_s"):
        virsh = _ms(lv["virsh_start_s"])
        rows.append(["virsh start (libvirt session, warm daemon)", round(virsh),
                     f"{virsh / tv_ms:.2f}"])
        if start:
            goals.append(goal("virsh start (warm) / tapvirt start", virsh / tv_ms, ">=", 8.0))
        if lv.get("first_call_s"):
            cold = float(lv["first_call_s"]) * 1000
            rows.append(["first virsh call, cold (spawns libvirtd; `virsh define`)",
                         round(cold), f"{cold / tv_ms:.2f}"])
        procs = lv.get("processes_outside_qemu") or []
        if procs:
            rows.append([f"libvirt outside QEMU: {len(procs)} process(es), RSS / PSS MiB "
                         "(shared by the user's guests)",
                         f"{sum(p['rss_mib'] for p in procs):.1f} / "
                         f"{sum(p['pss_mib'] for p in procs):.1f}", ""])
    elif lv:
        rows.append(["virsh start (libvirt session)", str(lv), ""])
    tables = []
    if rows:
        tables.append({"title": "Start (ms, median)", "columns": ["what", "ms", "vs tapvirt"],
                       "rows": rows})
    if many:
        goals.append(goal(f"{many.get('guests')} paused guests: last 10 / first 10 starts",
                          float(many["ratio"]), "<=", float(many.get("goal", 1.1))))
        if "own_ratio" in many:  # tapvirt's own share: start minus QEMU's spawn -> QMP
            goals.append(goal(f"{many.get('guests')} paused guests: tapvirt's own share, "
                              "last 10 / first 10", float(many["own_ratio"]), "<=", 1.1))
        for count, mib in (raw.get("pss_per_guest_at_mib") or {}).items():
            goals.append(goal(f"PSS outside QEMU per running guest, {count} guests",
                              float(mib), "<=", 3.0, "MiB"))
        rss = many.get("supervisor_rss_mib", {})
        pss = many.get("supervisor_pss_mib", {})
        goals.append(goal("supervisor RSS per running guest (mean)", float(rss.get("mean", 0)),
                          "<=", float(many.get("rss_goal_mib", 15)), "MiB"))
        mode = many.get("supervisor_mode", "always")
        tables.append({"title": f"Scale: {many.get('guests')} guests one after another (-S), "
                                f"TAPVIRT_SUPERVISOR={mode}",
                       "columns": ["measure", "value"],
                       "rows": [["processes tapvirt keeps running outside QEMU",
                                 many.get("processes_outside_qemu", many.get("guests"))],
                                ["first 10 starts (median ms)", round(many["first"] * 1000)],
                                ["last 10 starts (median ms)", round(many["last"] * 1000)],
                                ["tapvirt's own share, first / last 10 (median ms)",
                                 f"{float(many.get('own_first', 0)) * 1000:.0f} / "
                                 f"{float(many.get('own_last', 0)) * 1000:.0f}"],
                                ["supervisor RSS mean / max (MiB)",
                                 f"{rss.get('mean', 0):.1f} / {rss.get('max', 0):.1f}"],
                                ["supervisor PSS mean / max (MiB)",
                                 f"{pss.get('mean', 0):.1f} / {pss.get('max', 0):.1f}"],
                                ["SIGKILL of QEMU -> 'shut off' (median ms)"
                                 + (" (no supervisor: by the next `domstate`)"
                                    if mode == "auto" else ""),
                                 round(_ms(many.get("sigkill_to_shut_off_s")))],
                                ["tapvirt list with them running (ms)",
                                 round(float(many.get("list_s", 0)) * 1000)]]})
    return {"suite": "start", "command": "sudo PYTHONPATH=src python3 -m bench.start",
            "goals": goals, "tables": tables,
            "series": {"per_guest_ms": [float(x) * 1000 for x in many.get("start_s", [])]},
            "raw": raw}


ADAPTERS = {"bench.start": adapt_start}


def _stream(argv: list[str], env: dict[str, str]) -> tuple[str, int]:
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write("    " + line)
        sys.stdout.flush()
        lines.append(line)
    return "".join(lines), proc.wait()


def run_suites(names: list[str], quick: bool, results: dict[str, Any]) -> None:
    for name in names:
        runs = []
        for args in suite_commands(name, quick):
            if not available(args[0]):
                print(f"== {name}: {args[0]} is not in this checkout; skipped", flush=True)
                runs.append({"module": args[0], "missing": True, "args": args})
                continue
            print(f"== {name}: python -m {' '.join(args)}", flush=True)
            load = loadavg()
            data, text, rc, seconds = run_module(args)
            runs.append({"module": args[0], "args": args, "rc": rc, "seconds": round(seconds, 1),
                         "load_before": load, "load_after": loadavg(), "data": data,
                         "text": text[-6000:]})
        results["suites"][name] = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": quick, "runs": runs}


# -- rendering --------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v).replace("|", "\\|")


def md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def all_goals(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in ORDER:
        runs = (results["suites"].get(name) or {}).get("runs", [])
        for run in runs:
            for g in (run.get("data") or {}).get("goals", []):
                # several runs (e.g. --links 1000 and 10000): say which one a goal is from
                label = f" (`{' '.join(run['args'][1:])}`)" if len(runs) > 1 else ""
                found.append((name, {**g, "name": g["name"] + label}))
    return found


def render(results: dict[str, Any], plots: dict[str, list[str]], plot_dir: str = "perf") -> str:
    facts = results.get("facts", {})
    lines = [
        "# Performance",
        "",
        "<!-- generated by `python -m bench.report`; do not edit by hand -->",
        "",
        "Regenerate everything (all suites, about 20 minutes on 2 cores) as root from the "
        "repository:",
        "",
        "```sh",
        "sudo PYTHONPATH=src /opt/tapvirt/venv/bin/python -m bench.report",
        "# a subset:   ... -m bench.report --only datapath   (other suites keep their last "
        "results)",
        "# smoke run:  ... -m bench.report --quick --out /tmp/perf.md --plots /tmp/perf",
        "```",
        "",
        "Each section names the command that reproduces its numbers. **Read ratios, not "
        "absolute numbers**: the machine is a 2-core VM shared with other work (load "
        "average below), single numbers swing by ±30 %, and the guests run under TCG "
        "(no KVM), where the guest CPU is the bottleneck of every network path.",
        "",
        "## Machine",
        "",
    ]
    lines += md_table(["fact", "value"], [
        ["date of this report", results.get("generated", "?")],
        ["kernel", facts.get("kernel", "?")],
        ["CPU", f"{facts.get('cpus', '?')} x {facts.get('cpu_model', '?')}"],
        ["memory", f"{facts.get('mem_gib', '?')} GiB"],
        ["accelerator", "TCG (`-accel tcg`; KVM is not usable on this machine type)"],
        ["QEMU", facts.get("qemu", "?")],
        ["iperf3 / passt / libvirt (Debian versions)",
         f"{facts.get('iperf3', '?')} / {facts.get('passt', '?')} / {facts.get('libvirt', '?')}"],
        ["Python", facts.get("python", "?")],
        ["load average before / after the run",
         f"{results.get('load_before', '?')} / {results.get('load_after', '?')}"],
    ])
    lines += ["", "## Goals", ""]
    goals = all_goals(results)
    if goals:
        lines += md_table(["suite", "goal", "measured", "target", "met"], [
            [s, g["name"], f"{g['value']:.2f} {g['unit']}", f"{g['goal']} {g['unit']}",
             "yes" if g["ok"] else "**no**"] for s, g in goals])
    else:
        lines.append("No suite has reported goals yet.")
    for name in ORDER:
        lines += ["", f"## {SECTION_TITLES[name]}", ""]
        suite = results["suites"].get(name)
        if not suite:
            lines.append("Not run yet.")
            continue
        lines.append(f"Run {suite['date']}" + (" (**quick smoke run: numbers are not "
                                                 "meaningful**)" if suite.get("quick") else "")
                     + ".")
        lines += ["", *SECTION_TEXT.get(name, [])]
        for run in suite["runs"]:
            lines += _render_run(run)
        for png in plots.get(name, []):
            lines += ["", f"![{name}]({plot_dir}/{png})"]
        lines += ["", *SECTION_NOTES.get(name, [])]
    return "\n".join(lines).rstrip() + "\n"


def _render_run(run: dict[str, Any]) -> list[str]:
    out: list[str] = [""]
    if run.get("missing"):
        return [*out, f"`{run['module']}` is not in this checkout yet."]
    data = run.get("data")
    if data:
        out += [f"Command: `{data.get('command', '')}` ({run['seconds']:.0f} s, load "
                f"{run['load_before'][0]} -> {run['load_after'][0]})"]
        for t in data.get("tables", []):
            out += ["", f"**{t['title']}**", "", *md_table(t["columns"], t["rows"])]
            if t.get("note"):
                out += ["", f"*{t['note']}*"]
        argvs = data.get("series", {}).get("argv") or {}
        if argvs:
            out += ["", "The network part of the QEMU command line of each case "
                    "(tapvirt's read back from the running QEMU):", "", "```text"]
            for case, argv in argvs.items():
                out.append(f"{case:<13} {' '.join(_nic_args(argv))}")
            out.append("```")
        return out
    out += [f"Command: `python -m {' '.join(run['args'])}` (exit {run['rc']}, "
            f"{run['seconds']:.0f} s)", "", "```text", run.get("text", "").rstrip(), "```"]
    return out


def _nic_args(argv: list[str]) -> list[str]:
    """-netdev and the virtio-net -device of an argv, as a user would type them."""
    out: list[str] = []
    for opt, val in itertools.pairwise(argv):
        if opt == "-netdev" or (opt == "-device" and "virtio-net" in val):
            out += [opt, f"'{val}'" if val.startswith("{") else val]
    return out


SECTION_TITLES = {
    "connect": "1. Interface connect (tapvirt vs raw open + TUNSETIFF)",
    "start": "2-3. Start and scale (tapvirt start vs bare QEMU vs virsh)",
    "datapath": "4. Data path (TCG, iperf3)",
    "cli": "5. CLI start-up",
}

SECTION_TEXT: dict[str, list[str]] = {
    "start": [
        "Side by side in one run, as the benchmark's unprivileged user: `tapvirt start` "
        "until the guest runs, the same QEMU argv and tap fds started directly until QMP "
        "answers, and libvirt's session mode (`virsh -c qemu:///session`, same XML: one "
        "NIC on a precreated tap with `managed='no'`; libvirt-daemon/libvirt-clients are "
        "bench-only dependencies here, installed by scripts/install-deps for the oracle; "
        "no test needs them). tapvirt starts on both of its paths, interleaved: without a "
        "supervisor (`TAPVIRT_SUPERVISOR=auto`: this one-NIC guest needs none, QEMU is "
        "spawned by the launcher and runs alone) and with one (`=always`, the default for "
        "now). The scale table starts 100 paused guests one after another on the path its "
        "title names (`bench.start --supervisor`); tapvirt's own share is each start minus "
        "QEMU's spawn -> QMP time from the trace of whoever spawned QEMU. PSS is from "
        "/proc/PID/smaps_rollup of every process tapvirt keeps running outside QEMU (the "
        "supervisors; none without them), per running guest.",
        "",
        "Issue 14 so far: `start`/`create`/`destroy` are parsed without argparse "
        "(cli/fast.py, checked against argparse in tests), the supervisor runs as "
        "`python -I -S -B`, installs byte-compile (scripts/install-deps, Containerfile), and "
        "guests that need nothing supervised can run without a supervisor "
        "(docs/lifecycle.md, \"Guests without a supervisor\"; opt-in for now). Not done: "
        "that path as the default, one supervisor per user for the guests that need one, "
        "spawning QEMU paused before the definition is parsed, a dataclass-free model on "
        "the start path, a virt-install-sized domain in this table.",
        "",
        "When the run's load average (Machine, above) is far over the 2 cores, the times "
        "here are mostly queueing for CPU, for tapvirt, QEMU and libvirt alike; read the "
        "ratios of one run, measured side by side, not absolute times across runs. Memory "
        "does not depend on load: a supervisor is ~7.4 MiB PSS per guest, libvirt's "
        "daemons ~23 MiB PSS shared by all of a user's guests, a guest without supervisor "
        "nothing outside QEMU.",
    ],
    "connect": [
        "Per interface: tapvirt's lookup + checks + open of a precreated tap, against a raw "
        "`open(/dev/net/tun)` + `TUNSETIFF` + close, interleaved in one unprivileged process, "
        "with few and with many other links in the namespace.",
        "",
        "*Why a back-to-back connect gets slower after many links appear anywhere on the "
        "host (issue 14):* `perf` of the loop shows the extra time as `mutex_spin_on_owner` "
        "on RTNL in `TUNSETIFF`/`TUNGETIFF`/`TUNSETOFFLOAD` (every tun ioctl takes RTNL), in "
        "the tap's close and in `RTM_GETLINK`, while a kworker runs `linkwatch_event -> "
        "__linkwatch_run_queue` holding RTNL. The kernel queues a link event for every new "
        "link on the host, works them off at about 100 per second, and each attach of an "
        "up tap (an urgent event) walks the rest of that host-wide list under RTNL. So it is "
        "no step of tapvirt's: any RTNL-taking call right after an attach or detach waits, "
        "and the wait grows with the number of *recent* link events host-wide (N/100 s after "
        "N links were made), not with the number of links. `--settle S` measures again S "
        "seconds later. Not made flat: tapvirt cannot avoid the kernel's RTNL wait; a real "
        "start attaches each tap once and hands it over, so it pays it at most once per "
        "interface.",
    ],
    "datapath": [
        "Every QEMU (and passt) runs as an unprivileged user with no capabilities in a "
        "namespace the benchmark creates; iperf3's client runs on the host side of the "
        "namespace, its server in the guest (Debian cloud kernel, busybox initramfs, 256 MiB). "
        "Rounds are interleaved (a,b,c then c,b,a). *tapvirt default* is a domain XML with "
        "nothing but `<interface type='ethernet'><target dev='...' managed='no'/><model "
        "type='virtio'/>`, run through tapvirt's parse -> connect -> argv -> spawn -> QMP "
        "`cont`; the other cases are hand-written QEMU command lines with the same guest, "
        "machine, memory and CPUs.",
    ],
    "cli": [
        "Wall time of the console-script entry point (what `tapvirt` runs), with this "
        "checkout's `src` on the path; CPU time (user + system) is shown because a loaded "
        "machine inflates wall time but hardly CPU time.",
    ],
}

SECTION_NOTES: dict[str, list[str]] = {
    "datapath": [
        "**Reading these numbers.**",
        "",
        "- Under TCG the guest's emulated CPU is the bottleneck of every path, so what wins "
        "is whatever moves the fewest, largest packets through the guest. A tap opened with "
        "`IFF_VNET_HDR` lets the guest hand 64 KB TSO/GSO segments and partial checksums to "
        "the host (QEMU negotiates the offloads with `TUNSETOFFLOAD`); without it every "
        "segment is cut to the 1500-byte MTU and checksummed in the guest, which is why "
        "*novnet* runs at a fraction of the tap's speed. slirp terminates TCP inside QEMU's "
        "main loop; passt does it in its own process but, at guest MTU 1500, moves "
        "MTU-sized frames over a unix socket. With guest MTU 65520 (passt's own default "
        "when the guest takes its address by DHCP) passt gets much closer "
        "(the project's reference run, e2e-recipe.md §6, measured 0.73x / 0.71x of the tap); add "
        "`--cases passt-65520` to measure it.",
        "- tapvirt's default for `<model type='virtio'/>` on a precreated tap is exactly "
        "the fast configuration: it opens the tap with `IFF_VNET_HDR` (host/tap.py, "
        "`attach_flags`), passes the fd with `-netdev {\"type\":\"tap\",\"fd\":...}` "
        "and lets QEMU read vnet_hdr from the fd (the `vnet_hdr=` option is invalid with "
        "`fd=`), and adds `host_mtu` only when the device's MTU is not 1500. The "
        "`-netdev`/`-device` pair tapvirt produced is shown above next to the hand-written "
        "one: apart from ids and the option ROM they are the same.",
        "- While other tenants loaded the machine (load average 4-6), single *tapvirt* / "
        "*hand* pairs differed by up to 30 % either way, more often in the hand-written "
        "command's favour; in a quiet period (load below 1) they agreed within a few "
        "percent. The differences were chased with diagnostic cases (`--cases tapvirt,"
        "tapvirt-api,hand,hand-rom,hand-setsid`: tapvirt's modules without the supervisor, "
        "the hand command with the NIC option ROM, QEMU in a session of its own as the "
        "supervisor runs it) and by sampling QEMU's per-thread CPU time during a run (the "
        "same split, ~80 % vCPU thread and ~33 % main loop, for both): nothing in "
        "tapvirt's configuration made a consistent difference. *best hand-tuned* is the "
        "faster of *hand* and *hand-rxq* per direction, which favours the hand side "
        "slightly (the larger of two noisy numbers).",
        "- guest -> host against passt sits at the goal's edge (about 2.5x; "
        "e2e-recipe.md §6 measured 2.4x): passt's guest-to-host path is its strong side, "
        "and tapvirt's guest->host is bounded by the guest's own transmit path under TCG "
        "(the hand-written command is no faster). Nothing on tapvirt's side of the tap "
        "is left to tune there.",
        "- Multiqueue: Linux guests enable as many queue pairs as they have vCPUs. Under "
        "TCG on two shared host cores a second queue has little to work with (the guest's "
        "iperf3 3.12 server is single-threaded, and the two vCPU threads compete with the "
        "host side for the same two cores); with two streams host->guest the multiqueue "
        "guest also saw many TCP retransmits under load (reordering across the queues). "
        "So the multiqueue row shows that the configuration works end to end (a 2-fd "
        "`multi_queue` tap, `mq=on`, `vectors=6`), not the gain multiqueue gives with KVM "
        "(Cloud Hypervisor reports +37 % for 2 queue pairs).",
        "- Not tapvirt's: TCG itself (no KVM on this machine type, no `/dev/vhost-net`), "
        "and the noise of a shared 2-core host.",
    ],
    "cli": [
        "`tapvirt --version` imports nothing but `tapvirt` and `tapvirt.cli.main`. `tapvirt list` "
        "loads argparse, the verbs' registration and the lifecycle API (runtime state "
        "files), not the XML parser: `tapvirt.domains.store` imports `conf.parse` and "
        "`conf.format` (and with them lxml) only when a definition is read or written. "
        "The remaining import time is mostly the typed model (`tapvirt.conf.model`, "
        "dataclasses and enums) and `tapvirt.errors`.",
    ],
}


def plot_all(results: dict[str, Any], outdir: Path) -> dict[str, list[str]]:
    from bench import plots

    outdir.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for name in ORDER:
        suite = results["suites"].get(name)
        if not suite:
            continue
        datas = [r["data"] for r in suite["runs"] if r.get("data")]
        if not datas:
            continue
        made[name] = plots.plot_suite(name, datas, outdir)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--quick", action="store_true", help="smoke run of every suite")
    ap.add_argument("--render", action="store_true", help="no runs, only re-render")
    ap.add_argument("--out", type=Path, default=DOC, help=f"Markdown file ({DOC})")
    ap.add_argument("--plots", type=Path, default=PLOTS, help=f"PNG directory ({PLOTS})")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    if not args.render and os.geteuid() != 0 and any(n != "cli" for n in names):
        print("bench/report.py needs root for connect, start and datapath "
              "(namespaces, users, taps); use --only cli or --render otherwise", file=sys.stderr)
        return 2
    store = args.plots / "results.json"
    results: dict[str, Any] = {"suites": {}}
    if store.is_file():
        results = json.loads(store.read_text())
    if not args.render:
        results["load_before"] = loadavg()
        results["facts"] = machine_facts()
        run_suites(names, args.quick, results)
        results["load_after"] = loadavg()
        results["generated"] = datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%d %H:%M UTC")
    args.plots.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(results, indent=1) + "\n")
    made = plot_all(results, args.plots)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(args.plots.resolve(), args.out.resolve().parent)
    args.out.write_text(render(results, made, rel))
    print(f"wrote {args.out} and {sum(len(v) for v in made.values())} plot(s) in {args.plots}")
    failed = [n for n in names for r in results["suites"].get(n, {}).get("runs", [])
              if r.get("rc") not in (0, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
