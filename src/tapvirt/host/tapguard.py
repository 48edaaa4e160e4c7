"""The check that a tap being created holds its creator's queues and nobody else's.

Until TUNSETOWNER a new tap has no owner, and the kernel lets anyone who can open a tun
clone node in its namespace attach a queue to a multi-queue tap, a queue they keep
after the owner is set (kernel-facts §1). Shared by tapvirt-prep's persistent taps
(host/admin.py) and tapvirt's managed ones (host/tap.py): after its own queues are
attached, the creator counts them, and deletes the tap if there is one more."""

from __future__ import annotations

from tapvirt.errors import TapvirtError
from tapvirt.host.api import TunInfo
from tapvirt.prep.errors import DEVICE_RACED


def only_our_queues(tun: TunInfo | None, ours: int) -> bool:
    """Whether exactly `ours` queues (enabled or disabled) are attached. The kernel
    reports the counts for multi-queue taps only; a single-queue tap refuses a second
    attach (EBUSY), so its one queue is the creator's."""
    if tun is None:
        return False
    if not tun.multi_queue:
        return True
    return tun.num_queues + tun.num_disabled_queues == ours


def raced_error(name: str) -> TapvirtError:
    return TapvirtError(
        DEVICE_RACED, f"tap {name}",
        "another queue was attached to it while it was being created; it was "
        "deleted again",
        "find who opens the tun device in this namespace (ls -l /proc/*/fd | grep "
        "tun) and run the command again",
    )
