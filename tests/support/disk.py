"""Bootable disk images of the test guest, built without network downloads and never
committed: a FAT file system holding the test kernel and initramfs, made bootable for
BIOS with Debian's syslinux (its boot sector is the disk's sector 0, so SeaBIOS boots the
unpartitioned image directly), or for UEFI as an EFI system partition: Debian's
systemd-boot (package systemd-boot-efi) as EFI/BOOT/BOOTX64.EFI starts the kernel's EFI
stub with the initramfs and the command line of loader/entries/tv.conf (OVMF boots the
unpartitioned FAT image as a removable medium). startup.nsh does the same from OVMF's UEFI
shell, as a fallback.
Built with mtools (no mount, no loop device), cached next
to the guest in /var/cache/tapvirt-guest/disks/ keyed on the guest, the kernel command
line and syslinux's version; qcow2 overlays on top are made per test with qemu-img.

    python -m tests.support.disk bios|uefi [--cmdline '...']
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.support import guest

DISK_BUILDER = "1"
SIZE_MIB = 32  # kernel 14 MiB + initramfs 4.4 MiB + slack
SDBOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


def _run(*argv: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _cached_fat_disk(cache: Path, stem: str, key_parts: tuple[str, ...], label: str,
                     fill: Callable[[Path, Path, dict[str, str]], None]) -> Path:
    """The cached raw FAT image `disks/STEM-KEY.raw` (KEY from `key_parts`): built once as
    root under the cache lock (mkfs.vfat, then `fill(work, image, mtools_env)`), renamed
    into place only when complete, world-readable."""
    key = hashlib.sha256("\0".join((DISK_BUILDER, *key_parts)).encode()).hexdigest()[:16]
    target = cache / "disks" / f"{stem}-{key}.raw"
    if target.is_file():
        return target
    if os.geteuid() != 0:
        raise PermissionError(f"no cached disk {target}; build it once as root")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o755)
    with guest._locked(cache / ".lock"):
        if target.is_file():
            return target
        work = Path(tempfile.mkdtemp(prefix=".disk-", dir=target.parent))
        try:
            img = work / "disk.raw"
            with open(img, "wb") as f:
                f.truncate(SIZE_MIB << 20)
            _run("mkfs.vfat", "-n", label, str(img))
            fill(work, img, {"MTOOLS_SKIP_CHECK": "1"})
            img.chmod(0o644)
            os.rename(img, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _mcopy(img: Path, files: tuple[tuple[Path, str], ...], mt: dict[str, str]) -> None:
    for src, name in files:
        _run("mcopy", "-i", str(img), str(src), f"::/{name}", env=mt)


def bios_disk(image: guest.GuestImage, cmdline: str, cache: Path = guest.CACHE) -> Path:
    """A raw BIOS-bootable disk of `image` booting with `cmdline` (built once, cached;
    world-readable: use it read-only, as a qcow2 backing file or copied)."""
    def fill(work: Path, img: Path, mt: dict[str, str]) -> None:
        cfg = work / "syslinux.cfg"
        cfg.write_text("SERIAL 0 115200\nDEFAULT tv\nPROMPT 0\nTIMEOUT 0\n"
                       "LABEL tv\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n"
                       f"  APPEND {cmdline}\n")
        _mcopy(img, ((image.kernel, "vmlinuz"), (image.initrd, "initrd.gz"),
                     (cfg, "syslinux.cfg")), mt)
        _run("syslinux", "--install", str(img))

    return _cached_fat_disk(cache, "bios", (image.key, cmdline, guest._installed("syslinux")),
                            "TVBOOT", fill)


def uefi_disk(image: guest.GuestImage, cmdline: str, cache: Path = guest.CACHE) -> Path:
    """A raw UEFI-bootable disk (an EFI system partition) of `image` booting with `cmdline`
    through OVMF's shell and startup.nsh (built once, cached, world-readable)."""
    def fill(work: Path, img: Path, mt: dict[str, str]) -> None:
        nsh = work / "startup.nsh"
        nsh.write_bytes(("fs0:\r\n\\EFI\\tapvirt\\vmlinuz.efi "
                         "initrd=\\EFI\\tapvirt\\initrd.gz " + cmdline + "\r\n").encode())
        conf, entry = work / "loader.conf", work / "tv.conf"
        conf.write_text("default tv.conf\ntimeout 0\nconsole-mode keep\n")
        entry.write_text("title tapvirt test guest\nlinux /EFI/tapvirt/vmlinuz.efi\n"
                         f"initrd /EFI/tapvirt/initrd.gz\noptions {cmdline}\n")
        _run("mmd", "-i", str(img), "::/EFI", "::/EFI/tapvirt", "::/EFI/BOOT", "::/loader",
             "::/loader/entries", env=mt)
        _mcopy(img, ((image.kernel, "EFI/tapvirt/vmlinuz.efi"),
                     (image.initrd, "EFI/tapvirt/initrd.gz"), (SDBOOT, "EFI/BOOT/BOOTX64.EFI"),
                     (conf, "loader/loader.conf"), (entry, "loader/entries/tv.conf"),
                     (nsh, "startup.nsh")), mt)

    return _cached_fat_disk(cache, "uefi",
                            ("uefi", image.key, cmdline, guest._installed("systemd-boot-efi")),
                            "TVESP", fill)


def qcow2_overlay(base: Path, out: Path, uid: int, gid: int) -> Path:
    """A qcow2 whose backing file is `base` (raw, only read), owned by uid:gid."""
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(out))
    os.chown(out, uid, gid)
    out.chmod(0o600)
    return out


def nocloud_seed(out: Path, user_data: str, meta_data: str, uid: int, gid: int) -> Path:
    """A cloud-init NoCloud seed as `virt-install --cloud-init` makes one: an ISO 9660
    image labelled cidata holding user-data and meta-data (xorrisofs, no mount)."""
    work = Path(tempfile.mkdtemp(prefix=".seed-", dir=out.parent))
    try:
        (work / "user-data").write_text(user_data)
        (work / "meta-data").write_text(meta_data)
        _run("xorrisofs", "-quiet", "-o", str(out), "-V", "cidata", "-J", "-r",
             str(work / "user-data"), str(work / "meta-data"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.chown(out, uid, gid)
    out.chmod(0o600)
    return out


def raw_copy(base: Path, out: Path, uid: int, gid: int) -> Path:
    shutil.copyfile(base, out)
    os.chown(out, uid, gid)
    out.chmod(0o600)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.disk")
    sub = parser.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("bios", help="build (or find) a BIOS-bootable raw disk of the guest")
    b.add_argument("--cmdline", default=None, help="kernel command line (default: idle)")
    u = sub.add_parser("uefi", help="build (or find) a UEFI-bootable raw disk (an ESP)")
    u.add_argument("--cmdline", default=None, help="kernel command line (default: idle)")
    ns = parser.parse_args(argv)
    image = guest.build()
    build = bios_disk if ns.verb == "bios" else uefi_disk
    print(build(image, ns.cmdline or image.cmdline()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
