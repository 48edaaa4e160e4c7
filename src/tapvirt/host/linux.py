"""`LinuxHost`: the real `Host` — netlink lookups, tun/macvtap fds, managed devices."""

from __future__ import annotations

import errno
import os
import socket
import stat

from tapvirt.host import linkops, links, macvtap, procfs, tap
from tapvirt.host.api import Identity, LinkInfo, NodeStatus, OwnedFds
from tapvirt.host.netlink import RtNetlink

CAP_NET_ADMIN = 12


def effective_caps(status_path: str = "/proc/self/status") -> int:
    try:
        with open(status_path, encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


class LinuxHost:
    """The host as the kernel sees it, in the network namespace we were created in.

    One netlink socket is opened on first use and reused; `close()` releases it.
    """

    def __init__(self, *, sysfs: str = links.SYSFS_NET) -> None:
        self._nl = RtNetlink()
        self._sysfs = sysfs
        self._identity: Identity | None = None

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> LinuxHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identity(self) -> Identity:
        # Read once: tapvirt never changes its own credentials.
        if self._identity is None:
            gids = frozenset({os.getegid(), *os.getgroups()})
            self._identity = Identity(uid=os.geteuid(), gids=gids,
                                      net_admin=bool(effective_caps() >> CAP_NET_ADMIN & 1))
        return self._identity

    def lookup(self, name: str) -> LinkInfo | None:
        links.validate_ifname(name)
        raw = self._nl.get_link(name=name)
        return None if raw is None else links.link_info(self._nl, raw, sysfs=self._sysfs)

    def lookup_index(self, ifindex: int) -> LinkInfo | None:
        raw = self._nl.get_link(index=ifindex)
        return None if raw is None else links.link_info(self._nl, raw, sysfs=self._sysfs)

    def node_status(self, path: str) -> NodeStatus | None:
        """None if `path` does not exist. A node we cannot even stat (a directory on
        the way is not searchable) is reported with uid/gid -1 and no access."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno != errno.EACCES:
                return None
            return NodeStatus(path, False, (0, 0), -1, -1, 0, False)
        return NodeStatus(
            path=path,
            is_char_device=stat.S_ISCHR(st.st_mode),
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)),
            uid=st.st_uid,
            gid=st.st_gid,
            mode=stat.S_IMODE(st.st_mode),
            readable_writable=os.access(path, os.R_OK | os.W_OK),
        )

    def tap_holders(self, name: str) -> tuple[int, ...]:
        # Scanning /proc costs ~0.5 ms and grows with the number of processes; netlink
        # says in ~20 us whether anything is attached at all (a detached queue still
        # counts as held). Only then look for who it is.
        # The kernel reports queue counts for multi_queue taps only; links.tun_info()
        # derives a single-queue tap's from IFLA_CARRIER (also reported when it is DOWN).
        links.validate_ifname(name)
        # A missing device or one that is not a tun/tap has no holders here (a same-named
        # tap in another namespace is not ours to report).
        raw = self._nl.get_link(name=name)
        if raw is None or raw.kind != "tun":
            return ()
        tun = links.tun_info(raw.tun, raw.carrier)
        if tun.num_queues + tun.num_disabled_queues == 0:
            return ()
        return procfs.tap_holders(name)

    def vhost_net_available(self) -> bool:
        try:
            fd = os.open("/dev/vhost-net", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        os.close(fd)
        return True

    def address_is_local(self, address: str) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((address, 0))
            except OSError as err:
                return err.errno != errno.EADDRNOTAVAIL  # other errors: QEMU's to report
        return True

    def open_tap(self, name: str, *, tun_node: str, vnet_hdr: bool, queues: int) -> OwnedFds:
        return tap.open_tap(name, tun_node=tun_node, vnet_hdr=vnet_hdr, queues=queues,
                            lookup=self.lookup, net_admin=self.identity().net_admin)

    def open_macvtap(self, link: LinkInfo, *, node: str, vnet_hdr: bool,
                     queues: int) -> OwnedFds:
        return macvtap.open_macvtap(link, node=node, vnet_hdr=vnet_hdr, queues=queues,
                                    privileged=self.identity().net_admin)

    def create_tap(self, name: str | None, *, tun_node: str, mac: str, mtu: int | None,
                   bridge: str | None, vnet_hdr: bool, queues: int) -> tuple[str, OwnedFds]:
        return tap.create_tap(name, tun_node=tun_node, mac=mac, mtu=mtu, bridge=bridge,
                              vnet_hdr=vnet_hdr, queues=queues, nl=self._nl,
                              lookup=self.lookup, net_admin=self.identity().net_admin)

    def create_macvtap(self, name: str | None, *, link: str, mode: str, mac: str,
                       up: bool) -> LinkInfo:
        return macvtap.create_macvtap(name, link=link, mode=mode, mac=mac, up=up,
                                      nl=self._nl, lookup=self.lookup,
                                      net_admin=self.identity().net_admin)

    def set_link_up(self, name: str) -> None:
        linkops.set_link_up(name, nl=self._nl, lookup=self.lookup,
                            net_admin=self.identity().net_admin)

    def delete_link(self, name: str) -> None:
        linkops.delete_link(name, nl=self._nl, net_admin=self.identity().net_admin)
