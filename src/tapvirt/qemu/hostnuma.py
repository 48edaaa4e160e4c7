"""Pre-flight check of `<numatune>` against the host: QEMU binds guest memory with
mbind(2), which an unprivileged process may do for the NUMA nodes its cpuset allows
(`Mems_allowed_list` in /proc/self/status); any other node makes QEMU fail at start
("cannot bind memory to host NUMA nodes"), so `start` refuses it by name first, like
libvirt's "NUMA node N is unavailable"."""

from __future__ import annotations

from tapvirt.conf.model import Domain
from tapvirt.errors import TapvirtError, define

NUMA_NODE_UNAVAILABLE = define(
    "numa-node-unavailable",
    "<numatune> names a host NUMA node this user's processes may not allocate from",
    layer="lifecycle",
)


def allowed_nodes(status: str = "/proc/self/status") -> set[int]:
    with open(status, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Mems_allowed_list:"):
                out: set[int] = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    if part:
                        lo, _, hi = part.partition("-")
                        out.update(range(int(lo), int(hi or lo) + 1))
                return out
    return {0}


def check_numatune(dom: Domain, allowed: set[int] | None = None) -> None:
    nt = dom.numatune
    if nt is None:
        return
    ok = allowed_nodes() if allowed is None else allowed
    missing = [n for n in nt.host_nodes if n not in ok]
    if missing:
        have = ",".join(str(n) for n in sorted(ok))
        raise TapvirtError(
            NUMA_NODE_UNAVAILABLE, f"domain {dom.name} <numatune>",
            f"NUMA node {missing[0]} is unavailable (this user may allocate from host "
            f"nodes {have})",
            f"use nodeset= within {have} (see `numactl -H` and Mems_allowed_list in "
            "/proc/self/status), or remove <numatune>")
