"""Disk images checked before QEMU starts (tapvirt.qemu.storage): missing, not a file,
and (as a non-root caller) not readable/writable each fail as disk-unreadable naming the
disk and the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapvirt.conf.model import Domain
from tapvirt.conf.parse import parse_domain
from tapvirt.errors import TapvirtError
from tapvirt.qemu.storage import DISK_UNREADABLE, check_disk_sources


def _dom(path: Path, readonly: bool = False) -> Domain:
    ro = "<readonly/>" if readonly else ""
    return parse_domain(f"""<domain type='qemu'><name>d</name><memory>65536</memory>
<os><type>hvm</type></os><devices><disk type='file' device='disk'>
<source file='{path}'/><target dev='vda' bus='virtio'/>{ro}</disk></devices></domain>""")


def test_missing_image_is_named(tmp_path: Path) -> None:
    with pytest.raises(TapvirtError) as exc:
        check_disk_sources(_dom(tmp_path / "nope.qcow2"))
    assert exc.value.code is DISK_UNREADABLE
    assert "vda" in exc.value.subject and "nope.qcow2" in exc.value.subject
    assert "does not exist" in exc.value.cause and "qemu-img" in exc.value.fix


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(TapvirtError) as exc:
        check_disk_sources(_dom(tmp_path))
    assert exc.value.code is DISK_UNREADABLE
    assert "not a regular file" in exc.value.cause


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file")
def test_unreadable_image(tmp_path: Path) -> None:
    img = tmp_path / "d.raw"
    img.write_bytes(b"\0" * 512)
    img.chmod(0o400)
    with pytest.raises(TapvirtError) as exc:
        check_disk_sources(_dom(img))
    assert "read and written" in exc.value.cause
    check_disk_sources(_dom(img, readonly=True))


def test_readable_image_passes(tmp_path: Path) -> None:
    img = tmp_path / "d.raw"
    img.write_bytes(b"\0" * 512)
    dom = _dom(img)
    assert dom.devices.disks[0].source_file == str(img)
    assert check_disk_sources(dom) is None  # type: ignore[func-returns-value]
