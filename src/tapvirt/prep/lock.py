"""One tapvirt-prep at a time: quotas and all-or-nothing runs are decided on a view of
the devices that no concurrent run may change between the check and the creation."""

from __future__ import annotations

import fcntl
import os

# Not /run/lock: it is world-writable, and a user's file planted there could be held
# forever to stop every run.
LOCK_PATH = "/run/tapvirt-prep.lock"


def acquire(path: str = LOCK_PATH) -> int | None:
    """Block until we hold the lock; the fd holds it until the process exits. None when
    no trustworthy lock file can be had (no /run): then runs are not serialised."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    if os.fstat(fd).st_uid != 0:
        os.close(fd)
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd
