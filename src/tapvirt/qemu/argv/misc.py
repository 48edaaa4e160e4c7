"""QEMU arguments of `<memballoon>`, `<rng>`, `<watchdog>` and `<panic>`. PURE.

Property names and their order are libvirt 9.0's for QEMU 7.2 (qemuBuildMemballoonCommandLine,
qemuBuildRNGCommandLine, qemuBuildWatchdogCommandLine, qemuBuildPanicCommandLine), so that
`-device` objects compare equal to libvirt's `.args`; the device's address properties
(`bus`, `addr`) follow in the caller.
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.misc import (
    BalloonModel,
    Memballoon,
    Panic,
    Rng,
    RngBackend,
    RngModel,
    Watchdog,
    WatchdogModel,
)
from tapvirt.qemu.argv.virtio import virtio_device

_BALLOON_DRIVER = {
    BalloonModel.VIRTIO: "virtio-balloon-pci",
    BalloonModel.VIRTIO_TRANSITIONAL: "virtio-balloon-pci-transitional",
    BalloonModel.VIRTIO_NON_TRANSITIONAL: "virtio-balloon-pci-non-transitional",
}
_RNG_DRIVER = {
    RngModel.VIRTIO: "virtio-rng-pci",
    RngModel.VIRTIO_TRANSITIONAL: "virtio-rng-pci-transitional",
    RngModel.VIRTIO_NON_TRANSITIONAL: "virtio-rng-pci-non-transitional",
}
RNG_DEFAULT_PERIOD_MS = 1000  # libvirt writes QEMU's default when only bytes are given


def memballoon_device(b: Memballoon) -> dict[str, Any] | None:
    """The -device object, or None for model='none'."""
    if b.model is BalloonModel.NONE:
        return None
    out = virtio_device(_BALLOON_DRIVER[b.model], b.virtio)
    out["id"] = b.alias or "balloon0"
    if b.autodeflate is not None:
        out["deflate-on-oom"] = b.autodeflate
    if b.free_page_reporting is not None:
        out["free-page-reporting"] = b.free_page_reporting
    return out


def memballoon_qmp(b: Memballoon) -> list[dict[str, Any]]:
    """What libvirt sends after QEMU started: the statistics period is a QOM property."""
    if b.model is BalloonModel.NONE or not b.stats_period:
        return []
    return [{"execute": "qom-set", "arguments": {
        "path": f"/machine/peripheral/{b.alias or 'balloon0'}",
        "property": "guest-stats-polling-interval", "value": b.stats_period,
    }}]


def rng_object(r: Rng, alias: str) -> dict[str, Any]:
    """The -object of the backend: `obj<alias>`."""
    oid = f"obj{alias}"
    if r.backend is RngBackend.BUILTIN:
        return {"qom-type": "rng-builtin", "id": oid}
    return {"qom-type": "rng-random", "id": oid, "filename": r.source_file}


def rng_device(r: Rng, alias: str) -> dict[str, Any]:
    out = virtio_device(_RNG_DRIVER[r.model], r.virtio)
    out.update({"rng": f"obj{alias}", "id": alias})
    if r.rate_bytes:
        out["max-bytes"] = r.rate_bytes
        out["period"] = r.rate_period_ms or RNG_DEFAULT_PERIOD_MS
    return out


def watchdog_device(w: Watchdog) -> dict[str, Any]:
    return {"driver": w.model.value, "id": w.alias or "watchdog0"}


def watchdog_is_pci(w: Watchdog) -> bool:
    return w.model is WatchdogModel.I6300ESB


def watchdog_action(w: Watchdog) -> list[str]:
    return ["-watchdog-action", w.action.value]


def panic_action(preserve: bool) -> list[str]:
    """What QEMU does when a panic device reports a guest panic (GUEST_PANICKED). libvirt
    runs QEMU with -no-shutdown and acts on the event; tapvirt lets QEMU act: it pauses the
    guest for <on_crash>preserve (state crashed, reason panicked) and else exits with
    status 1, which the supervisor classifies as a crash and applies on_crash to
    (destroy: shut off, reason crashed; restart: a fresh QEMU)."""
    return ["-action", "panic=pause" if preserve else "panic=exit-failure"]


def panic_device(pn: Panic) -> dict[str, Any]:
    # pvpanic calls its ISA port 'ioport' (not 'iobase'); libvirt writes it only when given
    out: dict[str, Any] = {"driver": "pvpanic"}
    if pn.iobase is not None:
        out["ioport"] = pn.iobase
    return out
