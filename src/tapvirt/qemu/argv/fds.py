"""File descriptors QEMU inherits: which launcher fd becomes which number in QEMU.

QEMU refers to tap and vhost fds by number. With `fd_base` (the default, 3) the numbers
on the command line are fd_base, fd_base+1, ... in interface order (tap fds, then vhost
fds), independent of the numbers the launcher happens to hold; `fd_layout()` says which
parent fd becomes which child fd and `remap_actions()` turns that into `os.posix_spawn`
file actions. So `domxml-to-native` prints exactly the argv that `start` runs. With
`fd_base=None` the parent's own numbers are used (for a launcher that passes fds unchanged
with `pass_fds`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tapvirt.qemu.argv.interface import NetBackend

FD_BASE = 3  # the first fd number QEMU sees for tap/vhost fds (0-2 are stdio)


def fd_layout(backends: Iterable[NetBackend], fd_base: int | None = FD_BASE
              ) -> list[tuple[int, int]]:
    """(launcher fd, fd number in QEMU) for every fd QEMU must inherit, in argv order."""
    pairs: list[tuple[int, int]] = []
    for b in backends:
        for fd in (*b.tap_fds, *b.vhost_fds):
            pairs.append((fd, fd if fd_base is None else fd_base + len(pairs)))
    return pairs


def remap_actions(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, ...]]:
    """`os.posix_spawn` file_actions that give the child each parent fd under its new number.

    Sources may overlap targets (parent fd 4 -> 3 while parent fd 3 -> 4), so every source
    is first duplicated above all of them, then moved down; dup2 clears close-on-exec.
    """
    if not pairs:
        return []
    high = max(max(p, c) for p, c in pairs) + 1
    actions: list[tuple[int, ...]] = []
    for i, (parent, _child) in enumerate(pairs):
        actions.append((os.POSIX_SPAWN_DUP2, parent, high + i))
    for i, (_parent, child) in enumerate(pairs):
        actions.append((os.POSIX_SPAWN_DUP2, high + i, child))
    for i in range(len(pairs)):
        actions.append((os.POSIX_SPAWN_CLOSE, high + i))
    return actions
