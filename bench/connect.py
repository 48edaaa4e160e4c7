"""Per-interface connect cost: tapvirt's lookup + checks + open against a raw
open + TUNSETIFF loop, in the same process, with few and with many links present.

Runs as root: it makes a scratch namespace `tv-bench-*`, a user and a private tun node,
precreates one tap owned by that user, and runs the measured side as that user with no
capabilities. Then it adds N other links (persistent taps made with raw ioctls) and
measures again. Goals: connect <= 3x raw; with N links within 10 % of the empty case.

    cd REPO && sudo PYTHONPATH=src python3 -m bench.connect [--quick] [--links N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any

from tests.support.sandbox import (
    AsUser,
    CodeCopy,
    Netns,
    User,
    is_root,
    private_tun_node,
    world_readable_dir,
)

GOAL_RATIO = 3.0
GOAL_SCALING = 0.10

# The measured side: interleaves raw attaches and tapvirt connects so that machine noise
# hits both alike; every sample includes the close (detaching is part of the cost).
CHILD = r'''
import fcntl, json, os, struct, time
from tapvirt.host.linux import LinuxHost
NAME, NODE, ROUNDS, WARMUP = __PARAMS__
try:
    from tapvirt.qemu import checks as _checks  # noqa: F401  (pure; timed when present)
    have_checks = True
except ImportError:
    have_checks = False
IFREQ = struct.pack("16sH22x", NAME.encode(), 0x2 | 0x1000 | 0x4000)
clock = time.perf_counter_ns
host = LinuxHost()
raw, full, lookup = [], [], []
for i in range(WARMUP + ROUNDS):
    t0 = clock()
    fd = os.open(NODE, os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, 0x400454CA, IFREQ)
    os.close(fd)
    t1 = clock()
    info = host.lookup(NAME)
    t2 = clock()
    fds = host.open_tap(NAME, tun_node=NODE, vnet_hdr=True, queues=1)
    fds.close()
    t3 = clock()
    assert info is not None and info.name == NAME
    if i >= WARMUP:
        raw.append(t1 - t0)
        full.append(t3 - t1)
        lookup.append(t2 - t1)
print(json.dumps({"raw": raw, "full": full, "lookup": lookup, "checks": have_checks}))
'''

# Root, inside the namespace: N persistent taps via raw ioctls (~0.25 ms each).
FILL = r'''
import fcntl, os, struct, sys
n, prefix = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", f"{prefix}{i}".encode(),
                                                 0x2 | 0x1000 | 0x8000))
        fcntl.ioctl(fd, 0x400454CB, 1)
    finally:
        os.close(fd)
'''


def median(xs: list[int]) -> float:
    s = sorted(xs)
    return float(s[len(s) // 2])


def pct(xs: list[int], p: float) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(len(s) * p))])


def measure(as_user: AsUser, node: str, rounds: int, warmup: int) -> dict[str, Any]:
    code = CHILD.replace("__PARAMS__", repr(("benchtap", node, rounds, warmup)))
    proc = as_user.python(code, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"measured side failed:\n{proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def summary(label: str, data: dict[str, Any]) -> dict[str, float]:
    out = {k: median(data[k]) / 1000 for k in ("raw", "full", "lookup")}
    out["full_p99"] = pct(data["full"], 0.99) / 1000
    out["raw_p99"] = pct(data["raw"], 0.99) / 1000
    print(f"  {label:<22} raw open+TUNSETIFF {out['raw']:7.1f} us (p99 {out['raw_p99']:.1f})"
          f" | tapvirt connect {out['full']:7.1f} us (p99 {out['full_p99']:.1f})"
          f" of which lookup {out['lookup']:.1f} us")
    return out


def count_links(netns: Netns) -> int:
    out = netns.ip("-o", "link", "show").stdout
    return len(out.splitlines())


def setup_ns(netns: Netns, uid: int) -> None:
    netns.ip("tuntap", "add", "dev", "benchtap", "mode", "tap", "user", str(uid), "vnet_hdr")
    netns.ip("link", "set", "benchtap", "up")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: seconds, not minutes")
    ap.add_argument("--links", type=int, default=None, help="other links (default 10000)")
    ap.add_argument("--rounds", type=int, default=None, help="samples per case")
    ap.add_argument("--blocks", type=int, default=None,
                    help="alternate the two namespaces this many times (noise control)")
    args = ap.parse_args(argv)
    if not is_root():
        print("bench/connect.py needs root (creates a namespace, a user and taps)",
              file=sys.stderr)
        return 2
    links = args.links if args.links is not None else (500 if args.quick else 10000)
    rounds = args.rounds or (400 if args.quick else 6000)
    blocks = args.blocks or (2 if args.quick else 10)
    per_block = max(1, rounds // blocks)
    warmup = 50
    scratch = world_readable_dir("tv-bench-")
    code = CodeCopy.create()
    user = User.create(scratch)
    few = Netns.create("tv-bench-")
    many = Netns.create("tv-bench-")
    try:
        node = str(private_tun_node(scratch, user.uid, user.gid))
        setup_ns(few, user.uid)
        setup_ns(many, user.uid)
        t0 = time.monotonic()
        many.exec(sys.executable, "-c", FILL, str(links), "tvf", timeout=1200)
        fill_s = time.monotonic() - t0
        counts = count_links(few), count_links(many)
        print(f"tapvirt connect benchmark: {per_block * blocks} samples per case in {blocks} "
              f"alternating blocks (+{warmup} warm-up each), unprivileged uid {user.uid}; "
              f"{links} extra links made in {fill_s:.1f} s; medians")
        samples: list[dict[str, list[int]]] = [
            {"raw": [], "full": [], "lookup": []} for _ in range(2)]
        have_checks = False
        for b in range(blocks):
            order = (0, 1) if b % 2 == 0 else (1, 0)  # neither case always goes first
            for which in order:
                ns = (few, many)[which]
                data = measure(AsUser(user, ns, code), node, per_block, warmup)
                have_checks = bool(data["checks"])
                for key in ("raw", "full", "lookup"):
                    samples[which][key] += data[key]
        if not have_checks:
            print("  (tapvirt.qemu.checks not importable: connect = lookup + open)")
        empty = summary(f"{counts[0]} links", samples[0])
        full = summary(f"{counts[1]} links", samples[1])
        ratio = empty["full"] / empty["raw"]
        ratio_many = full["full"] / full["raw"]
        scaling = full["full"] / empty["full"] - 1
        lookup_scaling = full["lookup"] / empty["lookup"] - 1
        print(f"ratio connect/raw, {counts[0]} links: {ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x) "
              f"{'OK' if ratio <= GOAL_RATIO else 'MISSED'}")
        print(f"ratio connect/raw, {counts[1]} links: {ratio_many:.2f}x")
        print(f"connect with {counts[1]} links vs {counts[0]}: {scaling * 100:+.1f} % "
              f"(goal within {GOAL_SCALING * 100:.0f} %) "
              f"{'OK' if abs(scaling) <= GOAL_SCALING else 'MISSED'}; "
              f"lookup alone {lookup_scaling * 100:+.1f} %")
        print(f"reproduce: cd {os.getcwd()} && PYTHONPATH=src {sys.executable} -m bench.connect"
              + (" --quick" if args.quick else "")
              + (f" --links {links}" if args.links is not None else "")
              + (f" --rounds {rounds}" if args.rounds is not None else "")
              + (f" --blocks {blocks}" if args.blocks is not None else ""))
        ok = ratio <= GOAL_RATIO and abs(scaling) <= GOAL_SCALING
        return 0 if ok or args.quick else 1
    finally:
        few.close()
        many.close()  # deleting the namespace removes all its links in one batch
        user.close()
        code.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
