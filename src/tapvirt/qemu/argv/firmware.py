"""Firmware and boot: `<loader>`/`<nvram>` as pflash -blockdev pairs (or -bios for a ROM),
secure boot, `-boot` options (order, menu, splash-time, reboot-timeout), SMBIOS tables from
`<sysinfo>`, as libvirt 9.0 writes them for QEMU 7.2 (qemuBuildPflashBlockdevCommandLine,
qemuBuildBootCommandLine, qemuBuildSmbiosCommandLine)."""

from __future__ import annotations

from tapvirt.conf.domain.osboot import LoaderType, SmbiosMode
from tapvirt.conf.domain.sysinfo import NAMES, Block
from tapvirt.conf.model import BootDev, Domain
from tapvirt.qemu.argv.encode import jsonarg, opt


def _pflash(n: int, path: str, readonly: bool) -> list[str]:
    storage, fmt = f"libvirt-pflash{n}-storage", f"libvirt-pflash{n}-format"
    return [
        "-blockdev", jsonarg({"driver": "file", "filename": path, "node-name": storage,
                              "auto-read-only": True, "discard": "unmap"}),
        "-blockdev", jsonarg({"node-name": fmt, "read-only": readonly, "driver": "raw",
                              "file": storage}),
    ]


def pflash_args(dom: Domain) -> list[str]:
    ob = dom.os.boot_options
    if not ob.pflash or ob.loader is None or ob.loader.path is None:
        return []  # no path: <os firmware='efi'> not resolved yet (qemu.fwdesc does, at start)
    argv = _pflash(0, ob.loader.path, bool(ob.loader.readonly))
    if ob.nvram is not None and ob.nvram.path is not None:
        argv += _pflash(1, ob.nvram.path, False)
    return argv


def firmware_machine_params(dom: Domain) -> str:
    ob = dom.os.boot_options
    out = ""
    if ob.pflash:
        out += ",pflash0=libvirt-pflash0-format"
        if ob.nvram is not None:
            out += ",pflash1=libvirt-pflash1-format"
    if ob.bios is not None and ob.bios.useserial:
        out += ",graphics=off"  # SeaBIOS prints on the serial console
    return out


def firmware_args(dom: Domain) -> list[str]:
    ob = dom.os.boot_options
    if ob.loader is None or ob.loader.path is None:
        return []
    if not ob.pflash:
        return ["-bios", ob.loader.path]
    if ob.loader.secure:
        return ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return []


_ORDER = {BootDev.HD: "c", BootDev.CDROM: "d", BootDev.NETWORK: "n", BootDev.FD: "a"}


def boot_args(dom: Domain, per_device_boot: bool) -> list[str]:
    parts: list[str] = []
    if dom.os.boot and not per_device_boot:
        parts.append("order=" + "".join(_ORDER[b] for b in dom.os.boot))
    ob = dom.os.boot_options
    if ob.bootmenu is not None:
        parts.append(f"menu={'on' if ob.bootmenu.enable else 'off'}")
    if ob.bios is not None and ob.bios.reboot_timeout is not None:
        parts.append(f"reboot-timeout={ob.bios.reboot_timeout}")
    if ob.bootmenu is not None and ob.bootmenu.enable and ob.bootmenu.timeout is not None:
        parts.append(f"splash-time={ob.bootmenu.timeout}")
    return ["-boot", ",".join(parts)] if parts else []


def _table(kind: int, block: Block, names: tuple[str, ...], always: str = "") -> str:
    out = f"type={kind}"
    if always and block.get(always) is None:
        out += f",{always}="
    for name in names:
        value = block.get(name)
        if value is not None:
            out += f",{name}={opt(value)}"
    return out


def smbios_args(dom: Domain) -> list[str]:
    if dom.os.boot_options.smbios is not SmbiosMode.SYSINFO or dom.sysinfo is None:
        return []
    info = dom.sysinfo
    argv: list[str] = []
    if info.bios is not None:
        argv += ["-smbios", _table(0, info.bios, NAMES["bios"])]
    if info.system is not None:
        argv += ["-smbios", _table(1, info.system, NAMES["system"])]
    for board in info.base_boards:
        argv += ["-smbios", _table(2, board, NAMES["baseBoard"], always="manufacturer")]
    if info.chassis is not None:
        argv += ["-smbios", _table(3, info.chassis, NAMES["chassis"], always="manufacturer")]
    if info.oem_strings is not None and info.oem_strings.entries:
        argv += ["-smbios", "type=11" + "".join(
            f",value={opt(e.value or '')}" for e in info.oem_strings.entries)]
    return argv


def loader_is_rom(dom: Domain) -> bool:
    ob = dom.os.boot_options
    return ob.loader is not None and ob.loader.type in (None, LoaderType.ROM)
