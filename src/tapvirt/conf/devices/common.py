"""Small elements every device family shares: `<alias>`, `<boot order>` and `<address>`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import (
    Address,
    AddressType,
    UsbAddress,
    format_address,
    parse_address,
)
from tapvirt.conf.rules import ALIAS_RE, MAX_BOOT_ORDER
from tapvirt.conf.xmlout import IND, Writer, a

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


def parse_alias(r: Reader, el: etree._Element | None, auto: str) -> str | None:
    """A user alias (`ua-...`), or the name tapvirt gives the device itself (`auto`).

    None when absent: `tapvirt.conf.defaults` assigns the automatic names after parsing."""
    if el is None:
        return None
    r.shape(el, ("name",), required_attrs=("name",))
    name = el.get("name", "")
    if name == auto or ALIAS_RE.match(name) or (r.live and _same_family(name, auto)):
        return name
    raise r.fail(
        E.INVALID_ALIAS, el,
        f"alias '{name[:40]}' is not a user alias: user aliases start with 'ua-' and use "
        f"A-Z a-z 0-9 _ . - (tapvirt names this device '{auto}' itself)",
        f"remove <alias> or write <alias name='ua-{auto}'/>", attr="name",
    )


def _same_family(name: str, auto: str) -> bool:
    """A name tapvirt itself gives this kind of device (net3 for a NIC that is net1 by
    position): a running guest's live XML has such gaps after hotplug and unplug. Only
    accepted in live XML; a definition may give only user aliases (ua-...)."""
    import re

    return re.fullmatch(re.sub(r"\d+", r"\\d+", re.escape(auto)), name) is not None


def parse_boot(r: Reader, el: etree._Element | None) -> int | None:
    if el is None:
        return None
    r.shape(el, ("order",), required_attrs=("order",))
    return r.uint(el, "order", 1, MAX_BOOT_ORDER)


def format_alias(alias: str | None, w: Writer, live: bool, depth: int = 3) -> None:
    """The persistent XML keeps only user aliases (libvirt's inactive form); live all."""
    if alias is not None and (live or alias.startswith("ua-")):
        w(f"{IND * depth}<alias name={a(alias)}/>")


def format_boot(order: int | None, w: Writer, depth: int = 3) -> None:
    if order is not None:
        w(f"{IND * depth}<boot order='{order}'/>")


def parse_device_address(
    r: Reader, el: etree._Element | None, allowed: tuple[AddressType, ...], device: str
) -> Address | None:
    """The `<address>` child of a device (None when absent); `allowed`: the types libvirt
    accepts for it (empty: the device is not on any bus, an address is refused by name).
    Assignment of missing addresses is the post-parse step's (`tapvirt.conf.defaults`)."""
    if el is None:
        return None
    return parse_address(r, el, allowed, device)


def parse_usb_device(
    r: Reader, found: dict[str, list[etree._Element]], device: str, auto: str
) -> tuple[str | None, UsbAddress | None]:
    """The `<alias>` and `<address type='usb'>` children of a USB device (redirdev, hub)."""
    address = parse_device_address(r, r.one(found, "address"), (AddressType.USB,), device)
    assert address is None or isinstance(address, UsbAddress)
    return parse_alias(r, r.one(found, "alias"), auto), address


def address_lines(addr: Address | None, ind: str) -> list[str]:
    """`<address .../>` one level below `ind`, after `<alias>` as libvirt writes it."""
    return [] if addr is None else [f"{ind}{IND}{format_address(addr)}"]
