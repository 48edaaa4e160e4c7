"""`<memballoon>`, `<rng>`, `<watchdog>`, `<panic>` and `<vsock>`: the small single-purpose
devices. Each has its model type, its parser (libvirt 9.0's defaults and messages) and its
canonical formatter here; the QEMU arguments are in `tapvirt.qemu.argv.misc`.

What cannot work for an unprivileged QEMU is refused by name, with the reason:
* `<rng><backend model='egd'>` needs an entropy daemon's socket libvirt connects itself;
* `<watchdog action='dump'>` relies on libvirt writing a core dump when QEMU pauses;
* `<vsock>` needs `/dev/vhost-vsock` (see `VSOCK_UNSUPPORTED`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import Address, AddressType
from tapvirt.conf.devices.common import address_lines, parse_device_address
from tapvirt.conf.devices.virtio import VirtioOptions, parse_virtio_driver, virtio_driver_lines
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

_L = "conf"
RNG_BACKEND_UNSUPPORTED = define(
    "rng-backend-unsupported",
    "<rng><backend model='egd'>: an entropy daemon socket tapvirt does not connect",
    layer=_L,
)
WATCHDOG_ACTION_UNSUPPORTED = define(
    "watchdog-action-unsupported",
    "<watchdog action='dump'>: libvirt's own core dump on a watchdog event",
    layer=_L,
)
VSOCK_UNSUPPORTED = define(
    "vsock-unsupported",
    "<vsock>: vhost-vsock needs /dev/vhost-vsock, which an unprivileged QEMU cannot open",
    layer=_L,
)
ONE_DEVICE_ONLY = define(
    "one-device-only", "a device libvirt allows once (memballoon, watchdog, tpm, vsock) "
    "appears twice", layer=_L,
)

# libvirt's positiveInteger upper bound for periods and rates (an unsigned int)
UINT_MAX = 2**32 - 1
INT_MAX = 2**31 - 1


class OnOff(StrEnum):
    ON = "on"
    OFF = "off"


def on_off(p: Reader, el: etree._Element, attr: str) -> bool | None:
    """libvirt's virTristateSwitch: absent -> None, 'on'/'off' -> True/False."""
    if el.get(attr) is None:
        return None
    return p.enum(el, attr, OnOff) is OnOff.ON


def on_off_text(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")


def only_once(p: Reader, els: list[etree._Element], what: str) -> etree._Element | None:
    """libvirt's rule for devices a domain has at most once; `what` as its message says it
    ("memory balloon", "watchdog", "vsock")."""
    if len(els) > 1:
        raise p.fail(
            ONE_DEVICE_ONLY, els[1], f"only a single {what} device is supported",
            f"remove the second <{els[1].tag}> (the first is at line {els[0].sourceline})",
        )
    return els[0] if els else None


# --- memballoon ---------------------------------------------------------------------


class BalloonModel(StrEnum):
    VIRTIO = "virtio"
    VIRTIO_TRANSITIONAL = "virtio-transitional"
    VIRTIO_NON_TRANSITIONAL = "virtio-non-transitional"
    NONE = "none"  # no balloon: turns libvirt's implicit one off


@dataclass(frozen=True)
class Memballoon:
    model: BalloonModel = BalloonModel.VIRTIO
    autodeflate: bool | None = None  # QEMU's deflate-on-oom
    free_page_reporting: bool | None = None
    # seconds between guest memory statistics; set by QMP after start, not on the argv
    stats_period: int | None = None
    alias: str | None = "balloon0"
    address: Address | None = None  # its PCI slot, assigned after parsing
    virtio: VirtioOptions | None = None  # <driver iommu= ats= packed= page_per_vq=>


def parse_memballoon(p: Reader, el: etree._Element) -> Memballoon:
    from tapvirt.conf.devices.common import parse_alias as _alias

    found = p.shape(
        el, ("model", "autodeflate", "freePageReporting"),
        ("stats", "driver", "alias", "address"),
        required_attrs=("model",),
    )
    model = p.enum(el, "model", BalloonModel)
    period = None
    if (s := p.one(found, "stats")) is not None:
        p.shape(s, ("period",), required_attrs=("period",))
        # libvirt reads an int and writes nothing for 0: keep 0 as "no statistics"
        period = p.uint(s, "period", 0, INT_MAX) or None
    none = model is BalloonModel.NONE
    address = parse_device_address(p, p.one(found, "address"), () if none else _PCI,
                                   f"a memballoon of model '{model}'")
    if none and (el.get("autodeflate") or el.get("freePageReporting") or period):
        raise p.fail(
            E.INVALID_VALUE, el, "a memballoon of model 'none' has no options",
            "remove autodeflate, freePageReporting and <stats>, or use model='virtio'",
        )
    return Memballoon(
        model=model, autodeflate=on_off(p, el, "autodeflate"),
        free_page_reporting=on_off(p, el, "freePageReporting"), stats_period=period,
        virtio=parse_virtio_driver(p, p.one(found, "driver"), not none),
        alias=None if none else _alias(p, p.one(found, "alias"), "balloon0"),
        address=address,
    )


def format_memballoon(b: Memballoon, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.xmlout import a as _a
    from tapvirt.conf.xmlout import attrs as _attrs

    head = f"{ind}<memballoon model={_a(b.model)}" + _attrs(
        autodeflate=on_off_text(b.autodeflate),
        freePageReporting=on_off_text(b.free_page_reporting),
    )
    body = []
    if b.stats_period:
        body.append(f"{ind}  <stats period='{b.stats_period}'/>")
    body += _alias_lines(b.alias, ind, live) + address_lines(b.address, ind)
    body += virtio_driver_lines(b.virtio, ind)  # after the address, as libvirt writes it
    return _element(head, "memballoon", body, ind)


# --- rng ----------------------------------------------------------------------------


class RngModel(StrEnum):
    VIRTIO = "virtio"
    VIRTIO_TRANSITIONAL = "virtio-transitional"
    VIRTIO_NON_TRANSITIONAL = "virtio-non-transitional"


class RngBackend(StrEnum):
    RANDOM = "random"  # a host file QEMU reads: /dev/urandom, /dev/random
    BUILTIN = "builtin"  # QEMU's own getrandom()


RNG_DEFAULT_FILE = "/dev/random"  # libvirt's post-parse default for model='random'


@dataclass(frozen=True)
class Rng:
    model: RngModel = RngModel.VIRTIO
    backend: RngBackend = RngBackend.RANDOM
    source_file: str | None = RNG_DEFAULT_FILE  # random only
    rate_bytes: int | None = None  # at most this many bytes ...
    rate_period_ms: int | None = None  # ... per period (QEMU's default 1000 ms)
    alias: str | None = None
    address: Address | None = None  # its PCI slot, assigned after parsing
    virtio: VirtioOptions | None = None  # <driver iommu= ats= packed= page_per_vq=>


def parse_rng(p: Reader, el: etree._Element, index: int) -> Rng:
    from tapvirt.conf.devices.common import parse_alias as _alias

    found = p.shape(el, ("model",), ("rate", "backend", "driver", "alias", "address"),
                    required_attrs=("model",))
    model = p.enum(el, "model", RngModel)
    rate = period = None
    if (r := p.one(found, "rate")) is not None:
        p.shape(r, ("bytes", "period"), required_attrs=("bytes",))
        rate = p.uint(r, "bytes", 1, UINT_MAX)
        if r.get("period") is not None:
            period = p.uint(r, "period", 1, UINT_MAX)
    b = p.need(found, "backend", el)
    if b.get("model") != "egd":
        p.shape(b, ("model",), text=True, required_attrs=("model",))
    if b.get("model") == "egd":
        raise p.fail(
            RNG_BACKEND_UNSUPPORTED, b,
            "the egd backend connects QEMU to an entropy daemon's socket, which tapvirt "
            "does not support", "use <backend model='random'>/dev/urandom</backend> or "
            "<backend model='builtin'/>", attr="model",
        )
    backend = p.enum(b, "model", RngBackend)
    source: str | None = None
    if backend is RngBackend.RANDOM:
        text = b.text or ""  # not stripped: libvirt takes the text as it is
        source = p.abspath(b, None, text) if text else RNG_DEFAULT_FILE
    elif (b.text or "").strip():
        raise p.fail(
            E.UNEXPECTED_TEXT, b, "the builtin backend takes no file",
            "write <backend model='builtin'/>",
        )
    return Rng(
        model=model, backend=backend, source_file=source, rate_bytes=rate,
        rate_period_ms=period, virtio=parse_virtio_driver(p, p.one(found, "driver"), True),
        alias=_alias(p, p.one(found, "alias"), f"rng{index}"),
        address=parse_device_address(p, p.one(found, "address"), _PCI, "a virtio rng"),
    )


def format_rng(r: Rng, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.xmlout import a as _a
    from tapvirt.conf.xmlout import t as _t

    out = [f"{ind}<rng model={_a(r.model)}>"]
    if r.rate_bytes:
        period = f" period='{r.rate_period_ms}'" if r.rate_period_ms else ""
        out.append(f"{ind}  <rate bytes='{r.rate_bytes}'{period}/>")
    if r.backend is RngBackend.RANDOM:
        out.append(f"{ind}  <backend model='random'>{_t(r.source_file or '')}</backend>")
    else:
        out.append(f"{ind}  <backend model={_a(r.backend)}/>")
    out += virtio_driver_lines(r.virtio, ind)
    out += _alias_lines(r.alias, ind, live) + address_lines(r.address, ind)
    out.append(f"{ind}</rng>")
    return out


# --- watchdog -----------------------------------------------------------------------


class WatchdogModel(StrEnum):
    I6300ESB = "i6300esb"  # a PCI device
    IB700 = "ib700"  # an ISA device


class WatchdogAction(StrEnum):
    RESET = "reset"
    SHUTDOWN = "shutdown"
    POWEROFF = "poweroff"
    PAUSE = "pause"
    NONE = "none"
    INJECT_NMI = "inject-nmi"


@dataclass(frozen=True)
class Watchdog:
    model: WatchdogModel
    action: WatchdogAction = WatchdogAction.RESET
    alias: str | None = "watchdog0"
    address: Address | None = None  # i6300esb: its PCI slot, assigned after parsing


def parse_watchdog(p: Reader, el: etree._Element) -> Watchdog:
    from tapvirt.conf.devices.common import parse_alias as _alias

    found = p.shape(el, ("model", "action"), ("alias", "address"), required_attrs=("model",))
    if el.get("model") == "diag288":
        raise p.fail(
            E.INVALID_VALUE, el, "the diag288 watchdog exists only on s390 machines",
            "use model='i6300esb' (PCI) or model='ib700' (ISA) on x86", attr="model",
        )
    model = p.enum(el, "model", WatchdogModel)
    action = WatchdogAction.RESET
    if el.get("action") == "dump":
        raise p.fail(
            WATCHDOG_ACTION_UNSUPPORTED, el,
            "action='dump' makes libvirt write a core dump when the watchdog fires; "
            "tapvirt does not write dumps", "use action='pause' and dump the paused guest "
            "yourself, or another action (reset, poweroff, shutdown, none, inject-nmi)",
            attr="action",
        )
    if el.get("action") is not None:
        action = p.enum(el, "action", WatchdogAction)
    address = parse_device_address(
        p, p.one(found, "address"), _PCI if model is WatchdogModel.I6300ESB else (),
        f"a {model} watchdog",
    )
    return Watchdog(model, action, _alias(p, p.one(found, "alias"), "watchdog0"), address)


def format_watchdog(w: Watchdog, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.xmlout import a as _a

    head = f"{ind}<watchdog model={_a(w.model)} action={_a(w.action)}"
    return _element(head, "watchdog",
                    _alias_lines(w.alias, ind, live) + address_lines(w.address, ind), ind)


# --- panic --------------------------------------------------------------------------


class PanicModel(StrEnum):
    ISA = "isa"  # QEMU's pvpanic ISA device, libvirt's default on x86


PVPANIC_DEFAULT_IOPORT = 0x505


@dataclass(frozen=True)
class Panic:
    model: PanicModel = PanicModel.ISA
    iobase: int | None = None  # <address type='isa' iobase='0x505'/>


def parse_panic(p: Reader, el: etree._Element) -> Panic:
    found = p.shape(el, ("model",), ("address",))
    raw = el.get("model")
    if raw in ("hyperv", "pseries", "s390"):
        raise p.fail(
            E.INVALID_VALUE, el,
            f"panic model '{raw}' is not supported by tapvirt"
            + (" (it needs Hyper-V enlightenments of a KVM guest)" if raw == "hyperv"
               else f" (it exists only on {'ppc64' if raw == 'pseries' else 's390'})"),
            "use model='isa' (pvpanic) or leave model out", attr="model",
        )
    if raw is not None and raw != "default":
        p.enum(el, "model", PanicModel)
    iobase = None
    if (a := p.one(found, "address")) is not None:
        if a.get("type") != "isa" or a.get("irq") is not None:
            raise p.fail(
                E.INVALID_VALUE, a, "a pvpanic device sits at an ISA I/O port",
                "write <address type='isa' iobase='0x505'/> or leave <address> out",
            )
        p.shape(a, ("type", "iobase"), required_attrs=("type",))
        if a.get("iobase") is not None:
            iobase = _hex_or_dec(p, a, "iobase", 0xFFFF)
    return Panic(PanicModel.ISA, iobase)


def format_panic(pn: Panic, ind: str) -> list[str]:
    from tapvirt.conf.xmlout import a as _a

    head = f"{ind}<panic model={_a(pn.model)}"
    body = [] if pn.iobase is None else [f"{ind}  <address type='isa' iobase='0x{pn.iobase:x}'/>"]
    return _element(head, "panic", body, ind)


def _hex_or_dec(p: Reader, el: etree._Element, attr: str, hi: int) -> int:
    raw = el.get(attr, "")
    try:
        value = int(raw, 16) if raw[:2].lower() == "0x" else int(raw, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= hi or len(raw) > 10:
        raise p.fail(
            E.INVALID_VALUE, el, f"Invalid value for attribute '{attr}' in element "
            f"'{el.tag}': '{raw[:40]}'.", f"write a number in 0..0x{hi:x}, e.g. 0x505",
            attr=attr,
        )
    return value


# --- vsock --------------------------------------------------------------------------


def refuse_vsock(p: Reader, el: etree._Element) -> None:
    raise p.fail(
        VSOCK_UNSUPPORTED, el,
        "vhost-vsock needs an fd of /dev/vhost-vsock (kernel module vhost_vsock, root-only "
        "on most hosts; guest CIDs are one namespace for the whole host) and tapvirt does not "
        "pass one", "remove <vsock>; talk to the guest over a virtio-serial <channel> or "
        "the network instead",
    )


# --- shared -------------------------------------------------------------------------

_PCI = (AddressType.PCI,)


def _alias_lines(alias: str | None, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.xmlout import a as _a

    if alias is not None and (live or alias.startswith("ua-")):
        return [f"{ind}  <alias name={_a(alias)}/>"]
    return []


def alias_address_element(head: str, tag: str, ind: str, live: bool, *, alias: str | None,
                          address: Address | None) -> list[str]:
    """A device whose only children are `<alias>` and `<address>` (redirdev, hub)."""
    return _element(head, tag, _alias_lines(alias, ind, live) + address_lines(address, ind),
                    ind)


def _element(head: str, tag: str, body: list[str], ind: str) -> list[str]:
    """`<tag .../>` when there are no children, else the open and close lines."""
    if not body:
        return [head + "/>"]
    return [head + ">", *body, f"{ind}</{tag}>"]
