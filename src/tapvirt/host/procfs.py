"""Who holds a tap: /proc/*/fdinfo of a tun fd has a line `iff:\\t<ifname>`
(kernel-facts §5). Only processes we may inspect (our own uid, or all as root) show up."""

from __future__ import annotations

import os

PROC = "/proc"
_SKIP = ("socket:", "pipe:", "anon_inode:")


def tap_holders(name: str, *, proc: str = PROC) -> tuple[int, ...]:
    """Pids with an fd attached to tap `name` (in any namespace: names are not unique
    across namespaces, so callers should present the result as 'probably')."""
    needle = f"iff:\t{name}\n"
    found: list[int] = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return ()
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(proc, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # not ours to look at, or gone
        for fd in fds:
            try:
                # Cheap filter: sockets, pipes and eventfds are never tun fds.
                if os.readlink(os.path.join(fd_dir, fd)).startswith(_SKIP):
                    continue
                with open(os.path.join(proc, entry, "fdinfo", fd), encoding="utf-8",
                          errors="replace") as f:
                    if needle in f.read():
                        found.append(int(entry))
                        break
            except OSError:
                continue
    return tuple(sorted(found))
