"""QEMU properties of an interface's `<driver>` tuning, `<rom>` and `<tune><sndbuf>`. PURE.

The order is libvirt 9.0's qemuBuildNicDevProps / qemuBuildRomProps / qemuBuildHostNetProps:
virtio tuning and offloads come first in the virtio-net device (before mq/vectors), the
queue sizes after them, the ROM properties after the device address, and sndbuf after the
tap's fds in -netdev.
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.netextras import NetTuning, Rom, TxMode


def tuning_props_before_mq(t: NetTuning | None) -> dict[str, Any]:
    if t is None:
        return {}
    out: dict[str, Any] = {}
    if t.txmode is not None:
        out["tx"] = "bh" if t.txmode is TxMode.IOTHREAD else "timer"
    if t.ioeventfd is not None:
        out["ioeventfd"] = t.ioeventfd
    if t.event_idx is not None:
        out["event_idx"] = t.event_idx
    host = dict(t.host)
    for name in ("csum", "gso"):
        if name in host:
            out[name] = host[name]
    for name in ("tso4", "tso6", "ecn", "ufo"):
        if name in host:
            out[f"host_{name}"] = host[name]
    if "mrg_rxbuf" in host:
        out["mrg_rxbuf"] = host["mrg_rxbuf"]
    for name, on in t.guest:
        out[f"guest_{name}"] = on
    return out


def tuning_props_after_mq(t: NetTuning | None) -> dict[str, Any]:
    if t is None:
        return {}
    out: dict[str, Any] = {}
    if t.rx_queue_size:
        out["rx_queue_size"] = t.rx_queue_size
    if t.tx_queue_size:
        out["tx_queue_size"] = t.tx_queue_size
    return out


def rom_props(r: Rom | None) -> dict[str, Any]:
    """rombar (0/1) and romfile ('' when the ROM is disabled)."""
    if r is None:
        return {}
    if r.enabled is False:
        return {"romfile": ""}
    out: dict[str, Any] = {}
    if r.bar is not None:
        out["rombar"] = 1 if r.bar else 0
    if r.file is not None:
        out["romfile"] = r.file
    return out
