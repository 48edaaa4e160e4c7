"""The optional parts of `<interface>` beyond the connection: `<rom>`, the virtio-net
`<driver>` tuning and offload switches (`<host>`/`<guest>`), `<tune><sndbuf>` and
`<coalesce>`, with libvirt 9.0's rules and canonical form. Used by the interface parser;
their QEMU properties are in `tapvirt.qemu.argv.netextras`.

libvirt accepts offload switches on any NIC model and silently ignores them for non-virtio
ones; tapvirt refuses them there ("nothing silently dropped"). `<coalesce>` sets the host
tap's interrupt coalescing with ethtool, which needs CAP_NET_ADMIN: accepted for the
interface types libvirt allows it on, kept, and reported as a warning by the checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

NOT_VIRTIO = define(
    "offload-not-virtio",
    "virtio-net <driver> tuning or offloads on a NIC model that is not virtio",
    layer="conf",
)
MAX_QUEUE_SIZE = 1024  # QEMU's VIRTQUEUE_MAX_SIZE
MIN_QUEUE_SIZE = 256  # QEMU's virtio-net minimum
MAX_SNDBUF = 2**32 - 1  # libvirt's schema: unsignedInt

HOST_OFFLOADS = ("csum", "gso", "tso4", "tso6", "ecn", "ufo", "mrg_rxbuf")
GUEST_OFFLOADS = ("csum", "tso4", "tso6", "ecn", "ufo")


class TxMode(StrEnum):
    IOTHREAD = "iothread"  # QEMU's tx=bh
    TIMER = "timer"


@dataclass(frozen=True)
class Rom:
    """`<rom bar= file= enabled=>`: the NIC's option ROM (PXE boot code)."""

    enabled: bool | None = None  # enabled='no': no ROM at all
    bar: bool | None = None  # the ROM BAR visible to the guest
    file: str | None = None  # a ROM image instead of QEMU's built-in one


@dataclass(frozen=True)
class NetTuning:
    """virtio-net `<driver>` attributes beyond name/queues, and the offload switches."""

    txmode: TxMode | None = None
    ioeventfd: bool | None = None
    event_idx: bool | None = None
    rx_queue_size: int | None = None
    tx_queue_size: int | None = None
    host: tuple[tuple[str, bool], ...] = ()  # (switch, on) in HOST_OFFLOADS order
    guest: tuple[tuple[str, bool], ...] = ()  # in GUEST_OFFLOADS order

    def __bool__(self) -> bool:
        return self != NetTuning()


def _onoff(p: Reader, el: etree._Element, attr: str) -> bool | None:
    from tapvirt.conf.devices.misc import on_off

    return on_off(p, el, attr)


def parse_rom(p: Reader, el: etree._Element) -> Rom:
    p.shape(el, ("bar", "file", "enabled"))
    enabled = None
    if el.get("enabled") is not None:
        raw = el.get("enabled")
        if raw not in ("yes", "no"):
            raise p.fail(
                E.INVALID_VALUE, el, f"Invalid value for attribute 'enabled' in element "
                f"'rom': '{(raw or '')[:40]}'.", "use enabled='yes' or enabled='no'",
                attr="enabled",
            )
        enabled = raw == "yes"
    bar = _onoff(p, el, "bar")
    file = p.abspath(el, "file", el.get("file", "")) if el.get("file") is not None else None
    if enabled is False and (bar is not None or file is not None):
        raise p.fail(
            E.INVALID_VALUE, el, "ROM tuning is not supported when ROM is disabled",
            "remove bar= and file=, or enabled='no'",
        )
    return Rom(enabled, bar, file)


def format_rom(r: Rom, ind: str) -> str:
    from tapvirt.conf.devices.misc import on_off_text
    from tapvirt.conf.xmlout import attrs as _attrs

    enabled = None if r.enabled is None else ("yes" if r.enabled else "no")
    return f"{ind}<rom" + _attrs(enabled=enabled, bar=on_off_text(r.bar), file=r.file) + "/>"


DRIVER_TUNING_ATTRS = ("txmode", "ioeventfd", "event_idx", "rx_queue_size", "tx_queue_size")


def parse_tuning(
    p: Reader, d: etree._Element, found: dict[str, list[etree._Element]], virtio: bool
) -> NetTuning:
    """The tuning part of an interface's `<driver>` (its attributes and children, already
    shaped by the caller, which handles name= and queues=)."""
    txmode = p.enum(d, "txmode", TxMode) if d.get("txmode") is not None else None
    sizes: dict[str, int] = {}
    for attr in ("rx_queue_size", "tx_queue_size"):
        if d.get(attr) is not None:
            value = p.uint(d, attr, MIN_QUEUE_SIZE, MAX_QUEUE_SIZE)
            if value & (value - 1):
                raise p.fail(
                    E.INVALID_VALUE, d, f"{attr} has to be a power of two",
                    "use 256, 512 or 1024", attr=attr,
                )
            sizes[attr] = value
    switches: dict[str, tuple[tuple[str, bool], ...]] = {}
    for tag, names in (("host", HOST_OFFLOADS), ("guest", GUEST_OFFLOADS)):
        el = p.one(found, tag)
        if el is None:
            switches[tag] = ()
            continue
        p.shape(el, names)
        switches[tag] = tuple(
            (n, v) for n in names if (v := _onoff(p, el, n)) is not None
        )
    tuning = NetTuning(
        txmode=txmode, ioeventfd=_onoff(p, d, "ioeventfd"), event_idx=_onoff(p, d, "event_idx"),
        rx_queue_size=sizes.get("rx_queue_size"), tx_queue_size=sizes.get("tx_queue_size"),
        host=switches["host"], guest=switches["guest"],
    )
    if tuning and not virtio:
        raise p.fail(
            NOT_VIRTIO, d, "driver tuning and offload switches apply to virtio NICs only",
            "use <model type='virtio'/> or remove them from <driver>",
        )
    return tuning


def tuning_attrs(t: NetTuning) -> str:
    """The `<driver>` attributes, in libvirt's order after name= and queues=."""
    from tapvirt.conf.devices.misc import on_off_text
    from tapvirt.conf.xmlout import attrs as _attrs

    return _attrs(
        txmode=t.txmode, ioeventfd=on_off_text(t.ioeventfd), event_idx=on_off_text(t.event_idx),
        rx_queue_size=None if t.rx_queue_size is None else str(t.rx_queue_size),
        tx_queue_size=None if t.tx_queue_size is None else str(t.tx_queue_size),
    )


def tuning_children(t: NetTuning, ind: str) -> list[str]:
    out = []
    for tag, switches in (("host", t.host), ("guest", t.guest)):
        if switches:
            attrs = "".join(f" {n}='{'on' if v else 'off'}'" for n, v in switches)
            out.append(f"{ind}<{tag}{attrs}/>")
    return out


def parse_sndbuf(p: Reader, el: etree._Element) -> int:
    found = p.shape(el, (), ("sndbuf",))
    s = p.need(found, "sndbuf", el)
    p.shape(s, text=True)
    return p.uint(s, None, 0, MAX_SNDBUF)


def format_sndbuf(sndbuf: int, ind: str) -> list[str]:
    return [f"{ind}<tune>", f"{ind}  <sndbuf>{sndbuf}</sndbuf>", f"{ind}</tune>"]


def parse_coalesce(p: Reader, el: etree._Element, itype: str) -> int:
    """`<coalesce><rx><frames max='N'/></rx></coalesce>` -> N (libvirt: network/bridge)."""
    if itype not in ("bridge", "network"):
        raise p.fail(
            E.NOT_FOR_TYPE, el, f"coalesce settings on interface type {itype} are not "
            "supported", "remove <coalesce> (set the device's coalescing with `ethtool -C` "
            "on the privileged side)",
        )
    rx = p.need(p.shape(el, (), ("rx",)), "rx", el)
    frames = p.need(p.shape(rx, (), ("frames",)), "frames", rx)
    p.shape(frames, ("max",), required_attrs=("max",))
    return p.uint(frames, "max", 0, 2**32 - 1)


def format_coalesce(frames: int, ind: str) -> list[str]:
    return [f"{ind}<coalesce>", f"{ind}  <rx>", f"{ind}    <frames max='{frames}'/>",
            f"{ind}  </rx>", f"{ind}</coalesce>"]
