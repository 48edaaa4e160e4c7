"""Open /dev/vhost-net once per queue (only used for kvm guests with virtio NICs)."""

from __future__ import annotations

import os

from tapvirt.host.api import OwnedFds

VHOST_NET = "/dev/vhost-net"


def open_vhost_net(queues: int, path: str = VHOST_NET) -> OwnedFds:
    """One O_RDWR fd per queue; raises OSError (and closes what it opened) on failure."""
    with OwnedFds() as fds:
        for _ in range(queues):
            fds.add(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        return fds
