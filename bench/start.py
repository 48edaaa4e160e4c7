"""Start-up cost of guests (issue #4), measured side by side in one run:

1. `tapvirt start NAME` until the guest runs, against the same QEMU command (read back
   from the running guest) started directly with the same tap fds until QMP answers.
   Goal: <= 1.3x. Both paths of tapvirt, interleaved: without a supervisor
   (TAPVIRT_SUPERVISOR=auto, the guest needs none) and with one (=always).
2. N guests started one after another (`--paused`: QEMU -S, no guest code runs), each
   on its own precreated tap: launcher wall time per guest, the last 10 against the
   first 10. Goal: <= 1.1x. Memory of what tapvirt keeps running outside QEMU, per
   guest (VmRSS, and PSS; none without supervisors). Goal: <= 3 MiB PSS. `--supervisor`
   picks the path of these guests (default auto: no supervisor).
3. `tapvirt --version` and `tapvirt list` (with the N guests) wall time.
4. `virsh start` (libvirt session mode, same guest, same tap) where libvirt is installed.

Runs as root: makes a namespace `tv-bench-*`, a user, taps and a private tun node; the
measured side runs as that user with no capabilities (a timer process inside the
namespace runs each command, so `ip netns exec`/`setpriv` are not part of the numbers).

    cd REPO && sudo PYTHONPATH=src python3 -m bench.start [--quick] [--guests N] [--json]
        [--supervisor auto|always]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import guest
from tests.support.reaper import become_subreaper, reap_orphans
from tests.support.sandbox import (
    AsUser,
    CodeCopy,
    Netns,
    User,
    is_root,
    private_tun_node,
    unique,
    unprivileged_python,
    world_readable_dir,
)

GOAL_START = 1.3  # issue 14: one NIC on a precreated tap
GOAL_SCALING = 1.1
GOAL_RSS_MIB = 15.0
BRIDGE_IP = "10.213.5.1"

# Runs as the user: each job is argv; prints wall seconds per job (and its output on error).
TIMER = r'''
import json, subprocess, sys, time
jobs = json.loads(sys.stdin.read())
out = []
for argv in jobs:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    out.append({"s": time.perf_counter() - t0, "rc": p.returncode, "t0": time.time() - (
                    time.perf_counter() - t0),
                "err": p.stderr[-800:] if p.returncode else "",
                "trace": [l for l in p.stderr.splitlines() if "tapvirt-trace" in l]})
print(json.dumps(out))
'''

# Runs as the user: the QEMU argv of a tapvirt guest, started directly with freshly
# attached tap fds under the same numbers; seconds from spawn until QMP answers.
DIRECT = r'''
import fcntl, json, os, socket, struct, subprocess, sys, time
argv, taps, tun, qmp, rounds = json.loads(sys.stdin.read())
res = []
for _ in range(rounds):
    fds = []
    for name, want in taps:
        fd = os.open(tun, os.O_RDWR | os.O_CLOEXEC)
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", name.encode(), 0x2 | 0x1000 | 0x4000))
        if fd != want:
            os.dup2(fd, want, inheritable=False)
            os.close(fd)
        fds.append(want)
    if os.path.exists(qmp):
        os.unlink(qmp)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(qmp)
            f = s.makefile("rwb")
            f.readline()
            f.write(b'{"execute":"qmp_capabilities"}\n'); f.flush()
            f.readline()
            break
        except OSError:
            s.close()
            if p.poll() is not None:
                raise SystemExit("QEMU exited")
            time.sleep(0.002)
    res.append(time.perf_counter() - t0)
    f.write(b'{"execute":"quit"}\n'); f.flush()
    p.wait()
    s.close()
    for fd in fds:
        os.close(fd)
print(json.dumps(res))
'''


T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Bench:
    def __init__(self, quick: bool, guests: int, rounds: int, mode: str = "auto") -> None:
        self.quick = quick
        self.mode = mode
        self.n = guests
        self.rounds = rounds
        self.stack = contextlib.ExitStack()
        self.results: dict[str, Any] = {}

    def setup(self) -> None:
        self.image = guest.build()
        self.scratch = world_readable_dir("tv-bench-")
        self.stack.callback(shutil.rmtree, self.scratch, True)
        self.code = CodeCopy.create()
        self.stack.callback(self.code.close)
        # an installed tapvirt has .pyc files; the copy gets them too, or every measured
        # command would compile ~40 modules from source (~60 ms)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(self.code.root)],
                       check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
        subprocess.run(["chmod", "-R", "a+rX", str(self.code.root)], check=True)
        self.user = User.create(self.scratch)
        self.stack.callback(self.user.close)
        self.netns = Netns.create("tv-bench")
        self.stack.callback(self.netns.close)
        self.stack.callback(self.stop_all)
        self.tun = private_tun_node(self.scratch, self.user.uid, self.user.gid)
        self.xdg = self.scratch / "xdg"
        self.xdg.mkdir(mode=0o700)
        os.chown(self.xdg, self.user.uid, self.user.gid)
        self.bridge = unique("tvbbr")
        self.netns.ip("link", "add", self.bridge, "type", "bridge")
        self.netns.ip("addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        self.netns.ip("link", "set", self.bridge, "up")
        self.as_user = AsUser(self.user, self.netns, self.code,
                              env={"XDG_RUNTIME_DIR": str(self.xdg),
                                   "TAPVIRT_TUN_NODE": str(self.tun)})
        self.py = unprivileged_python()

    def taps(self, n: int, prefix: str) -> list[str]:
        names = [f"{prefix}{i}" for i in range(n)]
        batch = "".join(f"tuntap add mode tap user {self.user.name} vnet_hdr name {t}\n"
                        f"link set {t} master {self.bridge} up\n" for t in names)
        subprocess.run(["ip", "-n", self.netns.name, "-batch", "-"], input=batch, text=True,
                       check=True, capture_output=True)
        return names

    def xml(self, name: str, tap: str, mac: str, boot: bool) -> str:
        os_part = (f"<kernel>{self.image.kernel}</kernel><initrd>{self.image.initrd}</initrd>"
                   f"<cmdline>{self.image.cmdline(ip='10.213.5.2/24')}</cmdline>"
                   if boot else "")
        return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>"
                f"{192 if boot else 32}</memory><vcpu>1</vcpu><os><type arch='x86_64' "
                f"machine='pc'>hvm</type>{os_part}</os><features><acpi/></features><devices>"
                f"<interface type='ethernet'><mac address='{mac}'/><target dev='{tap}' "
                f"managed='no'/><model type='virtio'/></interface></devices></domain>")

    def define_all(self, docs: dict[str, str]) -> None:
        code = ("import json, sys\nfrom tapvirt.domains.store import Store\ns = Store()\n"
                "for name, xml in json.loads(sys.stdin.read()).items():\n"
                "    s.define(xml, source=name)\n")
        proc = self.as_user.run([self.py, "-c", code], input=json.dumps(docs), timeout=600)
        if proc.returncode:
            raise SystemExit(f"define failed: {proc.stderr}")

    def timed(self, jobs: list[list[str]], timeout: float = 1800) -> list[dict[str, Any]]:
        proc = self.as_user.run([self.py, "-c", TIMER], input=json.dumps(jobs),
                                timeout=timeout)
        if proc.returncode:
            raise SystemExit(f"timer failed: {proc.stderr}")
        res: list[dict[str, Any]] = json.loads(proc.stdout)
        for r, argv in zip(res, jobs, strict=True):
            if r["rc"]:
                raise SystemExit(f"{' '.join(argv)} failed: {r['err']}")
        return res

    def tv(self, *args: str) -> list[str]:
        return [self.py, "-m", "tapvirt.cli.main", *args]

    def timed_as(self, mode: str, jobs: list[list[str]]) -> list[dict[str, Any]]:
        """timed() with TAPVIRT_SUPERVISOR=mode for the jobs."""
        self.as_user.env["TAPVIRT_SUPERVISOR"] = mode
        try:
            return self.timed(jobs)
        finally:
            del self.as_user.env["TAPVIRT_SUPERVISOR"]

    def state(self, name: str) -> dict[str, Any]:
        st: dict[str, Any] = json.loads((self.xdg / "tapvirt" / name / "state.json").read_text())
        return st

    # -- 1. start vs direct ---------------------------------------------------------------

    def start_vs_direct(self) -> None:
        (tap,) = self.taps(1, "tvbs")
        self.define_all({"b0": self.xml("b0", tap, "52:54:00:be:00:01", boot=True)})
        for mode in ("always", "auto"):  # warm caches
            self.timed_as(mode, [self.tv("start", "b0"), self.tv("destroy", "b0")])
        tv_times: list[float] = []
        supervised: list[float] = []
        direct: list[float] = []
        for _ in range(self.rounds):
            # interleaved, so that the host's load hits all three alike
            tv_times.append(self.timed_as("auto", [self.tv("start", "b0")])[0]["s"])
            assert self.state("b0")["direct"], "b0 should run without a supervisor"
            self.timed([self.tv("destroy", "b0")])
            supervised.append(self.timed_as("always", [self.tv("start", "b0")])[0]["s"])
            qemu = self.state("b0")["qemu_pid"]
            argv = Path(f"/proc/{qemu}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            fdnums = sorted({int(f) for f in os.listdir(f"/proc/{qemu}/fd")
                             if "iff:\t" + tap in Path(f"/proc/{qemu}/fdinfo/{f}").read_text()})
            self.timed([self.tv("destroy", "b0")])
            qmp = str(self.scratch / "direct.qmp")
            argv = [a.replace(str(self.xdg / "tapvirt" / "b0" / "qmp.sock"), qmp)
                    .replace(str(self.xdg / "tapvirt" / "b0" / "console.log"),
                             str(self.scratch / "direct.console")) for a in argv]
            (self.scratch / "direct.console").touch()
            os.chown(self.scratch / "direct.console", self.user.uid, self.user.gid)
            os.chmod(self.scratch, 0o777)
            self.direct_job = [argv, [[tap, fdnums[0]]], str(self.tun), qmp, 1]
            direct += self.direct()
        self.results["start"] = {
            "tapvirt_start_s": tv_times, "tapvirt_start_supervised_s": supervised,
            "direct_qemu_to_qmp_s": direct,
            "ratio": median(tv_times) / median(direct),
            "ratio_supervised": median(supervised) / median(direct), "goal": GOAL_START}

    def phases(self, res: dict[str, Any], name: str) -> dict[str, float]:
        """Durations between consecutive trace points of one start (launcher + supervisor)."""
        points = [(res["t0"], "exec")]
        lines = list(res["trace"]) + [
            line for line in (self.xdg / "tapvirt" / name / "supervisor.log").read_text()
            .splitlines() if "tapvirt-trace" in line]
        for line in lines:
            parts = line.split("tapvirt-trace ", 1)[1].split(maxsplit=2)
            points.append((float(parts[0]), parts[2].split(" at ")[0]))
        points.append((res["t0"] + res["s"], "exit"))
        points.sort()
        return {f"{a[1]} -> {b[1]}": b[0] - a[0] for a, b in itertools.pairwise(points)}

    @staticmethod
    def pss_mib(pid: int) -> float:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        return int(rollup.split("\nPss:")[1].split()[0]) / 1024

    def qemu_share(self, res: dict[str, Any], name: str) -> float:
        """QEMU's spawn -> QMP answered, from the trace of whoever spawned it (the
        supervisor's log, or the launcher's own stderr for a guest without one)."""
        stamps = {}
        for line in list(res["trace"]) + (self.xdg / "tapvirt" / name / "supervisor.log"
                                          ).read_text().splitlines():
            if "tapvirt-trace" in line:
                parts = line.split("tapvirt-trace ", 1)[1].split(maxsplit=2)
                stamps[parts[2]] = float(parts[0])
        return stamps["qmp answered"] - stamps["qemu spawned"]

    def direct(self, rounds: int = 1) -> list[float]:
        """Seconds from spawn until QMP answers, QEMU started directly as the user."""
        job = list(self.direct_job)
        job[-1] = rounds
        os.chmod(self.scratch, 0o777)
        try:
            proc = self.as_user.run([self.py, "-c", DIRECT], timeout=120,
                                    input=json.dumps(job))
        finally:
            os.chmod(self.scratch, 0o755)
        if proc.returncode:
            raise SystemExit(f"direct QEMU failed: {proc.stderr}")
        res: list[float] = json.loads(proc.stdout)
        return res

    # -- 2./3. many guests, memory, list ----------------------------------------------------

    def many(self) -> None:
        taps = self.taps(self.n, "tvbm")
        self.define_all({f"m{i}": self.xml(f"m{i}", t, f"52:54:00:bf:{i // 256:02x}:{i % 256:02x}",
                                           boot=False) for i, t in enumerate(taps)})
        self.as_user.env["TAPVIRT_TRACE"] = "1"
        self.as_user.env["TAPVIRT_SUPERVISOR"] = self.mode
        # PSS of everything tapvirt runs outside QEMU (the supervisors), per running guest,
        # with 1, 10, 50 ... guests (issue 14's goal: <= 3 MiB at each count)
        marks = sorted({c for c in (1, 10, 50, self.n) if c <= self.n})
        res: list[dict[str, Any]] = []
        pss_at: dict[int, float] = {}
        try:
            for count in marks:
                res += self.timed([self.tv("start", f"m{i}", "--paused")
                                   for i in range(len(res), count)])
                pss_at[count] = sum(self.pss_mib(pid) for i in range(count)
                                    if (pid := self.state(f"m{i}")["supervisor_pid"])) / count
        finally:
            del self.as_user.env["TAPVIRT_TRACE"]
            del self.as_user.env["TAPVIRT_SUPERVISOR"]
        self.results["pss_per_guest_at_mib"] = pss_at
        times = [r["s"] for r in res]
        k = min(10, self.n // 2)
        # QEMU's own part of each start (supervisor trace: spawned -> QMP answered)
        qemu_s = [self.qemu_share(r, f"m{i}") for i, r in enumerate(res)]
        phases = [self.phases(r, f"m{i}") for i, r in enumerate(res)]
        # launcher and supervisor run in parallel: the order of their trace points (and
        # so the names of the steps between them) may differ from start to start
        phase_names = [p for p in phases[0] if all(p in ph for ph in phases)]
        self.results["phases_first_last_ms"] = {
            p: (round(median([ph[p] for ph in phases[:k]]) * 1000, 1),
                round(median([ph[p] for ph in phases[-k:]]) * 1000, 1)) for p in phase_names}
        own = [t - q for t, q in zip(times, qemu_s, strict=True)]
        rss, pss = [0.0], [0.0]  # no supervisors: nothing outside QEMU
        sups = [pid for i in range(self.n) if (pid := self.state(f"m{i}")["supervisor_pid"])]
        if sups:
            rss, pss = [], []
        for pid in sups:
            status = Path(f"/proc/{pid}/status").read_text()
            rss.append(int(status.split("VmRSS:")[1].split()[0]) / 1024)
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss.append(int(rollup.split("\nPss:")[1].split()[0]) / 1024)
        # is QEMU itself slower with N guests around? (the same direct start as in 1.)
        direct_loaded = self.direct(3)
        # how fast the supervisor notices QEMU's end: SIGKILL -> state "shut off"; for a
        # guest without one, the next command: SIGKILL -> `domstate` has said "shut off"
        detect = []
        for i in range(min(5, self.n)):
            st = self.state(f"m{i}")
            t0 = time.perf_counter()
            os.kill(st["qemu_pid"], signal.SIGKILL)
            if not st["supervisor_pid"]:
                while Path(f"/proc/{st['qemu_pid']}").exists() and \
                        time.perf_counter() - t0 < 10:
                    reap_orphans()
                    time.sleep(0.002)
                self.timed([self.tv("domstate", f"m{i}")])
            while self.state(f"m{i}")["state"] != "shut off":
                if time.perf_counter() - t0 > 10:
                    break
                time.sleep(0.002)
            detect.append(time.perf_counter() - t0)
        version = [r["s"] for r in self.timed([self.tv("--version")] * 10)]
        listing = [r["s"] for r in self.timed([self.tv("list")] * 5)]
        listing_all = [r["s"] for r in self.timed([self.tv("list", "--all")] * 5)]
        self.results["many"] = {
            "guests": self.n, "start_s": times, "supervisor_mode": self.mode,
            "processes_outside_qemu": len(sups),
            "first": median(times[:k]), "last": median(times[-k:]),
            "ratio": median(times[-k:]) / median(times[:k]), "goal": GOAL_SCALING,
            "qemu_part_s": qemu_s, "own_first": median(own[:k]), "own_last": median(own[-k:]),
            "own_ratio": median(own[-k:]) / median(own[:k]),
            "supervisor_rss_mib": {"mean": statistics.mean(rss), "max": max(rss)},
            "supervisor_pss_mib": {"mean": statistics.mean(pss), "max": max(pss)},
            "rss_goal_mib": GOAL_RSS_MIB,
            "sigkill_to_shut_off_s": detect,
            "direct_qemu_to_qmp_with_guests_s": direct_loaded,
            "version_s": median(version), "list_s": median(listing),
            "list_all_s": median(listing_all),
        }
        self.stop_all()

    # -- 4. libvirt ------------------------------------------------------------------------

    def libvirt(self) -> None:
        if shutil.which("virsh") is None or shutil.which("libvirtd") is None:
            self.results["libvirt"] = "not installed"
            return
        # libvirt takes any device whose /dev/tap<ifindex> exists for a macvtap, and /dev is
        # shared by all namespaces, where low ifindexes are common (kernel-facts §9): move
        # the namespace's ifindex counter up first (it never goes back), then check
        churn = "".join("tuntap add mode tap name tvbz\ntuntap del mode tap name tvbz\n"
                        for _ in range(300))
        subprocess.run(["ip", "-n", self.netns.name, "-batch", "-"], input=churn, text=True,
                       check=True, capture_output=True)
        for attempt in range(100):
            (tap,) = self.taps(1, f"tvbl{attempt}-")
            info = self.netns.link_json(tap)
            assert info is not None
            if not Path(f"/dev/tap{info['ifindex']}").exists():
                break
        xml = self.scratch / "lv.xml"
        xml.write_text(self.xml("tvlv", tap, "52:54:00:be:00:09", boot=True).replace(
            "<devices>", "<devices><controller type='usb' model='none'/>"
            "<memballoon model='none'/>"))
        xml.chmod(0o644)
        env = (f"HOME={self.user.home} XDG_RUNTIME_DIR={self.xdg} PATH=/usr/sbin:/usr/bin:"
               f"/sbin:/bin USER={self.user.name} LOGNAME={self.user.name}")
        # libvirt opens /dev/net/tun itself: bind the private node over it in a private
        # mount namespace; the session daemon forked by the first virsh inherits both.
        script = (f"mount --bind {self.tun} /dev/net/tun && exec setpriv "
                  f"--reuid={self.user.uid} --regid={self.user.gid} --clear-groups "
                  f"--inh-caps=-all env -i {env} {self.py} -c \"$TIMER\" < $JOBS > $OUT")
        uri = "qemu:///session"
        jobs = [["virsh", "-c", uri, "define", str(xml)]]
        for _ in range(self.rounds):
            jobs += [["virsh", "-c", uri, "start", "tvlv"], ["virsh", "-c", uri, "destroy", "tvlv"]]
        jobs.append(["virsh", "-c", uri, "undefine", "tvlv"])
        jobfile = self.scratch / "lvjobs.json"
        jobfile.write_text(json.dumps(jobs))
        jobfile.chmod(0o644)
        outfile = self.scratch / "lvout.json"
        outfile.touch()
        os.chown(outfile, self.user.uid, self.user.gid)
        # the session daemon keeps inherited fds: no pipes, or we would wait for its exit
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns.name, "unshare", "-m", "--propagation",
             "private", "sh", "-c", script], env={**os.environ, "TIMER": TIMER,
                                                   "JOBS": str(jobfile), "OUT": str(outfile)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # libvirt daemonizes its QEMU, which we adopt as subreaper: reap it, or libvirt's
        # destroy waits for a zombie to vanish
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            reap_orphans()
            time.sleep(0.02)
        # what libvirt keeps running for the user outside QEMU (the session daemon stays
        # until its idle timeout): processes, RSS and PSS, shared by all of the user's guests
        daemons = []
        for pid in subprocess.run(["pgrep", "-u", str(self.user.uid)], capture_output=True,
                                  text=True, check=False).stdout.split():
            with contextlib.suppress(OSError, IndexError, ValueError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                if comm.startswith("qemu"):
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
                daemons.append({"comm": comm, "rss_mib": int(
                    status.split("VmRSS:")[1].split()[0]) / 1024,
                    "pss_mib": self.pss_mib(int(pid))})
        try:
            res = json.loads(outfile.read_text())
        except ValueError:
            self.results["libvirt"] = f"failed (exit {proc.returncode})"
            return
        starts = [r["s"] for r, j in zip(res, jobs, strict=True) if j[3] == "start"]
        bad = [r["err"] for r in res if r["rc"]]
        self.results["libvirt"] = {"virsh_start_s": starts, "errors": bad[:2],
                                   "processes_outside_qemu": daemons,
                                   # the first virsh call spawns the session daemon: cold
                                   "first_call_s": res[0]["s"] if res else None}

    def stop_all(self) -> None:
        root = self.xdg / "tapvirt" if hasattr(self, "xdg") else None
        if root is None or not root.is_dir():
            return
        sups = []
        for d in root.iterdir():
            with contextlib.suppress(Exception):
                st = json.loads((d / "state.json").read_text())
                if st.get("state") != "shut off" and st.get("supervisor_pid"):
                    os.kill(st["supervisor_pid"], signal.SIGTERM)
                    sups.append(st["supervisor_pid"])
                elif st.get("state") != "shut off" and st.get("qemu_pid"):  # no supervisor
                    os.kill(st["qemu_pid"], signal.SIGTERM)
                    sups.append(st["qemu_pid"])
        deadline = time.monotonic() + 60
        while sups and time.monotonic() < deadline:
            reap_orphans()
            sups = [p for p in sups if Path(f"/proc/{p}").exists()]
            time.sleep(0.05)
        # libvirt's session daemons of the bench user: by pid
        out = subprocess.run(["pgrep", "-u", str(self.user.uid)], capture_output=True,
                             text=True, check=False).stdout.split()
        for pid in out:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        reap_orphans()


def report(res: dict[str, Any]) -> str:
    lines = []
    s = res.get("start")
    if s:
        lines.append(f"start: tapvirt start until running {median(s['tapvirt_start_s']) * 1000:.0f}"
                     f" ms vs the same QEMU directly until QMP answers "
                     f"{median(s['direct_qemu_to_qmp_s']) * 1000:.0f} ms (medians of "
                     f"{len(s['direct_qemu_to_qmp_s'])}): {s['ratio']:.2f}x (goal <= "
                     f"{s['goal']}x)")
        if s.get("tapvirt_start_supervised_s"):
            lines.append(f"  with a supervisor (TAPVIRT_SUPERVISOR=always): "
                         f"{median(s['tapvirt_start_supervised_s']) * 1000:.0f} ms: "
                         f"{s['ratio_supervised']:.2f}x")
    m = res.get("many")
    if m:
        lines.append(f"{m['guests']} guests one after another (--paused): first 10 "
                     f"{m['first'] * 1000:.0f} ms, last 10 {m['last'] * 1000:.0f} ms per start:"
                     f" {m['ratio']:.2f}x (goal <= {m['goal']}x)")
        lines.append(f"  tapvirt's own part (start minus QEMU's spawn until QMP answers): first 10 "
                     f"{m['own_first'] * 1000:.0f} ms, last 10 {m['own_last'] * 1000:.0f} ms: "
                     f"{m['own_ratio']:.2f}x")
        lines.append(f"  (QEMU alone, spawn until QMP answers: "
                     f"{median(res['start']['direct_qemu_to_qmp_s']) * 1000:.0f} ms with no guests,"
                     f" {median(m['direct_qemu_to_qmp_with_guests_s']) * 1000:.0f} ms with "
                     f"{m['guests']} guests)" if s else "")
        lines.append(f"guests' supervisor mode {m.get('supervisor_mode', 'always')}: "
                     f"{m.get('processes_outside_qemu', m['guests'])} process(es) outside QEMU")
        lines.append(f"supervisor memory per guest: RSS mean {m['supervisor_rss_mib']['mean']:.1f}"
                     f" MiB, max {m['supervisor_rss_mib']['max']:.1f} MiB (goal <= "
                     f"{m['rss_goal_mib']:g}); PSS mean {m['supervisor_pss_mib']['mean']:.1f} MiB")
        lines.append(f"SIGKILL to QEMU -> state 'shut off': median "
                     f"{median(m['sigkill_to_shut_off_s']) * 1000:.0f} ms, max "
                     f"{max(m['sigkill_to_shut_off_s']) * 1000:.0f} ms (goal <= 1 s)")
        lines.append(f"tapvirt --version {m['version_s'] * 1000:.0f} ms; tapvirt list "
                     f"({m['guests']} running) {m['list_s'] * 1000:.0f} ms; list --all "
                     f"{m['list_all_s'] * 1000:.0f} ms")
    pa = res.get("pss_per_guest_at_mib")
    if pa:
        lines.append("  PSS outside QEMU per running guest: " + ", ".join(
            f"{v:.1f} MiB with {k}" for k, v in pa.items()) + " (goal <= 3 MiB)")
    ph = res.get("phases_first_last_ms")
    if ph:
        lines.append("  phases of a start, median ms of the first -> the last guests:")
        lines += [f"    {k:<42} {a:6.1f} -> {b:6.1f}" for k, (a, b) in ph.items()]
    lv = res.get("libvirt")
    if isinstance(lv, dict) and lv["virsh_start_s"]:
        lines.append(f"libvirt (session): virsh start {median(lv['virsh_start_s']) * 1000:.0f} ms"
                     f" (median of {len(lv['virsh_start_s'])})"
                     + (f"; errors: {lv['errors']}" if lv["errors"] else ""))
        if lv.get("first_call_s"):
            lines.append(f"  first virsh call, cold (spawns the session daemon): "
                         f"{lv['first_call_s'] * 1000:.0f} ms")
        procs = lv.get("processes_outside_qemu") or []
        lines.append(f"  outside QEMU: {len(procs)} process(es) "
                     + ", ".join(f"{p['comm']} RSS {p['rss_mib']:.1f} / PSS {p['pss_mib']:.1f} MiB"
                                 for p in procs))
    elif lv:
        lines.append(f"libvirt: {lv if not isinstance(lv, dict) else lv['errors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.start", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: 12 guests, 2 rounds")
    p.add_argument("--guests", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-libvirt", action="store_true")
    p.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    p.add_argument("--supervisor", choices=("auto", "always"), default="auto",
                   help="TAPVIRT_SUPERVISOR of the scale run's guests (default auto)")
    ns = p.parse_args(argv)
    if not is_root():
        print("bench.start needs root (namespaces, users, taps)", file=sys.stderr)
        return 2
    n, rounds = (12, 2) if ns.quick else (ns.guests, ns.rounds)
    become_subreaper()
    b = Bench(ns.quick, n, rounds, ns.supervisor)
    with b.stack:
        progress("setting up (guest, namespace, user)")
        b.setup()
        progress("tapvirt start vs direct QEMU")
        b.start_vs_direct()
        progress(f"{n} guests one after another")
        b.many()
        if not ns.no_libvirt:
            progress("libvirt session mode")
            b.libvirt()
        progress("cleaning up")
    print(report(b.results))
    print("reproduce (from the repository root): sudo PYTHONPATH=src "
          f"{sys.executable} -m bench.start" + (" --quick" if ns.quick else ""))
    if ns.json:
        print(json.dumps(b.results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
