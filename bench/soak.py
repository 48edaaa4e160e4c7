"""Soak (issue 13): many lifecycles in a row, then count what is left.

1. G guests at once, each C start/destroy cycles on its own precreated tap (the guest
   runs: `start` without --paused, `destroy` as soon as it returns);
2. T create/destroy cycles of a paused transient guest;
3. one long-lived supervisor serving L live requests (domif-setlink down/up through
   its control socket): its RSS and fd count over the requests.

After each phase: the user has no process left, no tap has a holder, the namespace has
exactly the links it had, no device node was made, every runtime directory holds only
the expected files (transient ones none). Supervisor RSS is sampled per start (phase 1)
and every few requests (phase 3): "flat" = the last samples' median within 5% of the
first ones'.

Runs as root (namespace, user, taps); tapvirt itself runs as that user without
capabilities. Full run (the numbers in docs/lifecycle.md):

    sudo PYTHONPATH=src:. python3 -m bench.soak [--guests 4 --cycles 50 --creates 200
                                                 --requests 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.e2e.lab import Lab
from tests.support.reaper import become_subreaper, reap_orphans
from tests.support.sandbox import is_root

EXPECTED_FILES = {"lock", "supervisor.lock", "state.json", "console.log", "console.log.old",
                  "qemu.log", "supervisor.log", "domain.xml", "ops.lock"}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _user_processes(uid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if proc.stat().st_uid == uid:
                    state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state not in ("Z", "X"):
                        out.append(int(proc.name))
            except OSError:
                continue
    return out


def _tap_holders(devs: set[str]) -> dict[str, list[int]]:
    held: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for f in (proc / "fdinfo").iterdir():
                text = f.read_text()
                for dev in devs:
                    if f"iff:\t{dev}\n" in text:
                        held.setdefault(dev, []).append(int(proc.name))
        except OSError:
            continue
    return held


def _links(lab: Lab) -> list[str]:
    out = lab.netns.ip("-j", "link", "show").stdout
    return sorted(str(link["ifname"]) for link in json.loads(out))


def _nodes(lab: Lab) -> set[str]:
    """Device nodes the user could use: /dev/tapN owned by it, anything in the lab's
    scratch directory (other /dev/tapN come and go with other users' macvtaps)."""
    found = set()
    for p in [*Path("/dev").glob("tap*"), *lab.scratch.rglob("*")]:
        try:
            st = p.lstat()
        except OSError:
            continue
        if (st.st_mode & 0o170000) in (0o020000, 0o060000) and (
                p.parent == lab.scratch or st.st_uid == lab.user.uid):
            found.add(str(p))
    return found


def _leftovers(lab: Lab, names: list[str], taps: set[str], links: list[str],
               nodes: set[str], *, transient: bool = False) -> dict[str, Any]:
    """What a finished phase left behind (empty lists/dicts: nothing)."""
    deadline = time.monotonic() + 10
    while _user_processes(lab.user.uid) and time.monotonic() < deadline:
        time.sleep(0.05)  # supervisors in their last milliseconds
    reap_orphans()
    files = {}
    for name in names:
        d = lab.rundir(name)
        present = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        extra = present if transient else sorted(set(present) - EXPECTED_FILES)
        if extra:
            files[name] = extra
    return {"processes": _user_processes(lab.user.uid), "tap_holders": _tap_holders(taps),
            "links_changed": _links(lab) != links, "new_nodes": sorted(_nodes(lab) - nodes),
            "runtime_files": files}


def _spread(samples: list[int]) -> dict[str, Any]:
    k = max(1, min(10, len(samples) // 3))
    first, last = statistics.median(samples[:k]), statistics.median(samples[-k:])
    return {"first_kib": first, "last_kib": last, "max_kib": max(samples),
            "ratio": round(last / first, 3) if first else None, "samples": len(samples)}


def soak(lab: Lab, *, guests: int, cycles: int, creates: int, requests: int,
         progress: Any = None) -> dict[str, Any]:
    say = progress or (lambda msg: None)
    links0, nodes0 = _links(lab), _nodes(lab)
    res: dict[str, Any] = {"guests": guests, "cycles": cycles, "creates": creates,
                           "requests": requests}

    # 1. G guests, C start/destroy cycles each, all at once
    taps = [lab.tap() for _ in range(guests)]
    links1 = _links(lab)
    names = [f"tv-soak{i}" for i in range(guests)]
    for i, (name, tap) in enumerate(zip(names, taps, strict=True)):
        lab.define(name, lab.domain_xml(name, _iface(f"52:54:00:5a:00:{i:02x}", tap),
                                        lab.image.cmdline(ip=f"10.213.0.{150 + i}/24")))
    before = {t: lab.snapshot(t) for t in taps}
    rss: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def loop(name: str) -> None:
        for c in range(cycles):
            p = lab.tv("start", name, "--json", check=False)
            if p.returncode:
                with lock:
                    errors.append(f"{name} start {c}: {p.stdout}{p.stderr}"[-400:])
                continue
            try:
                sup = lab.state(name)["supervisor_pid"]
                with lock:
                    rss.append(_rss_kib(sup))
            except (OSError, ValueError, KeyError):
                pass
            d = lab.tv("destroy", name, "--json", check=False)
            if d.returncode:
                with lock:
                    errors.append(f"{name} destroy {c}: {d.stdout}{d.stderr}"[-400:])

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["cycles_s"] = round(time.monotonic() - t0, 1)
    res["cycle_errors"] = errors
    res["cycle_supervisor_rss"] = _spread(rss) if rss else {}
    res["cycle_leftovers"] = _leftovers(lab, names, set(taps), links1, nodes0)
    res["devices_unchanged"] = {t: lab.snapshot(t) for t in taps} == before
    say(f"phase 1: {guests}x{cycles} cycles in {res['cycles_s']} s, {len(errors)} errors")

    # 2. T create/destroy of a paused transient guest
    tap = taps[0]
    xml = lab.scratch / "tv-soakt.xml"
    xml.write_text(lab.domain_xml("tv-soakt", _iface("52:54:00:5a:01:01", tap),
                                  lab.image.cmdline(ip="10.213.0.160/24")))
    xml.chmod(0o644)
    errors = []
    t0 = time.monotonic()
    for c in range(creates):
        p = lab.tv("create", str(xml), "--paused", "--json", check=False)
        d = lab.tv("destroy", "tv-soakt", "--json", check=False)
        if p.returncode or d.returncode:
            errors.append(f"create {c}: {p.stdout}{p.stderr}{d.stdout}{d.stderr}"[-400:])
    res["creates_s"] = round(time.monotonic() - t0, 1)
    res["create_errors"] = errors
    res["create_leftovers"] = _leftovers(lab, ["tv-soakt"], {tap}, links1, nodes0,
                                         transient=True)
    say(f"phase 2: {creates} creates in {res['creates_s']} s, {len(errors)} errors")

    # 3. one supervisor, L live requests through its control socket
    name = names[0]
    lab.tv("start", name, "--paused")
    sup = lab.state(name)["supervisor_pid"]
    fds0, samples, errors = _fd_count(sup), [_rss_kib(sup)], []
    for r in range(requests):
        p = lab.tv("domif-setlink", name, "net0", "down" if r % 2 == 0 else "up",
                   check=False)
        if p.returncode:
            errors.append(f"request {r}: {p.stdout}{p.stderr}"[-400:])
        if r % 10 == 9:
            samples.append(_rss_kib(sup))
    res["request_errors"] = errors
    res["request_supervisor_rss"] = _spread(samples)
    res["request_supervisor_fds"] = {"before": fds0, "after": _fd_count(sup)}
    lab.tv("destroy", name)
    res["request_leftovers"] = _leftovers(lab, names, set(taps), links1, nodes0)
    res["links_before_taps"] = len(links0)
    say(f"phase 3: {requests} requests, {len(errors)} errors")
    return res


def _iface(mac: str, dev: str) -> str:
    return (f"    <interface type='ethernet'>\n      <mac address='{mac}'/>\n"
            f"      <target dev='{dev}' managed='no'/>\n"
            f"      <model type='virtio'/>\n    </interface>")


def leaks(res: dict[str, Any]) -> list[str]:
    """Every property the soak checks that does not hold, in words (empty: all hold)."""
    bad = []
    for phase in ("cycle", "create", "request"):
        left = res[f"{phase}_leftovers"]
        for key, value in left.items():
            if value:
                bad.append(f"{phase}: {key} = {value}")
        if res[f"{phase}_errors"]:
            bad.append(f"{phase}: {len(res[phase + '_errors'])} errors, first: "
                       f"{res[phase + '_errors'][0]}")
    if not res["devices_unchanged"]:
        bad.append("a precreated tap changed")
    fds = res["request_supervisor_fds"]
    if fds["after"] != fds["before"]:
        bad.append(f"supervisor fds {fds['before']} -> {fds['after']}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guests", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if not is_root():
        print("bench.soak needs root (namespace, user, taps)", file=sys.stderr)
        return 2
    become_subreaper()
    try:
        with Lab.create() as lab:
            res = soak(lab, guests=args.guests, cycles=args.cycles, creates=args.creates,
                       requests=args.requests,
                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        reap_orphans()
    res["leaks"] = leaks(res)
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 1 if res["leaks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
