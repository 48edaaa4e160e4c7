"""Pre-flight check of `<numatune>` against the host: QEMU binds guest memory with
mbind(2), which an unprivileged process may do for the NUMA nodes its cpuset allows
(`Mems_allowed_list` in /proc/self/status); any other node makes QEMU fail at start
("cannot bind memory to host NUMA nodes"), so `start` refuses it by name first, like
libvirt's "NUMA node N is unavailable". The same for a memory device's
`<source><nodemask>`."""

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
    # (subject, host nodes, what to write instead, what to remove)
    wanted: list[tuple[str, tuple[int, ...], str, str]] = []
    if nt is not None:
        wanted.append(("<numatune>", nt.host_nodes, "nodeset=", "<numatune>"))
    wanted += [(f"<memory model='{m.model}'> {m.alias}", m.source_nodes,
                "a <nodemask>", "its <source><nodemask>") for m in dom.devices.memories
               if m.source_nodes]
    if not wanted:
        return
    ok = allowed_nodes() if allowed is None else allowed
    have = ",".join(str(n) for n in sorted(ok))
    for what, nodes, instead, remove in wanted:
        missing = [n for n in nodes if n not in ok]
        if missing:
            raise TapvirtError(
                NUMA_NODE_UNAVAILABLE, f"domain {dom.name} {what}",
                f"NUMA node {missing[0]} is unavailable (this user may allocate from host "
                f"nodes {have})",
                f"use {instead} within {have} (see `numactl -H` and Mems_allowed_list in "
                f"/proc/self/status), or remove {remove}")
