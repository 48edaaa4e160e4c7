"""Reading the files tapvirt-prep is pointed at: bounded, regular files only.

tapvirt-prep runs as root on a path a user chose. A FIFO or a terminal would block it
(while other runs wait for it), /dev/zero would make it read until memory runs out, and
opening some device nodes has side effects. So a file is first pinned with O_PATH (no
open of the object itself), checked to be a regular file no larger than the limit, and
only then opened for reading through that fd, non-blocking, and read at most limit+1
bytes (a file that grows meanwhile is still refused).
"""

from __future__ import annotations

import os
import stat

from tapvirt.errors import TapvirtError
from tapvirt.prep.errors import FILE_NOT_REGULAR, FILE_TOO_LARGE

DOMAIN_LIMIT = 1 << 20  # 1 MiB: libvirt domain XML is a few kB; corpus maximum ~40 kB
POLICY_LIMIT = 1 << 20


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: str, *, limit: int, what: str) -> bytes:
    """The content of regular file `path` (symlinks followed, as a user's path may be
    one), at most `limit` bytes; OSError as the kernel says, or a TapvirtError."""
    pin = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(pin)
        if not stat.S_ISREG(st.st_mode):
            raise TapvirtError(
                FILE_NOT_REGULAR, f"{what} {path!r}", f"is {_kind(st.st_mode)}",
                "give the path of a regular file (a pipe, /dev/stdin or a device is "
                "refused: it could block or never end)",
            )
        if st.st_size > limit:
            raise _too_large(path, what, limit)
        # reopening the pinned inode checks permissions like open() does, as the
        # current (effective) user
        fd = os.open(f"/proc/self/fd/{pin}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    finally:
        os.close(pin)
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise _too_large(path, what, limit)
    return b"".join(chunks)


def _too_large(path: str, what: str, limit: int) -> TapvirtError:
    return TapvirtError(
        FILE_TOO_LARGE, f"{what} {path!r}", f"is larger than {limit // 1024} KiB",
        f"give a {what} of at most {limit // 1024} KiB",
    )
