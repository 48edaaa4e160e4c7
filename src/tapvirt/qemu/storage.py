"""Read-only checks of a domain's disk images before QEMU starts, so an image the user
cannot open fails by name (the disk, the path, why, the fix) instead of as QEMU's
`qemu-failed` after a spawn."""

from __future__ import annotations

import errno
import os
import stat

from tapvirt.conf.model import DiskDevice, Domain
from tapvirt.errors import TapvirtError, define

DISK_UNREADABLE = define(
    "disk-unreadable",
    "a <disk> source image is missing, not a regular file, or not readable (writable) by "
    "the user",
    layer="lifecycle",
)


def check_disk_sources(dom: Domain) -> None:
    """Each disk's image exists, is a regular file (or block device) and can be opened
    the way QEMU will open it: read-only for `<readonly/>` and cdroms, else read-write."""
    for disk in dom.devices.disks:
        path = disk.source_file
        if path is None:
            continue  # an empty cdrom or floppy: nothing to open
        ro = disk.readonly or disk.device is DiskDevice.CDROM
        subject = f"domain {dom.name} disk {disk.target_dev} ({path})"
        try:
            info = os.stat(path)
        except OSError as exc:
            missing = exc.errno == errno.ENOENT
            raise TapvirtError(
                DISK_UNREADABLE, subject, "it does not exist" if missing
                else f"it cannot be looked at: {exc.strerror}",
                "create the image (e.g. qemu-img create -f qcow2 PATH 10G) or fix "
                "<source file>" if missing else
                "make its directories searchable by you (chmod o+x / an ACL)") from None
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
            raise TapvirtError(DISK_UNREADABLE, subject,
                               "it is not a regular file or block device",
                               "point <source file> at the disk image")
        mode = os.R_OK if ro else os.R_OK | os.W_OK
        if not os.access(path, mode):
            how = "read" if ro else "read and written"
            raise TapvirtError(
                DISK_UNREADABLE, subject, f"it cannot be {how} by uid {os.getuid()}",
                f"give yourself access: chown {os.getuid()} '{path}' (or chmod u+"
                f"{'r' if ro else 'rw'}); a shared base image can stay read-only under "
                "a qcow2 overlay: qemu-img create -f qcow2 -b BASE -F raw OVERLAY")
