"""The firmware and boot parts of `<os>`: `firmware=`, `<loader>`, `<nvram>`,
`<bootmenu>`, `<bios>`, `<smbios>` (libvirt 9.0 semantics; `<type>`, `<kernel>`, `<boot>`
are in `root`). Declared with `tapvirt.conf.decl`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class Firmware(StrEnum):
    BIOS = "bios"
    EFI = "efi"


class LoaderType(StrEnum):
    ROM = "rom"
    PFLASH = "pflash"


class SmbiosMode(StrEnum):
    EMULATE = "emulate"
    HOST = "host"
    SYSINFO = "sysinfo"


@dataclass(frozen=True)
class Loader:
    path: str = decl.text("text()", required=True)
    readonly: bool | None = decl.yesno("@readonly")
    secure: bool | None = decl.yesno("@secure")
    type: LoaderType | None = decl.enum("@type", LoaderType)


@dataclass(frozen=True)
class Nvram:
    path: str | None = decl.text("text()")
    template: str | None = decl.path("@template")


@dataclass(frozen=True)
class BootMenu:
    enable: bool = decl.yesno("@enable", required=True)
    timeout: int | None = decl.uint("@timeout", 0, 65535)


@dataclass(frozen=True)
class Bios:
    useserial: bool | None = decl.yesno("@useserial")
    reboot_timeout: int | None = decl.uint("@rebootTimeout", 0, 65535)


@dataclass(frozen=True)
class OsBoot:
    """What `<os>` says about firmware and boot, besides type, kernel and boot order."""

    loader: Loader | None = decl.element("loader", Loader)
    nvram: Nvram | None = decl.element("nvram", Nvram)
    bootmenu: BootMenu | None = decl.element("bootmenu", BootMenu)
    smbios: SmbiosMode | None = decl.enum("smbios/@mode", SmbiosMode, required=True)
    bios: Bios | None = decl.element("bios", Bios)

    @property
    def pflash(self) -> bool:
        return self.loader is not None and self.loader.type is LoaderType.PFLASH


TAGS = ("loader", "nvram", "bootmenu", "smbios", "bios")


def parse_osboot(r: Reader, os_el: etree._Element, found: dict[str, list[etree._Element]],
                 firmware: Firmware | None) -> OsBoot:
    """The declared children of `<os>` named in TAGS (already shape-checked by `root`)."""
    values: dict[str, object] = {}
    for tag, field in (("loader", "loader"), ("nvram", "nvram"), ("bootmenu", "bootmenu"),
                       ("bios", "bios")):
        if (el := r.one(found, tag)) is not None:
            values[field] = decl.read(r, el, {"loader": Loader, "nvram": Nvram,
                                              "bootmenu": BootMenu, "bios": Bios}[tag])
    if (sm := r.one(found, "smbios")) is not None:
        r.shape(sm, ("mode",), required_attrs=("mode",))
        values["smbios"] = r.enum(sm, "mode", SmbiosMode)
    ob = OsBoot(**values)  # type: ignore[arg-type]
    loader_el = r.one(found, "loader")
    if ob.loader is not None:
        assert loader_el is not None
        r.abspath(loader_el, None, ob.loader.path)
    nv_el = r.one(found, "nvram")
    if ob.nvram is not None:
        assert nv_el is not None
        if ob.nvram.path is None:
            raise r.fail(
                E.UNSUPPORTED_VALUE, nv_el,
                "<nvram> without a path: libvirt would create it under "
                "/var/lib/libvirt/qemu/nvram, which an unprivileged QEMU cannot write",
                "write the file's path inside <nvram>, e.g. <nvram template='/usr/share/OVMF/"
                "OVMF_VARS_4M.fd'>/home/me/.local/share/tapvirt/NAME_VARS.fd</nvram>",
            )
        r.abspath(nv_el, None, ob.nvram.path)
        if not ob.pflash:
            raise r.fail(E.INVALID_VALUE, nv_el, "<nvram> needs a <loader type='pflash'>",
                         "add <loader readonly='yes' type='pflash'>/usr/share/OVMF/"
                         "OVMF_CODE_4M.fd</loader> or remove <nvram>")
    if firmware is not None and loader_el is not None:
        for attr in ("readonly", "type"):
            if loader_el.get(attr) is not None:
                raise r.fail(
                    E.INVALID_VALUE, loader_el,
                    f"loader attribute '{attr}' cannot be specified when firmware "
                    "autoselection is enabled",
                    "remove firmware= from <os> (the <loader> names the firmware itself)",
                    attr=attr,
                )
    if firmware is Firmware.EFI and ob.loader is None:
        raise r.fail(
            E.UNSUPPORTED_VALUE, os_el,
            "firmware='efi' without <loader>: tapvirt does not pick a firmware file "
            "automatically (libvirt reads the firmware descriptors of /usr/share/qemu/firmware)",
            "name it: <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd"
            "</loader> and <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/path/of/"
            "NAME_VARS.fd</nvram>", attr="firmware",
        )
    if ob.pflash and ob.loader is not None and ob.loader.readonly and ob.nvram is None:
        assert loader_el is not None
        raise r.fail(
            E.MISSING_ELEMENT, loader_el,
            "a read-only pflash <loader> needs an <nvram> file for its variables",
            "add <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/path/of/NAME_VARS.fd"
            "</nvram>",
        )
    if ob.smbios is SmbiosMode.HOST:
        sm = r.one(found, "smbios")
        assert sm is not None
        raise r.fail(E.UNSUPPORTED_VALUE, sm, "Host SMBIOS information is not available",
                     "use mode='sysinfo' with a <sysinfo type='smbios'> block, or "
                     "mode='emulate'", attr="mode")
    return ob


def write_firmware(ob: OsBoot, w: Writer, depth: int) -> None:
    """<loader> and <nvram>: libvirt writes them right after <type>."""
    decl.write_children(replace(ob, bootmenu=None, smbios=None, bios=None), w, depth)


def write_boot_options(ob: OsBoot, w: Writer, depth: int) -> None:
    """<bootmenu>, <smbios>, <bios>: libvirt writes them after the <boot> elements."""
    decl.write_children(replace(ob, loader=None, nvram=None), w, depth)
