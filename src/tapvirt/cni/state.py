"""Attachment records: what tapvirt-cni made for which (containerID, ifname).

DEL and GC must know what this plugin made, also after the pod's namespace is gone
(a private macvtap node lives in the host's /dev, not in the namespace). ADD writes the
record *before* it creates anything, so a crash half-way leaves a record GC can act on.
Records live in a root-owned 0700 directory, one JSON file per attachment, named by a
hash (container IDs may contain '.', so no name is ambiguous), written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from tapvirt.cni.errors import CNI_STATE
from tapvirt.errors import TapvirtError

MAX_RECORD = 64 * 1024


def attachment_hash(container_id: str) -> str:
    """The short ID in the device's mark: ties a device to the container it was made for."""
    return hashlib.sha256(container_id.encode()).hexdigest()[:16]


@dataclass
class Record:
    container_id: str
    ifname: str
    netns: str
    kind: str
    network: str
    node: str | None = None  # private macvtap node path
    rdev: list[int] | None = None  # its (major, minor) once made
    device: str | None = None  # the device's name (CNI_IFNAME unless `device` was given)

    @property
    def key(self) -> str:
        return record_key(self.container_id, self.ifname)


def record_key(container_id: str, ifname: str) -> str:
    return hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()[:32]


def _state_error(path: str, cause: str) -> TapvirtError:
    return TapvirtError(CNI_STATE, f"stateDir {path}", cause,
                        "make it a root-owned 0700 directory (stateDir in the configuration)")


class Store:
    def __init__(self, path: str) -> None:
        self.path = path

    def _dir(self) -> str:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            st = os.lstat(self.path)
        except OSError as exc:
            raise _state_error(self.path, exc.strerror or str(exc)) from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise _state_error(self.path, "is not a directory of ours, or is writable by "
                               "others (or a symlink)")
        return self.path

    def write(self, rec: Record) -> None:
        d = self._dir()
        tmp = os.path.join(d, f".{rec.key}.{os.getpid()}")
        data = json.dumps(asdict(rec)).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(d, f"{rec.key}.json"))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _state_error(self.path, f"cannot write a record: {exc.strerror}") from None

    def _load(self, path: str) -> Record | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _state_error(self.path, f"cannot read {path}: {exc.strerror}") from None
        try:
            raw = os.read(fd, MAX_RECORD + 1)
        finally:
            os.close(fd)
        try:
            data: Any = json.loads(raw)
            return Record(**data)
        except (ValueError, TypeError):
            return None  # not ours or damaged: GC reports it, nothing acts on it

    def read(self, container_id: str, ifname: str) -> Record | None:
        if not os.path.isdir(self.path):
            return None
        return self._load(os.path.join(self.path, f"{record_key(container_id, ifname)}.json"))

    def remove(self, container_id: str, ifname: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, f"{record_key(container_id, ifname)}.json"))

    def all(self) -> Iterator[tuple[str, Record | None]]:
        """(file name, record or None if unreadable) for every record."""
        if not os.path.isdir(self.path):
            return
        for name in sorted(os.listdir(self._dir())):
            if name.endswith(".json") and not name.startswith("."):
                yield name, self._load(os.path.join(self.path, name))
