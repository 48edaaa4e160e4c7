"""Revoking and collecting the device nodes tapvirt-prep hands out (root only).

A macvtap's char device number is freed when the device goes (its lower link deleted,
its namespace deleted, an admin's `ip link del`) and the kernel gives it to the next
macvtap. A node made for the old device and owned by its user would then open the new
one: someone else's traffic. devtmpfs removes its own `/dev/tapN` (and resets the
owner of every hard link first), but a private node tapvirt-prep made stays. So:

* before a node is given out, every other node of the same device number in the node
  directories tapvirt-prep ever used, and at the top of /dev, is revoked
  (`purge_rdev`): made root:root 0600 through an O_PATH fd (that covers hard links,
  they are the same inode), and unlinked if it is in a node directory;
* deleting a device revokes the node its (root-only) mark names, wherever that is;
* `stale_nodes` lists the nodes no live device claims, for `tapvirt-prep gc`.

The node directories used are recorded in a root-only file (`REGISTRY`), so a change
of `[settings] node_dir` or `--node-dir` does not hide old nodes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

REGISTRY = "/run/tapvirt-prep.node-dirs"
_REGISTRY_MAX = 64 * 1024
DEV = "/dev"


@dataclass(frozen=True)
class Node:
    """A char device node found in a node directory."""

    directory: str
    name: str
    rdev: tuple[int, int]

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.name}"


def _rdev(st: os.stat_result) -> tuple[int, int]:
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def open_dir(path: str) -> int | None:
    """An fd of an existing directory reached without following a symlink, every
    component root's and not writable by others (sticky intermediates allowed); None
    if it does not exist or is not such a directory: then nothing in it is touched."""
    if not os.path.isabs(path):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    fd = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            if not _trusted(fd, final=False):
                os.close(fd)
                return None
            try:
                nxt = os.open(part, os.O_DIRECTORY | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError:
                os.close(fd)
                return None
            os.close(fd)
            fd = nxt
            if i == len(parts) - 1 and not _trusted(fd, final=True):
                os.close(fd)
                return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd


def _trusted(fd: int, *, final: bool) -> bool:
    st = os.fstat(fd)
    if st.st_uid != 0 or not stat.S_ISDIR(st.st_mode):
        return False
    return not st.st_mode & 0o022 or (not final and bool(st.st_mode & stat.S_ISVTX))


def revoke_at(dir_fd: int, name: str, *, unlink: bool,
              rdev: tuple[int, int] | None = None) -> bool:
    """Make char node NAME root:root 0600 (all its hard links with it), then unlink it
    if asked. Only a char node (of `rdev` when given) is touched. True if revoked."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or (rdev is not None and _rdev(st) != rdev):
            return False
        proc = f"/proc/self/fd/{fd}"
        os.chown(proc, 0, 0)
        os.chmod(proc, 0o600)
        if unlink:
            now = os.lstat(name, dir_fd=dir_fd)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(fd)


def revoke_path(path: str, *, unlink: bool, rdev: tuple[int, int] | None = None) -> bool:
    """revoke_at for an absolute path whose directory chain is root's (see open_dir)."""
    directory, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        return False
    dir_fd = open_dir(directory or "/")
    if dir_fd is None:
        return False
    try:
        return revoke_at(dir_fd, name, unlink=unlink, rdev=rdev)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- the registry
# One line per directory: `/path` for a directory of tapvirt-prep's own nodes (named
# `<netns or host>.<device>`, collected by gc), or `revoke-only /path` for one whose
# nodes belong to devices gc cannot find by name (tapvirt-cni's pod directories: the
# pods' namespaces have no names); those are only searched for stale nodes of a device
# number that is handed out again.
_REVOKE_ONLY = "revoke-only "


def _entries(registry: str) -> list[tuple[str, bool]]:
    """(directory, collected by gc) as recorded (a missing or untrusted record: none)."""
    try:
        fd = os.open(registry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        st = os.fstat(fd)
        if st.st_uid != 0 or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
            return []
        data = os.read(fd, _REGISTRY_MAX)
    finally:
        os.close(fd)
    out: list[tuple[str, bool]] = []
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("/"):
            out.append((line, True))
        elif line.startswith(_REVOKE_ONLY + "/"):
            out.append((line[len(_REVOKE_ONLY):], False))
    return out


def _line(path: str, collect: bool) -> str:
    return f"{path}\n" if collect else f"{_REVOKE_ONLY}{path}\n"


def registered_dirs(registry: str = REGISTRY, *, collected_only: bool = False) -> list[str]:
    """The node directories recorded so far; with `collected_only`, only those whose
    nodes gc may judge by their names."""
    return list(dict.fromkeys(d for d, collect in _entries(registry)
                              if collect or not collected_only))


def prune_registry(registry: str = REGISTRY) -> None:
    """Rewrite the record without the directories that no longer exist (atomically:
    a new file renamed over it), so that it stays far below its read limit."""
    entries = _entries(registry)
    keep = list(dict.fromkeys(e for e in entries if os.path.isdir(e[0])))
    if keep == entries:
        return
    tmp = f"{registry}.new"
    with contextlib.suppress(OSError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, "".join(_line(d, c) for d, c in keep).encode())
        finally:
            os.close(fd)
        os.replace(tmp, registry)


def register_dir(path: str, registry: str = REGISTRY, *, collect: bool = True) -> None:
    """Record that nodes are made in `path` (best effort: no /run, no record);
    `collect=False` for a directory gc must leave alone (see above)."""
    if "\n" in path:
        return
    with contextlib.suppress(OSError):
        if os.stat(registry).st_size > _REGISTRY_MAX // 2:
            prune_registry(registry)
    if (path, collect) in _entries(registry):
        return
    with contextlib.suppress(OSError):
        fd = os.open(registry, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_uid == 0:
                os.write(fd, _line(path, collect).encode())
        finally:
            os.close(fd)


def node_dirs(current: str, registry: str = REGISTRY, *, collected_only: bool = False
              ) -> list[str]:
    dirs = registered_dirs(registry, collected_only=collected_only)
    return dirs if current in dirs else [*dirs, current]


# ---------------------------------------------------------------- scanning
@contextlib.contextmanager
def _dir(path: str) -> Iterator[int | None]:
    fd = open_dir(path)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def nodes_in(directory: str) -> list[Node]:
    """Every char node directly in `directory` (a trusted directory; else none)."""
    out: list[Node] = []
    with _dir(directory) as fd:
        if fd is None:
            return out
        for name in os.listdir(fd):
            with contextlib.suppress(OSError):
                st = os.lstat(name, dir_fd=fd)
                if stat.S_ISCHR(st.st_mode):
                    out.append(Node(directory, name, _rdev(st)))
    return out


def purge_rdev(rdev: tuple[int, int], *, keep: set[str], dirs: list[str]) -> list[str]:
    """Revoke every node of device `rdev` but the paths in `keep`: unlinked in the node
    directories, made root:root 0600 at the top of /dev. Returns the paths revoked."""
    done: list[str] = []
    for directory in [*dirs, DEV]:
        in_dev = directory == DEV
        with _dir(directory) as fd:
            if fd is None:
                continue
            for node in nodes_in(directory) if not in_dev else _dev_nodes(fd):
                if node.rdev != rdev or node.path in keep:
                    continue
                if revoke_at(fd, node.name, unlink=not in_dev, rdev=rdev):
                    done.append(node.path)
    return done


def _dev_nodes(fd: int) -> list[Node]:
    out: list[Node] = []
    for name in os.listdir(fd):
        with contextlib.suppress(OSError):
            st = os.lstat(name, dir_fd=fd)
            if stat.S_ISCHR(st.st_mode):
                out.append(Node(DEV, name, _rdev(st)))
    return out


def split_name(name: str) -> list[tuple[str | None, str]]:
    """The (namespace or None for "host", device) pairs a private node name
    `<netns or host>.<device>` can mean (both parts may contain dots)."""
    out: list[tuple[str | None, str]] = []
    for i, ch in enumerate(name):
        if ch == "." and 0 < i < len(name) - 1:
            ns, dev = name[:i], name[i + 1:]
            out.append((None if ns == "host" else ns, dev))
    return out


def macvtap_major() -> int | None:
    """The char major the kernel gave macvtap devices (/proc/devices), if loaded."""
    try:
        with open("/proc/devices", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == "macvtap" and parts[0].isdigit():
                    return int(parts[0])
    except OSError:
        pass
    return None


def number_in_use(rdev: tuple[int, int]) -> bool:
    """Whether some char device of that number exists, in any namespace (/sys/dev/char
    is not per namespace)."""
    return os.path.lexists(f"/sys/dev/char/{rdev[0]}:{rdev[1]}")


def in_dev(path: str) -> bool:
    """A node directly in /dev (devtmpfs's own, e.g. /dev/tap7): revoked, never unlinked."""
    return os.path.dirname(path.rstrip("/")) == DEV
