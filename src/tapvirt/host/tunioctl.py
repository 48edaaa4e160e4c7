"""The tun/tap ioctls (values verified in kernel-facts §1), shared by tap.py and macvtap.py."""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNSETVNETHDRSZ = 0x400454D8

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000

VNET_HDR_LEN = 12  # struct virtio_net_hdr_mrg_rxbuf, what virtio-net uses
TUN_CLONE_DEV = (10, 200)  # major, minor of /dev/net/tun

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name + ifr_flags, 40 bytes


def ifreq(name: str, flags: int) -> bytes:
    return _IFREQ.pack(os.fsencode(name), flags)


def set_iff(fd: int, name: str, flags: int) -> str:
    """TUNSETIFF; returns the name the kernel reports back (it fills in templates)."""
    out = fcntl.ioctl(fd, TUNSETIFF, ifreq(name, flags))
    return os.fsdecode(_IFREQ.unpack(out)[0].split(b"\0", 1)[0])


def set_owner(fd: int, uid: int) -> None:
    """TUNSETOWNER: from now on only `uid` (or CAP_NET_ADMIN) may attach a queue."""
    fcntl.ioctl(fd, TUNSETOWNER, uid)


def get_iff(fd: int) -> tuple[str, int]:
    """TUNGETIFF: the attached device's name and flags."""
    raw, flags = _IFREQ.unpack(fcntl.ioctl(fd, TUNGETIFF, ifreq("", 0)))
    return os.fsdecode(raw.split(b"\0", 1)[0]), int(flags)


def reset_fd_state(fd: int) -> None:
    """Per-fd state survives from the previous opener of the device (QEMU re-sets it too,
    net/tap-linux.c): header size back to virtio's 12 bytes, all offloads off until the
    guest negotiates them."""
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("=i", VNET_HDR_LEN))
    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
