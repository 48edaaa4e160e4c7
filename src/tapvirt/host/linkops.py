"""Privileged changes to links tapvirt created: bring up, delete (RTM_NEWLINK/RTM_DELLINK)."""

from __future__ import annotations

import errno

from tapvirt.errors import TapvirtError
from tapvirt.host.api import IFF_UP
from tapvirt.host.links import validate_ifname
from tapvirt.host.netlink import RtNetlink
from tapvirt.host.tap import Lookup, need_privilege
from tapvirt.netcodes import DEVICE_MISSING, HOST_ERROR


def delete_link(name: str, *, nl: RtNetlink, net_admin: bool) -> None:
    need_privilege(net_admin, f"deleting {name}")
    validate_ifname(name)
    try:
        nl.del_link(name=name)
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):
            raise TapvirtError(DEVICE_MISSING, f"device {name}",
                               f"there is no device {name} to delete", "nothing to do") from None
        if e.errno == errno.EPERM:
            need_privilege(False, f"deleting {name}")
        raise TapvirtError(HOST_ERROR, f"device {name}", f"deleting failed: {e.strerror}",
                           f"ip link del {name}") from None


def set_link_up(name: str, *, nl: RtNetlink, lookup: Lookup, net_admin: bool) -> None:
    need_privilege(net_admin, f"bringing {name} up")
    info = lookup(name)
    if info is None:
        raise TapvirtError(DEVICE_MISSING, f"device {name}", f"there is no device {name}",
                           "create it first")
    try:
        nl.new_link(index=info.ifindex, flags=IFF_UP, change=IFF_UP)
    except OSError as e:
        raise TapvirtError(HOST_ERROR, f"device {name}", f"setting it up failed: {e.strerror}",
                           f"ip link set {name} up") from None
