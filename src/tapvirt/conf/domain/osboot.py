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


class FirmwareFeatureName(StrEnum):
    ENROLLED_KEYS = "enrolled-keys"
    SECURE_BOOT = "secure-boot"


class SmbiosMode(StrEnum):
    EMULATE = "emulate"
    HOST = "host"
    SYSINFO = "sysinfo"


@dataclass(frozen=True)
class Loader:
    path: str | None = decl.text("text()")  # None only with <os firmware=...>
    readonly: bool | None = decl.yesno("@readonly")
    secure: bool | None = decl.yesno("@secure")
    type: LoaderType | None = decl.enum("@type", LoaderType)
    # yes: the firmware keeps no variables (no NVRAM); no: it must have them (EFI/pflash)
    stateless: bool | None = decl.yesno("@stateless")


@dataclass(frozen=True)
class FirmwareFeature:
    """`<os><firmware><feature enabled='yes|no' name='secure-boot|enrolled-keys'/>`: what
    firmware autoselection (`<os firmware='efi'>`) must (or must not) pick."""

    enabled: bool = decl.yesno("@enabled", required=True)
    name: FirmwareFeatureName = decl.enum("@name", FirmwareFeatureName, required=True)


@dataclass(frozen=True)
class FirmwareFeatures:
    features: tuple[FirmwareFeature, ...] = decl.elements("feature", FirmwareFeature)

    def wanted(self, name: FirmwareFeatureName) -> bool | None:
        for f in self.features:
            if f.name is name:
                return f.enabled
        return None


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

    firmware_features: FirmwareFeatures | None = decl.element("firmware", FirmwareFeatures)
    loader: Loader | None = decl.element("loader", Loader)
    nvram: Nvram | None = decl.element("nvram", Nvram)
    bootmenu: BootMenu | None = decl.element("bootmenu", BootMenu)
    smbios: SmbiosMode | None = decl.enum("smbios/@mode", SmbiosMode, required=True)
    bios: Bios | None = decl.element("bios", Bios)

    @property
    def pflash(self) -> bool:
        return self.loader is not None and self.loader.type is LoaderType.PFLASH


TAGS = ("firmware", "loader", "nvram", "bootmenu", "smbios", "bios")


def parse_osboot(r: Reader, os_el: etree._Element, found: dict[str, list[etree._Element]],
                 firmware: Firmware | None) -> OsBoot:
    """The declared children of `<os>` named in TAGS (already shape-checked by `root`)."""
    values: dict[str, object] = {}
    for tag, field in (("firmware", "firmware_features"), ("loader", "loader"),
                       ("nvram", "nvram"), ("bootmenu", "bootmenu"), ("bios", "bios")):
        if (el := r.one(found, tag)) is not None:
            values[field] = decl.read(r, el, {"firmware": FirmwareFeatures, "loader": Loader,
                                              "nvram": Nvram, "bootmenu": BootMenu,
                                              "bios": Bios}[tag])
    if (sm := r.one(found, "smbios")) is not None:
        r.shape(sm, ("mode",), required_attrs=("mode",))
        values["smbios"] = r.enum(sm, "mode", SmbiosMode)
    ob = OsBoot(**values)  # type: ignore[arg-type]
    loader_el = r.one(found, "loader")
    if ob.loader is not None:
        assert loader_el is not None
        if ob.loader.path is not None:
            r.abspath(loader_el, None, ob.loader.path)
        elif firmware is None:
            raise r.fail(E.MISSING_ELEMENT, loader_el, "<loader> needs the firmware's path",
                         "write it, e.g. <loader readonly='yes' type='pflash'>/usr/share/"
                         "OVMF/OVMF_CODE_4M.fd</loader>, or use <os firmware='efi'>")
    nv_el = r.one(found, "nvram")
    _check_stateless(r, loader_el, nv_el, ob, firmware)
    if ob.nvram is not None:
        assert nv_el is not None
        if ob.nvram.path is not None:  # without one: a per-domain file made at start
            r.abspath(nv_el, None, ob.nvram.path)
        if not ob.pflash and firmware is not Firmware.EFI:
            raise r.fail(E.INVALID_VALUE, nv_el, "<nvram> needs a <loader type='pflash'>",
                         "add <loader readonly='yes' type='pflash'>/usr/share/OVMF/"
                         "OVMF_CODE_4M.fd</loader> or remove <nvram>")
    if firmware is not None and loader_el is not None:
        if loader_el.get("secure") == "no":
            raise r.fail(E.INVALID_VALUE, loader_el,
                         "loader attribute 'secure' cannot be specified when firmware "
                         "autoselection is enabled",
                         "remove secure='no' (ask for <firmware><feature enabled='no' "
                         "name='secure-boot'/></firmware> instead)", attr="secure")
        for attr in ("readonly", "type"):
            if loader_el.get(attr) is not None:
                raise r.fail(
                    E.INVALID_VALUE, loader_el,
                    f"loader attribute '{attr}' cannot be specified when firmware "
                    "autoselection is enabled",
                    "remove firmware= from <os> (the <loader> names the firmware itself)",
                    attr=attr,
                )
    if firmware is not None and loader_el is not None and ob.loader is not None \
            and ob.loader.path is not None:
        raise r.fail(E.INVALID_VALUE, loader_el,
                     "a loader path cannot be specified when firmware autoselection is "
                     "enabled", "remove firmware= from <os> (and write <loader "
                     "readonly='yes' type='pflash'>PATH</loader>), or the path")
    ff = ob.firmware_features
    if ff is not None:
        ff_el = r.one(found, "firmware")
        assert ff_el is not None
        names = [f.name for f in ff.features]
        if len(set(names)) != len(names):
            raise r.fail(E.DUPLICATE_ELEMENT, ff_el, "a firmware feature is listed twice",
                         "list each <feature name=...> once")
        if ff.wanted(FirmwareFeatureName.ENROLLED_KEYS) and \
                ff.wanted(FirmwareFeatureName.SECURE_BOOT) is False:
            raise r.fail(
                E.INVALID_VALUE, ff_el,
                "firmware feature 'enrolled-keys' cannot be enabled when firmware feature "
                "'secure-boot' is disabled",
                "enable secure-boot too, or disable enrolled-keys")
    if ob.smbios is SmbiosMode.HOST:
        sm = r.one(found, "smbios")
        assert sm is not None
        raise r.fail(E.UNSUPPORTED_VALUE, sm, "Host SMBIOS information is not available",
                     "use mode='sysinfo' with a <sysinfo type='smbios'> block, or "
                     "mode='emulate'", attr="mode")
    return ob


def _check_stateless(r: Reader, loader_el: etree._Element | None,
                     nv_el: etree._Element | None, ob: OsBoot,
                     firmware: Firmware | None) -> None:
    """libvirt's virDomainDefOSValidate for `<loader stateless=...>`."""
    if ob.loader is None or ob.loader.stateless is None:
        return
    assert loader_el is not None
    if ob.loader.stateless:
        if ob.nvram is not None:
            assert nv_el is not None
            what = "NVRAM template" if ob.nvram.template else "NVRAM"
            raise r.fail(E.INVALID_VALUE, nv_el, f"{what} is not permitted when loader is "
                         "stateless", "remove <nvram>, or stateless='yes' from <loader>")
    elif firmware is None and ob.loader.type is not LoaderType.PFLASH:
        raise r.fail(E.INVALID_VALUE, loader_el, "Only pflash loader type permits NVRAM",
                     "write type='pflash', or remove stateless='no'", attr="stateless")
    elif firmware is not None and firmware is not Firmware.EFI:
        raise r.fail(E.INVALID_VALUE, loader_el, "Only EFI firmware permits NVRAM",
                     "use <os firmware='efi'>, or remove stateless='no'", attr="stateless")


def write_firmware(ob: OsBoot, w: Writer, depth: int) -> None:
    """<loader> and <nvram>: libvirt writes them right after <type>."""
    decl.write_children(replace(ob, bootmenu=None, smbios=None, bios=None), w, depth)


def write_boot_options(ob: OsBoot, w: Writer, depth: int) -> None:
    """<bootmenu>, <smbios>, <bios>: libvirt writes them after the <boot> elements."""
    decl.write_children(replace(ob, firmware_features=None, loader=None, nvram=None), w, depth)
