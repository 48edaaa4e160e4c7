"""Firmware autoselection from QEMU's firmware descriptors, as libvirt 9.0 does it
(src/qemu/qemu_firmware.c), and the per-domain NVRAM file.

Descriptors (docs/interop/firmware.json of QEMU) are read from, highest priority first,
`$XDG_CONFIG_HOME/qemu/firmware` (`~/.config/qemu/firmware`), `/etc/qemu/firmware` and
`/usr/share/qemu/firmware`. Files are taken by name: a name in a higher-priority directory
hides the same name below it, and an empty file hides it without replacing it. The union
is sorted by file name and the first descriptor that matches the domain wins:

* interface `uefi` for `<os firmware='efi'>` (`bios` for firmware='bios'),
* a `flash` mapping with raw executable and NVRAM template (the only kind libvirt 9.0
  uses for x86 pflash) in `split` mode, or in `stateless` mode (no NVRAM) for
  `<loader stateless='yes'/>`,
* a target of the domain's architecture whose machine glob matches the canonical machine
  type (`q35` is `pc-q35-7.2`, `pc` is `pc-i440fx-7.2` on QEMU 7.2),
* `<firmware><feature name='secure-boot'|'enrolled-keys' enabled=.../>` as asked,
* `<loader secure='yes'>` needs a descriptor that `requires-smm`; `<features><smm
  state='off'/>` excludes those.

The chosen descriptor fills `<loader readonly='yes' type='pflash'>`, `secure='yes'` when it
has `secure-boot`, `<features><smm state='on'/>` when it `requires-smm`, and the `<nvram>`
template. An `<nvram>` without a path becomes `NAME_VARS.fd` in the user's tapvirt data
directory (`$XDG_DATA_HOME/tapvirt/nvram`, `~/.local/share/tapvirt/nvram`), libvirt's
session-mode naming. `prepare_nvram` copies the template there on first start (0600).
A stateless loader (`<loader stateless='yes'>`) has no NVRAM: none is added or created.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapvirt.errors import TapvirtError, define

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

_L = "start"
FIRMWARE_NOT_FOUND = define(
    "firmware-not-found",
    "no QEMU firmware descriptor matches <os firmware=...> (arch, machine, secure-boot, "
    "enrolled-keys), or the firmware file is missing: install Debian's ovmf",
    layer=_L)
NVRAM_UNUSABLE = define(
    "nvram-unusable",
    "the per-domain NVRAM file cannot be created from its template, or there is no template",
    layer=_L)
NVRAM_EXISTS = define(
    "nvram-exists",
    "undefine refused: the domain has an NVRAM file; pass --nvram to remove it or "
    "--keep-nvram to keep it (as virsh)", layer="domains")

SYSTEM_DIRS = ("/etc/qemu/firmware", "/usr/share/qemu/firmware")
# QEMU 7.2's aliases: libvirt matches descriptors against the canonical machine name.
MACHINE_ALIASES = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}
_FIX_INSTALL = "install the UEFI firmware: apt-get install ovmf (it puts the descriptors in " \
    "/usr/share/qemu/firmware)"


@dataclass(frozen=True)
class Descriptor:
    path: str
    interfaces: tuple[str, ...]
    device: str
    mode: str  # the flash mapping's mode: split (code + NVRAM template), stateless, combined
    executable: str | None
    executable_format: str | None
    template: str | None
    template_format: str | None
    targets: tuple[tuple[str, tuple[str, ...]], ...]  # (architecture, machine globs)
    features: frozenset[str]

    @classmethod
    def from_json(cls, path: str, data: Mapping[str, Any]) -> Descriptor:
        mapping = data.get("mapping") or {}
        exe = mapping.get("executable") or {}
        tpl = mapping.get("nvram-template") or {}
        return cls(
            path=path,
            interfaces=tuple(data.get("interface-types") or ()),
            device=str(mapping.get("device", "")), mode=str(mapping.get("mode", "split")),
            executable=exe.get("filename"), executable_format=exe.get("format", "raw"),
            template=tpl.get("filename"), template_format=tpl.get("format", "raw"),
            targets=tuple((str(t.get("architecture", "")), tuple(t.get("machines") or ()))
                          for t in data.get("targets") or ()),
            features=frozenset(data.get("features") or ()),
        )


def descriptor_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Highest priority first, as libvirt searches them in session mode."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        user = Path(xdg)
    else:
        user = Path(env.get("HOME") or os.path.expanduser("~")) / ".config"
    return [user / "qemu" / "firmware", *(Path(d) for d in SYSTEM_DIRS)]


def load_descriptors(dirs: Iterable[Path]) -> list[Descriptor]:
    """The effective descriptors, sorted by file name; unreadable/invalid ones skipped."""
    chosen: dict[str, Path] = {}
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            if name.endswith(".json") and name not in chosen:
                chosen[name] = d / name
    out: list[Descriptor] = []
    for name in sorted(chosen):
        p = chosen[name]
        try:
            text = p.read_text(encoding="utf-8")
            if not text.strip():
                continue  # an empty file masks the one of that name below it
            data = json.loads(text)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(Descriptor.from_json(str(p), data))
    return out


def canonical_machine(machine: str | None) -> str:
    m = machine or "pc"
    return MACHINE_ALIASES.get(m, m)


def matches(d: Descriptor, dom: Domain) -> bool:
    from tapvirt.conf.domain.osboot import FirmwareFeatureName

    want_iface = "uefi" if dom.os.firmware == "efi" else "bios"
    if want_iface not in d.interfaces:
        return False
    if d.device != "flash" or d.executable is None:
        return False  # libvirt 9.0 on x86: pflash only ("memory"/"kernel" are other arches)
    if d.executable_format != "raw" or (d.template is not None and d.template_format != "raw"):
        return False
    stateless = dom.os.boot_options.loader is not None and \
        bool(dom.os.boot_options.loader.stateless)
    if d.mode != ("stateless" if stateless else "split"):
        return False  # libvirt: "Discarding loader without stateless (split) flash"
    arch = dom.os.arch or "x86_64"
    machine = canonical_machine(dom.os.machine)
    if not any(a == arch and any(fnmatch.fnmatchcase(machine, g) for g in globs)
               for a, globs in d.targets):
        return False
    ob = dom.os.boot_options
    ff = ob.firmware_features
    if ff is not None:
        for name in FirmwareFeatureName:
            want = ff.wanted(name)
            if want is not None and want != (name.value in d.features):
                return False
    smm = "requires-smm" in d.features
    if ob.loader is not None and ob.loader.secure and not smm:
        return False
    return not (smm and dom.features.smm is False)


def select(dom: Domain, descriptors: Iterable[Descriptor]) -> Descriptor | None:
    for d in descriptors:
        if matches(d, dom):
            return d
    return None


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/tapvirt` or `~/.local/share/tapvirt`."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "tapvirt"
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".local" / "share" / "tapvirt"


def default_nvram_path(name: str, env: Mapping[str, str] | None = None) -> Path:
    return data_dir(env) / "nvram" / f"{name}_VARS.fd"


def _template_for(loader: str, descriptors: Iterable[Descriptor]) -> str | None:
    for d in descriptors:
        if d.executable == loader and d.template is not None:
            return d.template
    return None


def resolve(dom: Domain, *, descriptors: list[Descriptor] | None = None,
            env: Mapping[str, str] | None = None) -> Domain:
    """The domain with its firmware chosen and its NVRAM path set (pure but for reading
    the descriptor directories when `descriptors` is None). Unchanged without firmware=,
    a pflash loader or an <nvram>."""
    from tapvirt.conf.domain.osboot import Loader, LoaderType, Nvram

    ob = dom.os.boot_options
    if dom.os.firmware != "efi" and not ob.pflash:
        return dom
    if descriptors is None:
        descriptors = load_descriptors(descriptor_dirs(env))
    features = dom.features
    if dom.os.firmware == "efi":
        d = select(dom, descriptors)
        if d is None:
            asked = ", ".join(f"{f.name.value}={'yes' if f.enabled else 'no'}"
                              for f in (ob.firmware_features.features
                                        if ob.firmware_features else ()))
            raise TapvirtError(
                FIRMWARE_NOT_FOUND, f"domain '{dom.name}' <os firmware='efi'>",
                f"no firmware descriptor matches arch {dom.os.arch or 'x86_64'}, machine "
                f"{canonical_machine(dom.os.machine)}"
                + (f", {asked}" if asked else "")
                + f" (searched {', '.join(str(p) for p in descriptor_dirs(env))}; "
                f"{len(descriptors)} descriptor(s) found)",
                _FIX_INSTALL + "; or change the machine type or the <firmware> features")
        assert d.executable is not None
        secure = True if "secure-boot" in d.features else None
        if ob.loader is not None and ob.loader.secure:
            secure = True
        stateless = True if ob.loader is not None and ob.loader.stateless else None
        loader = Loader(path=d.executable, readonly=True, secure=secure,
                        type=LoaderType.PFLASH, stateless=stateless)
        template = ob.nvram.template if ob.nvram is not None and ob.nvram.template else \
            d.template
        nvram = Nvram(path=ob.nvram.path if ob.nvram is not None else None, template=template)
        if "requires-smm" in d.features and features.smm is None:
            features = replace(features, smm=True)
        if stateless:  # the firmware keeps no variables: no NVRAM
            boot = replace(ob, loader=loader, nvram=None)
            return replace(dom, os=replace(dom.os, boot_options=boot), features=features)
    elif ob.loader is not None and ob.loader.stateless:
        return dom  # a stateless flash: no NVRAM
    else:
        assert ob.loader is not None
        loader = ob.loader
        if not loader.readonly and ob.nvram is None:
            return dom  # a writable flash holds its own variables
        nvram = ob.nvram or Nvram()
        if nvram.template is None and loader.path is not None:
            nvram = replace(nvram, template=_template_for(loader.path, descriptors))
    if nvram.path is None:
        nvram = replace(nvram, path=str(default_nvram_path(dom.name, env)))
    boot = replace(ob, loader=loader, nvram=nvram)
    return replace(dom, os=replace(dom.os, boot_options=boot), features=features)


def nvram_path(dom: Domain, env: Mapping[str, str] | None = None) -> Path | None:
    """Where this (stored) definition keeps its NVRAM, without reading descriptors."""
    ob = dom.os.boot_options
    if ob.loader is not None and ob.loader.stateless:
        return None
    if ob.nvram is not None and ob.nvram.path is not None:
        return Path(ob.nvram.path)
    if dom.os.firmware == "efi" or (ob.pflash and ob.loader is not None
                                    and (ob.loader.readonly or ob.nvram is not None)):
        return default_nvram_path(dom.name, env)
    return None


def prepare(dom: Domain) -> None:
    """Check the firmware file and create the NVRAM from its template on first start
    (mode 0600, the user's own). Call with a resolved domain."""
    ob = dom.os.boot_options
    if ob.loader is None or ob.loader.path is None:
        return
    if not os.path.exists(ob.loader.path):
        raise TapvirtError(
            FIRMWARE_NOT_FOUND, f"<loader>{ob.loader.path}</loader>",
            "the firmware file does not exist",
            _FIX_INSTALL + ", or correct the path")
    if ob.nvram is None or ob.nvram.path is None:
        return
    target = Path(ob.nvram.path)
    if target.exists():
        return
    subject = f"<nvram>{target}</nvram>"
    if ob.nvram.template is None:
        raise TapvirtError(
            NVRAM_UNUSABLE, subject,
            "the NVRAM file does not exist and there is no template to create it from "
            f"(libvirt: unable to find any master var store for loader: {ob.loader.path})",
            "add template='/usr/share/OVMF/OVMF_VARS_4M.fd' to <nvram> (or create the file)")
    try:
        data = Path(ob.nvram.template).read_bytes()
    except OSError as exc:
        raise TapvirtError(
            NVRAM_UNUSABLE, subject,
            f"cannot read the template {ob.nvram.template}: {exc.strerror or exc}",
            _FIX_INSTALL + ", or correct <nvram template=...>") from None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, target)  # never replaces a file another start made meanwhile
    except FileExistsError:
        pass
    except OSError as exc:
        raise TapvirtError(
            NVRAM_UNUSABLE, subject, f"cannot create it: {exc.strerror or exc}",
            f"make {target.parent} writable for you, or give another path in <nvram>"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
