"""Guest throughput (TCG, iperf3 both directions): tapvirt's default configuration on a
precreated tap against a hand-tuned QEMU tap command, the same tap without vnet_hdr,
slirp and passt; and a 2-vCPU guest with 2 queues against the same guest with 1 queue.

Runs as root: it makes a namespace `tv-perf-*` with a bridge and precreated taps owned by
a scratch user, a private tun node, and runs every QEMU (and passt) as that user with no
capabilities inside the namespace. The guest runs `iperf3 -s`; the host side runs
`iperf3 -c` as root in the namespace (host->guest = plain run, guest->host = -R).
Cases run in interleaved rounds (a,b,c then c,b,a) so that drift on a shared machine hits
every case alike; compare ratios, not absolute Mbit/s (TCG: the guest CPU is the limit).

    cd REPO && sudo PYTHONPATH=src python3 -m bench.datapath [--quick] [--rounds R]
        [--seconds S] [--cases tapvirt,hand,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.guest import GuestImage
from tests.support.sandbox import (
    AsUser,
    CodeCopy,
    Netns,
    User,
    is_root,
    private_tun_node,
    unprivileged_python,
    world_readable_dir,
)

from bench.common import (
    Goal,
    Table,
    goal,
    interleaved,
    loadavg,
    machine_facts,
    median,
    reproduce,
    write_json,
)

BRIDGE = "tvbr0"
HOST_IP = "10.213.0.1"
GUEST_IP = "10.213.0.2"
PASST_GW = "10.213.1.1"
PASST_GUEST = "10.213.1.2"
SLIRP_PORT = 5221
PASST_PORT = 5211
MAC = "52:54:00:d0:0a:02"
TAP = "tvptap0"
MQTAP = "tvpmq0"
MEM_MIB = 256

GOAL_VS_HAND = 0.95
GOAL_VS_USERNET = 2.5

# What each case is, in the report's words.
DESCRIPTION: dict[str, str] = {
    "tapvirt": "tapvirt default: `tapvirt create` of a plain `<interface type='ethernet'>`",
    "hand": "hand-written QEMU tap command: fd with IFF_VNET_HDR, virtio-net defaults",
    "hand-rxq": "the same + rx_queue_size=1024 (a larger receive ring)",
    "novnet": "the hand-written command, fd opened without IFF_VNET_HDR",
    "hand-setsid": "the hand-written command, QEMU in a session of its own (as tapvirt's)",
    "hand-rom": "the hand-written command with the NIC's default option ROM",
    "tapvirt-api": "tapvirt's parse/connect/argv/spawn/cont without the supervisor",
    "slirp": "slirp: -netdev user + hostfwd",
    "passt": "passt (-netdev stream), guest MTU 1500",
    "passt-65520": "passt (-netdev stream), guest MTU 65520 (context)",
    "tapvirt-2cpu": "tapvirt default, 2 vCPUs, 1 queue, iperf3 -P 2",
    "tapvirt-mq": "tapvirt default, 2 vCPUs, `<driver queues='2'/>` on a multi_queue tap, -P 2",
}
DEFAULT_CASES = ("tapvirt", "hand", "hand-rxq", "novnet", "slirp", "passt", "tapvirt-2cpu",
                 "tapvirt-mq")
QUICK_CASES = ("tapvirt", "hand", "slirp", "passt")  # one of each launch path
# "best hand-tuned" = the faster of these, per direction
HAND_TUNED = ("hand", "hand-rxq")

# Run as the user: attach to the precreated tap with a raw TUNSETIFF, then become QEMU.
RAW_LAUNCHER = r'''
import fcntl, json, os, struct, sys
p = json.loads(sys.argv[1])
fds = []
for _ in range(p["queues"]):
    fd = os.open(p["node"], os.O_RDWR)
    flags = 0x0002 | 0x1000 | (0x4000 if p["vnet_hdr"] else 0) | (0x0100 if p["queues"] > 1 else 0)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", p["tap"].encode(), flags))
    os.set_inheritable(fd, True)
    fds.append(fd)
argv = [a.replace("{fd}", str(fds[0])).replace("{fds}", ":".join(map(str, fds)))
        for a in p["argv"]]
if p.get("setsid"):
    os.setsid()
os.execvp(argv[0], argv)
'''

# Diagnostic: tapvirt's modules without the supervisor (parse, connect, argv, spawn, cont),
# this process staying QEMU's parent; SIGTERM stops QEMU.
API_LAUNCHER = r'''
import json, signal, sys
from tapvirt.conf.parse import parse_domain_file
from tapvirt.host.linux import LinuxHost
from tapvirt.qemu import process
from tapvirt.qemu.argv import build_argv
from tapvirt.qemu.connect import connect_domain
p = json.loads(sys.argv[1])
dom = parse_domain_file(p["xml"])
with connect_domain(dom, LinuxHost(), tun_node=p["node"]) as conn:
    argv = build_argv(dom, conn.specs(), qmp_socket=p["qmp"], fd_base=None)
    proc = process.spawn(argv, pass_fds=conn.fds(), log_path=p["log"])
conn.close()
signal.signal(signal.SIGTERM, lambda *_: (process.stop(proc), sys.exit(0)))
qmp = process.wait_for_qmp(proc, p["qmp"], log_path=p["log"], timeout=60)
qmp.execute("cont")
qmp.close()
print(proc.pid, flush=True)
proc.wait()
'''

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <interface type='ethernet'>
      <target dev='{tap}' managed='no'/>
      <mac address='{mac}'/>
      <model type='virtio'/>{driver}
    </interface>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
"""


@dataclass
class Lab:
    """The root side: namespace, bridge, taps, user, tun node, guest image, scratch dir."""

    ns: Netns
    user: User
    code: CodeCopy
    scratch: Path
    run_dir: Path
    node: str
    image: GuestImage

    def as_user(self) -> AsUser:
        return AsUser(self.user, self.ns, self.code)


@dataclass
class Running:
    """One booted guest and the processes that belong to it (ended by pid)."""

    case: str
    console: Path
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    qemu_pid: int | None = None
    started: float = 0.0
    argv: list[str] = field(default_factory=list)
    destroy: list[str] | None = None  # `tapvirt destroy NAME` (as the user) for tapvirt's guests

    def stop(self) -> None:
        if self.destroy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(self.destroy, capture_output=True, timeout=30, check=False)
        for proc in reversed(self.procs):  # the guest's launcher/QEMU first, passt last
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(8)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(10)
        if self.qemu_pid is not None and _alive(self.qemu_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.qemu_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# -- setting up -----------------------------------------------------------------------

def make_lab(image: GuestImage) -> Lab:
    scratch = world_readable_dir("tv-perf-")
    code = CodeCopy.create()
    user = User.create(scratch)
    ns = Netns.create("tv-perf-")
    run_dir = scratch / "run"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, user.uid, user.gid)
    ns.ip("link", "add", BRIDGE, "type", "bridge")
    ns.ip("addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    ns.ip("link", "set", BRIDGE, "up")
    uid = str(user.uid)
    ns.exec("ip", "tuntap", "add", "mode", "tap", "user", uid, "group", str(user.gid),
            "name", TAP, "vnet_hdr")
    ns.exec("ip", "tuntap", "add", "mode", "tap", "user", uid, "group", str(user.gid),
            "name", MQTAP, "vnet_hdr", "multi_queue")
    for tap in (TAP, MQTAP):
        ns.ip("link", "set", tap, "master", BRIDGE, "up")
    node = str(private_tun_node(scratch, user.uid, user.gid))
    return Lab(ns, user, code, scratch, run_dir, node, image)


def close_lab(lab: Lab) -> None:
    lab.ns.close()  # kills whatever is left in the namespace, by pid, and deletes the devices
    lab.user.close()
    lab.code.close()
    shutil.rmtree(lab.scratch, ignore_errors=True)


@contextlib.contextmanager
def lab_for(image: GuestImage) -> Iterator[Lab]:
    lab = make_lab(image)
    try:
        yield lab
    finally:
        close_lab(lab)


# -- launching guests -------------------------------------------------------------------

def _base_argv(lab: Lab, console: Path, cmdline: str, vcpus: int) -> list[str]:
    """Everything but the NIC, identical to what tapvirt's argv gives the guest."""
    return ["qemu-system-x86_64", "-name", "guest=perf", "-machine", "pc", "-accel", "tcg",
            "-m", f"{MEM_MIB}", "-smp", str(vcpus), "-no-user-config", "-nodefaults",
            "-display", "none", "-no-reboot",
            "-kernel", str(lab.image.kernel), "-initrd", str(lab.image.initrd),
            "-append", cmdline,
            "-chardev", f"file,id=charserial0,path={console}",
            "-device", "isa-serial,chardev=charserial0,id=serial0,index=0"]


def _nic(netdev: str, extra: str = "") -> list[str]:
    return ["-netdev", netdev, "-device",
            f"virtio-net-pci,netdev=n0,id=net0,mac={MAC},romfile={extra}"]


def guest_cmdline(lab: Lab, case: str) -> str:
    if case == "slirp":
        return lab.image.cmdline(ip="10.0.2.15/24", peer="10.0.2.2", mode="server")
    if case.startswith("passt"):
        # passt answers no ping to its gateway address: skip the boot-time ping
        mtu = 65520 if case == "passt-65520" else None
        return lab.image.cmdline(ip=f"{PASST_GUEST}/24", peer=None, mode="server", mtu=mtu)
    return lab.image.cmdline(ip=f"{GUEST_IP}/24", peer=HOST_IP, mode="server")


def vcpus_of(case: str) -> int:
    return 2 if case in ("tapvirt-2cpu", "tapvirt-mq") else 1


def streams_of(case: str) -> int:
    return 2 if case in ("tapvirt-2cpu", "tapvirt-mq") else 1


def target_of(case: str) -> tuple[str, int]:
    if case == "slirp":
        return "127.0.0.1", SLIRP_PORT
    if case.startswith("passt"):
        return "127.0.0.1", PASST_PORT
    return GUEST_IP, 5201


def _spawn_as_user(lab: Lab, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # `ip netns exec`, setpriv and env all exec: the Popen pid is the final program
        return subprocess.Popen(lab.as_user().argv(argv), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out)


def launch(lab: Lab, case: str, tag: str) -> Running:
    console = lab.run_dir / f"console-{tag}.log"
    log = lab.scratch / f"launch-{tag}.log"
    running = Running(case, console, log)
    cmdline = guest_cmdline(lab, case)
    vcpus = vcpus_of(case)
    py = unprivileged_python()
    running.started = time.monotonic()
    if case.startswith("tapvirt"):
        queues = 2 if case == "tapvirt-mq" else 1
        xml = lab.run_dir / f"dom-{tag}.xml"
        xml.write_text(DOMAIN_XML.format(
            name=f"perf-{tag}", mem=MEM_MIB, vcpus=vcpus, kernel=lab.image.kernel,
            initrd=lab.image.initrd, cmdline=cmdline, tap=MQTAP if queues > 1 else TAP,
            mac=MAC, console=console,
            driver=f"\n      <driver queues='{queues}'/>" if queues > 1 else ""))
        os.chown(xml, lab.user.uid, lab.user.gid)
        if case == "tapvirt-api":
            params: dict[str, Any] = {
                "xml": str(xml), "node": lab.node, "qmp": str(lab.run_dir / f"q-{tag}"),
                "log": str(lab.run_dir / f"qemu-{tag}.log")}
            api = subprocess.Popen(lab.as_user().argv([py, "-c", API_LAUNCHER,
                                                       json.dumps(params)]),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            running.procs.append(api)
            assert api.stdout is not None
            running.qemu_pid = int(api.stdout.readline() or 0) or None
            return running
        # the product's own path: `tapvirt create` returns once QEMU runs (after `cont`)
        user = lab.as_user()
        user.env["TAPVIRT_RUNTIME_DIR"] = str(lab.run_dir / "rt")
        name = f"perf-{tag}"
        running.destroy = user.argv([py, "-m", "tapvirt.cli.main", "destroy", name])
        created = user.tapvirt("create", str(xml), "--tun-node", lab.node, "--json",
                               timeout=90)
        if created.returncode != 0:
            raise RuntimeError(f"tapvirt create failed: {created.stdout} {created.stderr}")
        running.qemu_pid = int(json.loads(created.stdout)["qemu_pid"])
        with open(f"/proc/{running.qemu_pid}/cmdline", "rb") as f:
            running.argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
        return running
    base = _base_argv(lab, console, cmdline, vcpus)
    if case in ("hand", "hand-rxq", "novnet", "hand-setsid", "hand-rom"):
        vnet = case != "novnet"
        net = _nic("tap,id=n0,fd={fd}", ",rx_queue_size=1024" if case == "hand-rxq" else "")
        if case == "hand-rom":
            net[-1] = net[-1].removesuffix(",romfile=")
        params = {"node": lab.node, "tap": TAP, "vnet_hdr": vnet, "queues": 1,
                  "argv": base + net, "setsid": case == "hand-setsid"}
        proc = _spawn_as_user(lab, [py, "-c", RAW_LAUNCHER, json.dumps(params)], log)
        running.procs.append(proc)
        running.qemu_pid = proc.pid  # the launcher execs QEMU
        running.argv = base + net
    elif case == "slirp":
        net = _nic(f"user,id=n0,hostfwd=tcp:127.0.0.1:{SLIRP_PORT}-:5201")
        proc = _spawn_as_user(lab, base + net, log)
        running.procs.append(proc)
        running.qemu_pid = proc.pid
        running.argv = base + net
    elif case.startswith("passt"):
        sock = lab.run_dir / f"passt-{tag}.sock"
        plog = lab.run_dir / f"passt-{tag}.log"
        passt = _spawn_as_user(lab, [
            "passt", "-f", "-4", "-q", "-s", str(sock), "-l", str(plog), "-i", BRIDGE,
            "-a", PASST_GUEST, "-n", "24", "-g", PASST_GW, "-t", f"{PASST_PORT}:5201"], log)
        running.procs.append(passt)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if passt.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"passt did not create its socket: {_tail(log)}")
            time.sleep(0.01)
        net = _nic(f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}")
        proc = _spawn_as_user(lab, base + net, log)
        running.procs.append(proc)
        running.qemu_pid = proc.pid
        running.argv = base + net
    else:
        raise ValueError(f"unknown case {case}")
    return running


def _tail(path: Path, limit: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


def wait_ready(g: Running, timeout: float) -> float:
    """Seconds from launch to the guest's iperf3 server being up (boot + module load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = g.console.read_text(errors="replace") if g.console.exists() else ""
        if "TV-IPERF-SERVER" in text:
            ready = time.monotonic() - g.started
            return ready
        if (g.procs and g.procs[-1].poll() is not None) or (
                g.qemu_pid is not None and not _alive(g.qemu_pid)):
            raise RuntimeError(f"{g.case}: guest ended before its iperf3 server was up: "
                               f"{_tail(g.log)} {_tail(g.console)}")
        time.sleep(0.05)
    raise RuntimeError(f"{g.case}: no TV-IPERF-SERVER within {timeout:g} s: {_tail(g.console)}")


def iperf(lab: Lab, case: str, *, reverse: bool, seconds: int) -> tuple[float, int]:
    """(Mbit/s received, TCP retransmits), host-side iperf3 as root in the namespace; one
    retry on a reset."""
    host, port = target_of(case)
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J",
            "-P", str(streams_of(case)), "--connect-timeout", "5000"]
    if seconds >= 5:
        argv += ["-O", "1"]  # leave out slow start
    if reverse:
        argv.append("-R")
    last = ""
    for attempt in range(2):
        try:
            proc = lab.ns.exec(*argv, check=False, timeout=seconds + 40)
        except subprocess.TimeoutExpired:  # a stalled connection: iperf3 never ends
            data: dict[str, Any] = {"error": f"iperf3 did not end within {seconds + 40} s"}
        else:
            try:
                data = json.loads(proc.stdout)
            except json.JSONDecodeError:
                data = {"error": proc.stderr.strip() or proc.stdout[:300]}
        if "error" not in data:
            end = data["end"]
            return (float(end["sum_received"]["bits_per_second"]) / 1e6,
                    int(end.get("sum_sent", {}).get("retransmits", 0)))
        last = str(data.get("error"))
        if attempt == 0:
            time.sleep(1.0)
    raise RuntimeError(f"{case}: iperf3 {'-R ' if reverse else ''}failed twice: {last}; "
                       f"{network_facts(lab, host)}")


def network_facts(lab: Lab, host: str) -> str:
    """What the namespace knew when a run failed (an unreachable guest: its neighbour
    entry, the tap's carrier, where the bridge learned the MAC, a ping)."""
    facts = []
    for argv in (["ip", "neigh", "show", host], ["ip", "-br", "link", "show", TAP],
                 ["bridge", "fdb", "show", "br", BRIDGE],
                 ["busybox", "ping", "-c", "1", "-W", "2", host]):
        try:
            out = lab.ns.exec(*argv, check=False, timeout=10).stdout
        except subprocess.TimeoutExpired:
            out = "timeout"
        if argv[0] == "bridge":
            out = "\n".join(line for line in out.splitlines() if MAC in line)
        facts.append(f"{argv[0]} {argv[1]}: {' '.join(out.split())[:160]}")
    return "; ".join(facts)


# -- the run ------------------------------------------------------------------------------

def measure_case(lab: Lab, case: str, tag: str, seconds: int) -> dict[str, Any]:
    """Boot one guest, iperf3 both ways, stop it; one sample (RuntimeError on failure)."""
    g = launch(lab, case, tag)
    try:
        boot = wait_ready(g, timeout=120)
        time.sleep(0.3)
        h2g, h2g_retr = iperf(lab, case, reverse=False, seconds=seconds)
        time.sleep(0.5)
        g2h, g2h_retr = iperf(lab, case, reverse=True, seconds=seconds)
        rss = rss_mib(g.qemu_pid)
    finally:
        g.stop()
    print(f"  {case:<13} host->guest {h2g:7.0f}  guest->host {g2h:7.0f} Mbit/s (retransmits "
          f"{h2g_retr}/{g2h_retr})  ready {boot:4.1f} s  QEMU RSS {rss} MiB", flush=True)
    return {"h2g": round(h2g, 1), "g2h": round(g2h, 1), "retransmits": [h2g_retr, g2h_retr],
            "ready_s": round(boot, 2), "qemu_rss_mib": rss, "load1": loadavg()[0],
            "argv": g.argv}


def run_cases(lab: Lab, cases: Sequence[str], rounds: int, seconds: int
              ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]],
                         dict[str, list[str]]]:
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    argvs: dict[str, list[str]] = {}
    failures: dict[str, list[str]] = {}
    for n, (r, case) in enumerate(interleaved(cases, rounds)):
        print(f"  round {r + 1}", end="", flush=True)
        try:
            sample = measure_case(lab, case, f"{n}-{case}", seconds)
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
            # one broken run is recorded, not fatal for the rest
            print(f" {case:<13} FAILED: {exc}", flush=True)
            failures.setdefault(case, []).append(str(exc)[:500])
            continue
        sample["round"] = r
        argv = sample.pop("argv")
        if argv:
            argvs[case] = argv
        samples[case].append(sample)
    return samples, argvs, failures


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for case, rows in samples.items():
        if not rows:
            continue
        # the median: one stalled run (it happens, e.g. passt under load) must not decide
        out[case] = {k: median([r[k] for r in rows]) for k in ("h2g", "g2h")}
        out[case]["ready_s"] = median([r["ready_s"] for r in rows])
        rss = [r["qemu_rss_mib"] for r in rows if r["qemu_rss_mib"] is not None]
        out[case]["qemu_rss_mib"] = median(rss) if rss else float("nan")
    return out


def goals_of(avg: dict[str, dict[str, float]]) -> list[Goal]:
    goals: list[Goal] = []
    if "tapvirt" not in avg:
        return goals
    t = avg["tapvirt"]
    for d, label in (("h2g", "host->guest"), ("g2h", "guest->host")):
        hands = [c for c in HAND_TUNED if c in avg]
        if hands:
            best = max(hands, key=lambda c: avg[c][d])
            goals.append(goal(f"tapvirt default / best hand-tuned tap ({best}), {label}",
                              t[d] / avg[best][d], ">=", GOAL_VS_HAND))
        for other in ("slirp", "passt"):
            if other in avg:
                goals.append(goal(f"tapvirt default / {other} (MTU 1500), {label}",
                                  t[d] / avg[other][d], ">=", GOAL_VS_USERNET))
    return goals


def tables_of(avg: dict[str, dict[str, float]], samples: dict[str, list[dict[str, Any]]],
              rounds: int, seconds: int, failures: dict[str, list[str]]) -> list[Table]:
    base = avg.get("tapvirt")
    rows: list[list[Any]] = []
    for case, rows_of_case in samples.items():
        if case not in avg or case.endswith(("2cpu", "mq")):
            continue
        a = avg[case]
        per = [f"{r['h2g']:.0f}/{r['g2h']:.0f}" for r in rows_of_case]
        rows.append([case, DESCRIPTION[case], round(a["h2g"]), round(a["g2h"]),
                     _ratio(a["h2g"], base["h2g"]) if base else "",
                     _ratio(a["g2h"], base["g2h"]) if base else "",
                     " ".join(per), a["ready_s"], a["qemu_rss_mib"]])
    paired = ""
    if base and "hand" in samples:
        by_round = {r["round"]: r for r in samples["hand"]}
        pairs = [(t, by_round[t["round"]]) for t in samples["tapvirt"] if t["round"] in by_round]
        paired = " Per-round tapvirt / hand (adjacent runs), h->g: " + ", ".join(
            f"{t['h2g'] / h['h2g']:.2f}" for t, h in pairs) + "; g->h: " + ", ".join(
            f"{t['g2h'] / h['g2h']:.2f}" for t, h in pairs) + "."
    tables: list[Table] = [{
        "title": "Throughput, 1 vCPU, MTU 1500 (Mbit/s, median of rounds)",
        "columns": ["case", "what", "host->guest", "guest->host", "h->g vs tapvirt",
                    "g->h vs tapvirt", "per round h->g/g->h", "ready (s)", "QEMU RSS (MiB)"],
        "rows": rows,
        "note": f"{rounds} round(s) of {seconds} s per direction, interleaved; ratio = case / "
                "tapvirt default." + paired
                + "".join(f" {c}: {len(f)} run(s) failed ({f[0][:120]})."
                          for c, f in failures.items()),
    }]
    if "tapvirt-mq" in avg and "tapvirt-2cpu" in avg:
        one, mq = avg["tapvirt-2cpu"], avg["tapvirt-mq"]
        tables.append({
            "title": "Multiqueue: 2 vCPUs, iperf3 -P 2 (Mbit/s)",
            "columns": ["case", "what", "host->guest", "guest->host", "h->g vs 1 queue",
                        "g->h vs 1 queue"],
            "rows": [["tapvirt-2cpu", DESCRIPTION["tapvirt-2cpu"], round(one["h2g"]),
                      round(one["g2h"]), "1.00", "1.00"],
                     ["tapvirt-mq", DESCRIPTION["tapvirt-mq"], round(mq["h2g"]),
                      round(mq["g2h"]), _ratio(mq["h2g"], one["h2g"]),
                      _ratio(mq["g2h"], one["g2h"])]],
            "note": "the guest's iperf3 3.12 server is single-threaded; the 2 streams share it.",
        })
    return tables


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: 1 round of 1 s of {','.join(QUICK_CASES)}")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    ap.add_argument("--seconds", type=int, default=None, help="iperf3 -t (default 10)")
    ap.add_argument("--cases", default=None,
                    help=f"comma-separated subset of {','.join(DESCRIPTION)}")
    ap.add_argument("--json", default=None, metavar="FILE", help="write results as JSON")
    args = ap.parse_args(argv)
    if not is_root():
        print("bench/datapath.py needs root (creates a namespace, a user and taps)",
              file=sys.stderr)
        return 2
    cases = (tuple(args.cases.split(",")) if args.cases
             else QUICK_CASES if args.quick else DEFAULT_CASES)
    unknown = [c for c in cases if c not in DESCRIPTION]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(DESCRIPTION)}")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (1 if args.quick else 10)
    from tests.support.guest import build

    image = build(log=True)
    facts = machine_facts()
    print(f"data path benchmark: {len(cases)} cases x {rounds} round(s) x 2 directions x "
          f"{seconds} s, TCG, load average {facts['loadavg']}", flush=True)
    t0 = time.monotonic()
    with lab_for(image) as lab:
        samples, argvs, failures = run_cases(lab, cases, rounds, seconds)
    avg = summarise(samples)
    goals = goals_of(avg)
    for g in goals:
        print(f"  {g['name']}: {g['value']:.2f}x (goal {g['goal']}) "
              f"{'OK' if g['ok'] else 'MISSED'}")
    cmd = reproduce("bench.datapath", [
        *(["--quick"] if args.quick else []),
        *(["--rounds", str(args.rounds)] if args.rounds else []),
        *(["--seconds", str(args.seconds)] if args.seconds else []),
        *(["--cases", args.cases] if args.cases else [])])
    print(f"reproduce: {cmd}")
    write_json(args.json, {
        "suite": "datapath", "command": cmd, "quick": args.quick,
        "goals": goals, "tables": tables_of(avg, samples, rounds, seconds, failures),
        "series": {"samples": samples, "avg": avg, "argv": argvs, "failures": failures,
                   "descriptions": {c: DESCRIPTION[c] for c in cases}},
        "facts": facts, "wall_s": round(time.monotonic() - t0, 1),
        "load_after": loadavg(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
