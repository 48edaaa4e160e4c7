"""Verbs on running guests that are not hotplug: pause, reboot, link state, statistics,
addresses, the raw monitor.

Every one goes through the guest's supervisor (`tapvirt.domains.control`), which runs
the QMP commands one request at a time and records any state change itself (it is the
only writer of a running guest's state). A verb that computes a change from the current
state (e.g. the next free alias, the new live XML) holds the domain's operations lock
(`RUNTIME/NAME/ops.lock`) from reading that state until the supervisor answered, so
concurrent verbs on one guest serialize instead of racing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tapvirt.domains import api, control
from tapvirt.domains.errors import DOMAIN_BUSY, DOMAIN_NOT_RUNNING
from tapvirt.domains.live_errors import (
    DEVICE_AMBIGUOUS,
    DEVICE_NOT_FOUND,
    HOTPLUG_UNSUPPORTED,
    MONITOR_UNSUPPORTED,
    NO_BALLOON,
    STATS_UNAVAILABLE,
    SUPERVISOR_GONE,
)
from tapvirt.domains.runtime import PAUSED, RUNNING, STARTING, DomainDir, IfaceState, State
from tapvirt.errors import TapvirtError
from tapvirt.qemu.argv.disk import format_node_name

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

OPS_LOCK_WAIT = 60.0  # a hotplug waiting for a guest's answer can take a while


# -- reaching the supervisor ------------------------------------------------------------

def supervised(name: str) -> tuple[DomainDir, State]:
    """The runtime directory and state of a running guest whose supervisor is alive."""
    dd, st = api._running_dir(name)
    if st.state == STARTING:
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", "it is still starting",
                           "wait until `tapvirt domstate` says running, then retry")
    if not dd.supervisor_locked() and not st.direct:
        raise TapvirtError(
            SUPERVISOR_GONE, f"domain {name}",
            "its supervisor was killed: QEMU runs unsupervised and no change can be recorded",
            f"restart the guest: tapvirt destroy {name} && tapvirt start {name}")
    return dd, st


@contextlib.contextmanager
def ops_lock(dd: DomainDir, *, wait: float = OPS_LOCK_WAIT) -> Iterator[None]:
    """One live operation on a guest at a time (they wait for each other)."""
    from tapvirt.domains.runtime import flock_within

    fd = os.open(dd.path / "ops.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if not flock_within(fd, wait):
            raise TapvirtError(
                DOMAIN_BUSY, f"domain {dd.name}",
                f"another live operation has held it for {wait:g} s",
                "wait for it to finish, then retry")
        yield
    finally:
        os.close(fd)


def transact(dd: DomainDir, steps: list[dict[str, Any]], *,
             commit: dict[str, Any] | None = None, fds: list[int] | None = None,
             timeout: float = 60.0) -> list[Any]:
    """Run QMP steps through the supervisor (a guest without one: right here, the same
    way); raise the error it reports."""
    if _direct(dd):
        from tapvirt.domains import direct

        reply = direct.transact(dd, steps, commit or {}, list(fds or []), timeout=timeout)
    else:
        reply = control.request(dd, {"op": "transaction", "steps": steps,
                                     "commit": commit or {}}, fds, timeout=timeout)
    if not reply.get("ok"):
        raise api._error_from_json(reply.get("error") or {})
    results: list[Any] = list(reply.get("results") or [])
    return results


def _direct(dd: DomainDir) -> bool:
    """Whether the guest runs without a supervisor (its record says so and no
    supervisor holds the domain's lock)."""
    if dd.supervisor_locked():
        return False
    try:
        return dd.read().direct
    except TapvirtError:
        return False


def qmp_read(name: str, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One read-only QMP command through the supervisor."""
    dd, _ = supervised(name)
    step: dict[str, Any] = {"execute": command}
    if arguments:
        step["arguments"] = arguments
    return transact(dd, [step])[0]


def live_domain(dd: DomainDir) -> Domain:
    from tapvirt.conf.parse import parse_domain_file

    return parse_domain_file(dd.domain_xml, live=True)


def format_live(dom: Domain, interfaces: list[IfaceState]) -> str:
    from tapvirt.conf.format import format_domain

    return format_domain(dom, live=True,
                         actual_devs={i.alias: i.device for i in interfaces if i.device})


# -- pause, resume, reset, reboot ---------------------------------------------------------

def suspend(name: str) -> State:
    """Pause the guest's vCPUs (QMP stop): state paused, reason user."""
    dd, st = supervised(name)
    with ops_lock(dd):
        st = dd.read()
        if st.state != RUNNING:
            raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}",
                               f"it is {st.state}, not running", f"tapvirt domstate {name}")
        transact(dd, [{"execute": "stop"}], commit={"state": PAUSED, "reason": "user"})
    return dd.read()


def resume(name: str) -> State:
    """Let a paused guest run again (QMP cont), whether it was suspended or started
    with --paused."""
    dd, st = supervised(name)
    with ops_lock(dd):
        st = dd.read()
        if st.state != PAUSED:
            raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}",
                               f"it is {st.state}, not paused",
                               "only a paused guest can be resumed")
        transact(dd, [{"execute": "cont"}], commit={"state": RUNNING, "reason": "unpaused"})
    return dd.read()


def reset(name: str) -> None:
    """Press the reset button (QMP system_reset): no shutdown of the guest OS."""
    dd, _ = supervised(name)
    with ops_lock(dd):
        transact(dd, [{"execute": "system_reset"}], commit={"log": "reset requested"})


REBOOT_MODES = ("acpi", "reset", "agent")
REBOOT_WAIT = 120.0  # a guest without supervisor: how long `reboot` waits for the power-off


def reboot(name: str, *, mode: str | None = None) -> None:
    """Reboot the guest. acpi (default when the guest has ACPI): the power button, and
    once the guest has powered off the supervisor starts a fresh QEMU with the same
    devices (libvirt's "fake reboot"; hot-plugged devices are gone afterwards).
    reset: system_reset, immediate, the guest OS is not asked. agent: the guest agent's
    guest-shutdown mode reboot (the guest OS reboots itself)."""
    dd, _ = supervised(name)
    with ops_lock(dd):
        dom = live_domain(dd)
        chosen = mode or ("acpi" if dom.features.acpi else "reset")
        if chosen not in REBOOT_MODES:
            raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}",
                               f"reboot mode {chosen!r} is not supported",
                               "use --mode acpi, reset or agent")
        if chosen == "agent":
            from tapvirt.domains import agent

            agent.shutdown(name, reboot=True)
            return
        if chosen == "acpi" and not dom.features.acpi:
            raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}",
                               "the guest has no ACPI: it cannot be asked to power off",
                               f"use tapvirt reboot --mode reset {name}, or add <features>"
                               "<acpi/></features> to the definition")
        if chosen == "reset":
            transact(dd, [{"execute": "system_reset"}], commit={"log": "reboot (reset)"})
        elif _direct(dd):  # no supervisor to start a fresh QEMU: libvirt's fake reboot
            from tapvirt.domains.direct import fake_reboot_steps

            transact(dd, fake_reboot_steps(REBOOT_WAIT, name),
                     commit={"log": "reboot (acpi): powered off, reset, resumed"},
                     timeout=REBOOT_WAIT + 30)
        else:
            transact(dd, [{"execute": "system_powerdown"}],
                     commit={"reboot": True, "log": "reboot (acpi) requested"})


# -- interfaces: finding one, link state, counters, addresses -----------------------------

def find_interface(ifaces: list[IfaceState], key: str, *, domain: str) -> IfaceState:
    """virsh's IFACE: the host device name or the MAC (also the alias, e.g. net1)."""
    k = key.lower()
    hits = [i for i in ifaces if k in ((i.device or "").lower(), i.mac.lower(), i.alias.lower())]
    if not hits:
        known = ", ".join(i.device or i.mac for i in ifaces) or "none"
        raise TapvirtError(DEVICE_NOT_FOUND, f"domain {domain}",
                           f"no interface {key!r} (it has: {known})",
                           f"name one from: tapvirt domiflist {domain}")
    if len(hits) > 1:
        raise TapvirtError(DEVICE_AMBIGUOUS, f"domain {domain}",
                           f"{len(hits)} interfaces match {key!r}", "name it by its MAC")
    return hits[0]


def _config_interfaces(name: str) -> tuple[Domain, list[IfaceState]]:
    dom: Domain = api._store().get(name)
    rows = [IfaceState(i.alias or f"net{n}", i.type.value, i.dev, i.model.value, i.mac,
                       link=(i.link_state.value if i.link_state else "up"))
            for n, i in enumerate(dom.devices.interfaces)]
    return dom, rows


def _not_persistent(name: str) -> TapvirtError:
    return TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}",
                        "it has no stored definition (a transient domain)",
                        f"define it first: tapvirt dumpxml {name} > F && tapvirt define F")


def domif_getlink(name: str, iface: str, *, config: bool = False) -> tuple[IfaceState, str]:
    st = api.state_of(name)
    if config or st.state not in (RUNNING, PAUSED):
        if not api._store().exists(name):
            raise _not_persistent(name)
        _, rows = _config_interfaces(name)
        row = find_interface(rows, iface, domain=name)
        return row, row.link
    row = find_interface(st.interfaces, iface, domain=name)
    return row, row.link


def domif_setlink(name: str, iface: str, state: str, *, config: bool = False) -> IfaceState:
    """Link up or down: live through QMP set_link (the guest sees carrier change), or in
    the stored definition with `config`."""
    from tapvirt.conf.model import LinkState

    if state not in ("up", "down"):
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"interface {iface}",
                           f"link state {state!r} is neither up nor down", "say up or down")
    st = api.state_of(name)
    if config or st.state not in (RUNNING, PAUSED):
        return _setlink_config(name, iface, LinkState(state))
    dd, _ = supervised(name)
    with ops_lock(dd):
        st = dd.read()
        row = find_interface(st.interfaces, iface, domain=name)
        dom = live_domain(dd)
        new_rows = [dataclasses.replace(i, link=state) if i.alias == row.alias else i
                    for i in st.interfaces]
        ifaces = tuple(dataclasses.replace(i, link_state=LinkState(state))
                       if i.alias == row.alias else i for i in dom.devices.interfaces)
        new_dom = dataclasses.replace(dom, devices=dataclasses.replace(dom.devices,
                                                                        interfaces=ifaces))
        transact(dd, [{"execute": "set_link",
                       "arguments": {"name": row.alias, "up": state == "up"}}],
                 commit={"interfaces": [dataclasses.asdict(i) for i in new_rows],
                         "live_xml": format_live(new_dom, new_rows)})
        return dataclasses.replace(row, link=state)


def _setlink_config(name: str, iface: str, state: Any) -> IfaceState:
    from tapvirt.conf.format import format_domain

    store = api._store()
    if not store.exists(name):
        raise _not_persistent(name)
    dom, rows = _config_interfaces(name)
    row = find_interface(rows, iface, domain=name)
    ifaces = tuple(dataclasses.replace(i, link_state=state) if i.mac == row.mac else i
                   for i in dom.devices.interfaces)
    store.define(format_domain(dataclasses.replace(
        dom, devices=dataclasses.replace(dom.devices, interfaces=ifaces))))
    return dataclasses.replace(row, link=state.value)


# virsh domifstat's order; for a tap the host's transmit is the guest's receive, so like
# libvirt the counters are swapped (a macvtap's are not: it shares the guest's view)
STAT_FIELDS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop",
               "tx_bytes", "tx_packets", "tx_errs", "tx_drop")


def domifstat(name: str, iface: str) -> tuple[IfaceState, dict[str, int]]:
    """The interface's counters from the host side of its device (netlink IFLA_STATS64,
    readable without privileges), in the guest's view like `virsh domifstat`."""
    st = api.state_of(name)
    if st.state not in (RUNNING, PAUSED):
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", "it is not running",
                           f"start it: tapvirt start {name}")
    row = find_interface(st.interfaces, iface, domain=name)
    if not row.device:
        raise TapvirtError(STATS_UNAVAILABLE, f"interface {row.alias} ({row.mac})",
                           f"a {row.type} interface has no host device to count on",
                           "read the counters inside the guest")
    from tapvirt.host.netlink import RtNetlink

    with RtNetlink() as nl:
        try:
            raw = nl.link_stats(row.device)
        except OSError as exc:
            raise TapvirtError(STATS_UNAVAILABLE, f"device {row.device}",
                               f"netlink refused: {exc.strerror}",
                               "run tapvirt in the namespace that holds the device") from None
    if raw is None:
        raise TapvirtError(STATS_UNAVAILABLE, f"device {row.device}",
                           "it does not exist in this network namespace (deleted?)",
                           "run tapvirt in the namespace that holds the device")
    host = {"rx_bytes": raw["rx_bytes"], "rx_packets": raw["rx_packets"],
            "rx_errs": raw["rx_errors"], "rx_drop": raw["rx_dropped"],
            "tx_bytes": raw["tx_bytes"], "tx_packets": raw["tx_packets"],
            "tx_errs": raw["tx_errors"], "tx_drop": raw["tx_dropped"]}
    if row.type == "direct" or _is_macvtap(row.device):
        return row, host
    return row, {k: host[("tx" if k.startswith("rx") else "rx") + k[2:]] for k in STAT_FIELDS}


def _is_macvtap(dev: str) -> bool:
    from tapvirt.host.netlink import RtNetlink

    with RtNetlink() as nl:
        raw = nl.get_link(name=dev)
    return raw is not None and raw.kind == "macvtap"


@dataclass(frozen=True)
class IfAddr:
    name: str  # the host device (or alias when there is none), like virsh's Name column
    mac: str
    protocol: str  # ipv4 / ipv6
    address: str  # ADDR/PREFIX
    source: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def domifaddr(name: str, *, source: str = "lease", iface: str | None = None) -> list[IfAddr]:
    """The guest's addresses. arp: the neighbour table of the network namespace tapvirt
    runs in, matched by the guest's MACs (prefix 0: the table does not know it).
    agent: the QEMU guest agent (guest-network-get-interfaces). lease: tapvirt runs no
    DHCP server, so there are none."""
    st = api.state_of(name)
    if st.state not in (RUNNING, PAUSED):
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", "it is not running",
                           f"start it: tapvirt start {name}")
    rows = st.interfaces if iface is None else [find_interface(st.interfaces, iface,
                                                               domain=name)]
    if source == "lease":
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}",
                           "tapvirt runs no DHCP server, so it knows no leases",
                           f"use tapvirt domifaddr --source arp {name}")
    if source == "agent":
        return _agent_addresses(name, rows)
    if source != "arp":
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}", f"unknown source {source!r}",
                           "use --source arp")
    from tapvirt.host.netlink import RtNetlink

    with RtNetlink() as nl:
        neigh = nl.neighbours()
    out = []
    for row in rows:
        mac = bytes.fromhex(row.mac.replace(":", ""))
        for _ifindex, ip, lladdr in sorted(neigh, key=lambda n: n[1]):
            if lladdr == mac:
                proto = "ipv6" if ":" in ip else "ipv4"
                out.append(IfAddr(row.device or row.alias, row.mac, proto, f"{ip}/0", "arp"))
    return out


def _agent_addresses(name: str, rows: list[IfaceState]) -> list[IfAddr]:
    """guest-network-get-interfaces, matched to our NICs by MAC (virsh shows the guest's
    names; the loopback and other interfaces without one of our MACs are left out, as
    virsh does for lo)."""
    from tapvirt.domains import agent

    macs = {r.mac.lower() for r in rows}
    out = []
    for gi in agent.interfaces(name):
        mac = str(gi.get("hardware-address", "")).lower()
        if mac not in macs:
            continue
        for ip in gi.get("ip-addresses") or []:
            proto = "ipv6" if ip.get("ip-address-type") == "ipv6" else "ipv4"
            out.append(IfAddr(str(gi.get("name", "?")), mac, proto,
                              f"{ip.get('ip-address')}/{ip.get('prefix', 0)}", "agent"))
    return out


# -- memory, raw monitor ------------------------------------------------------------------

def dommemstat(name: str) -> tuple[dict[str, int], list[TapvirtError]]:
    """actual (from the balloon, or the configured memory without one) and rss (QEMU's
    resident memory), in KiB like virsh; a warning when there is no balloon."""
    dd, st = supervised(name)
    dom = live_domain(dd)
    warnings: list[TapvirtError] = []
    stats: dict[str, int] = {}
    try:
        ballooned = qmp_read(name, "query-balloon")
        stats["actual"] = int(ballooned["actual"]) // 1024
    except TapvirtError as err:
        if err.code.code not in ("qmp-command-failed",):
            raise
        stats["actual"] = dom.current_memory_kib or dom.memory_kib
        warnings.append(TapvirtError(NO_BALLOON, f"domain {name}",
                                     "the guest has no memory balloon: actual is the "
                                     "configured memory",
                                     "add <memballoon model='virtio'/> for the guest's view"))
    rss = _rss_kib(st.qemu_pid)
    if rss is not None:
        stats["rss"] = rss
    return stats, warnings


def _rss_kib(pid: int | None) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def monitor_command(name: str, text: str) -> Any:
    """A raw QMP command (JSON text) for what tapvirt does not cover. Unsupported
    territory: what it changes (e.g. `stop`, device_add) tapvirt does not know about, so
    the guest is marked with a warning (like libvirt's custom-monitor taint)."""
    import json

    try:
        cmd = json.loads(text)
    except ValueError as exc:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, "monitor command",
                           f"not JSON: {exc}", "write '{\"execute\": \"query-status\"}'"
                           ) from None
    if not isinstance(cmd, dict) or not isinstance(cmd.get("execute"), str):
        raise TapvirtError(HOTPLUG_UNSUPPORTED, "monitor command",
                           "a QMP command is an object with \"execute\"",
                           "write '{\"execute\": \"query-status\"}'")
    if cmd["execute"] in ("getfd", "qmp_capabilities"):
        raise TapvirtError(HOTPLUG_UNSUPPORTED, "monitor command",
                           f"{cmd['execute']} cannot be sent this way",
                           "use attach-device for devices that need fds")
    dd, _ = supervised(name)
    taint = TapvirtError(MONITOR_UNSUPPORTED, f"domain {name}",
                         f"a raw monitor command was sent ({cmd['execute'][:40]})",
                         "restart the guest to be sure tapvirt's view is right").to_json()
    with ops_lock(dd):
        step: dict[str, Any] = {"execute": cmd["execute"]}
        if isinstance(cmd.get("arguments"), dict):
            step["arguments"] = cmd["arguments"]
        warning = {"code": taint["code"], "message": taint["message"], "fix": taint["fix"]}
        return transact(dd, [step], commit={"warnings_add": [warning],
                                            "log": f"monitor command {cmd['execute']!r}"})[0]


# -- disks: list, statistics, sizes ---------------------------------------------------------

@dataclass(frozen=True)
class BlkRow:
    type: str  # file / block
    device: str  # disk / cdrom
    target: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _current_domain(name: str) -> tuple[Domain, DomainDir | None]:
    st = api.state_of(name)
    dd = api._runtime(name)
    if st.state in (RUNNING, PAUSED) and dd.domain_xml.exists():
        return live_domain(dd), dd
    dom: Domain = api._store().get(name)
    return dom, None


def domblklist(name: str) -> list[BlkRow]:
    """The guest's disks: live while it runs, else as defined."""
    import stat as stat_

    dom, _ = _current_domain(name)
    rows = []
    for d in dom.devices.disks:
        kind = d.type.value
        try:
            if d.source_file is not None and stat_.S_ISBLK(os.stat(d.source_file).st_mode):
                kind = "block"
        except OSError:
            pass
        # virsh shows '-' for an empty cdrom or floppy
        rows.append(BlkRow(kind, d.device.value, d.target_dev, d.source_label or "-"))
    return rows


def _disk(dom: Domain, target: str, name: str) -> Any:
    for d in dom.devices.disks:
        if target in (d.target_dev, d.source_file, d.alias):
            return d
    known = ", ".join(d.target_dev for d in dom.devices.disks) or "none"
    raise TapvirtError(DEVICE_NOT_FOUND, f"domain {name}",
                       f"no disk {target!r} (it has: {known})", f"see tapvirt domblklist {name}")


BLK_FIELDS = (("rd_req", "rd_operations"), ("rd_bytes", "rd_bytes"),
              ("wr_req", "wr_operations"), ("wr_bytes", "wr_bytes"),
              ("flush_operations", "flush_operations"),
              ("rd_total_times", "rd_total_time_ns"), ("wr_total_times", "wr_total_time_ns"),
              ("flush_total_times", "flush_total_time_ns"))


def domblkstat(name: str, target: str) -> tuple[str, dict[str, int]]:
    """A disk's I/O counters from QMP query-blockstats, in virsh's names and order."""
    dd, _ = supervised(name)
    disk = _disk(live_domain(dd), target, name)
    alias = disk.alias or disk.target_dev
    for entry in transact(dd, [{"execute": "query-blockstats"}])[0]:
        qdev = str(entry.get("qdev", ""))
        if entry.get("node-name") == format_node_name(alias) or f"/{alias}/" in qdev + "/":
            stats = entry.get("stats", {})
            return disk.target_dev, {ours: int(stats.get(theirs, 0))
                                     for ours, theirs in BLK_FIELDS}
    raise TapvirtError(STATS_UNAVAILABLE, f"disk {disk.target_dev}",
                       "QEMU reports no statistics for it", "see tapvirt domblklist")


def domblkinfo(name: str, target: str) -> tuple[str, dict[str, int]]:
    """Capacity (guest-visible size), allocation (bytes in use on the host) and physical
    (file size): QEMU's view while running, else read from the image."""
    dom, dd = _current_domain(name)
    disk = _disk(dom, target, name)
    if disk.source_file is None:
        what = "a network disk" if disk.network is not None else "an empty drive"
        raise TapvirtError(STATS_UNAVAILABLE, f"disk {disk.target_dev}",
                           f"it is {what}: there is no local image to measure",
                           "ask the server for the export's size (e.g. qemu-img info "
                           "nbd://HOST:PORT/EXPORT)" if disk.network is not None else
                           "insert a medium first (tapvirt update-device with a <source file>)")
    try:
        st = os.stat(disk.source_file)
    except OSError as exc:
        raise TapvirtError(STATS_UNAVAILABLE, f"disk {disk.target_dev}",
                           f"cannot read {disk.source_file}: {exc.strerror}",
                           "check the path and its permissions") from None
    physical = st.st_size
    if not os.path.isfile(disk.source_file):
        with open(disk.source_file, "rb") as f:
            physical = f.seek(0, os.SEEK_END)
    info = {"capacity": physical, "allocation": st.st_blocks * 512, "physical": physical}
    if dd is not None:
        alias = disk.alias or disk.target_dev
        for node in transact(dd, [{"execute": "query-named-block-nodes",
                                   "arguments": {"flat": True}}])[0]:
            if node.get("node-name") == format_node_name(alias):
                info["capacity"] = int(node.get("image", {}).get("virtual-size", physical))
    elif disk.format.value == "qcow2":
        with open(disk.source_file, "rb") as f:
            header = f.read(32)
        if header[:4] == b"QFI\xfb":
            info["capacity"] = int.from_bytes(header[24:32], "big")
    return disk.target_dev, info
