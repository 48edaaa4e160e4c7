"""One tapvirt-prep at a time: quotas and all-or-nothing runs are decided on a view of
the devices that no concurrent run may change between the check and the creation."""

from __future__ import annotations

import fcntl
import os

LOCK_PATHS = ("/run/lock/tapvirt-prep.lock", "/run/tapvirt-prep.lock")


def acquire() -> int | None:
    """Block until we hold the lock; the fd holds it until the process exits. None when
    no lock file can be made (no /run): then runs are not serialised."""
    for path in LOCK_PATHS:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    return None
