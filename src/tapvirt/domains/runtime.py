"""Runtime state of guests: where it lives, how it is written, locked and reconciled.

Layout (one private directory per user, one subdirectory per domain):

    $XDG_RUNTIME_DIR/tapvirt/          (fallback /tmp/tapvirt-<uid>), 0700, owned by us
        NAME/lock                      flock: one start/stop of NAME at a time
        NAME/state.json                written atomically (temp file + rename)
        NAME/qmp.sock                  QEMU's monitor, 0600 (the directory is private)
        NAME/console.log               serial port 0 (previous run: console.log.old)
        NAME/qemu.log                  QEMU's stdout/stderr
        NAME/supervisor.log            the supervisor's own messages
        NAME/domain.xml                the live definition (transient domains: the only one)

Stdlib only: the supervisor imports this.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tapvirt.domains.errors import DOMAIN_BUSY, RUNTIME_DIR_UNSAFE
from tapvirt.errors import TapvirtError

# Domain states, named like libvirt's `virsh domstate`.
RUNNING = "running"
PAUSED = "paused"
STARTING = "starting"
SHUTOFF = "shut off"
IN_SHUTDOWN = "in shutdown"

STATE_VERSION = 1


def runtime_root() -> Path:
    """The user's private runtime directory, created if needed and verified."""
    uid = os.getuid()
    xdg = os.environ.get("TAPVIRT_RUNTIME_DIR")
    if xdg:
        root = Path(xdg)
        parent = None
    elif os.environ.get("XDG_RUNTIME_DIR"):
        parent = Path(os.environ["XDG_RUNTIME_DIR"])
        root = parent / "tapvirt"
    else:
        parent = None
        root = Path(f"/tmp/tapvirt-{uid}")
    if parent is not None and not parent.is_dir():
        raise TapvirtError(
            RUNTIME_DIR_UNSAFE, str(parent), "XDG_RUNTIME_DIR does not exist",
            "unset XDG_RUNTIME_DIR or create it: install -d -m 700 " + str(parent),
        )
    root = root.absolute()  # the supervisor changes its working directory
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    _verify_private(root, uid)
    return root


def _verify_private(path: Path, uid: int) -> None:
    """A directory we own that nobody else can enter (not a symlink someone planted)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise TapvirtError(RUNTIME_DIR_UNSAFE, str(path), f"cannot use it: {exc.strerror}",
                           f"remove it or set TAPVIRT_RUNTIME_DIR: rm -rf {path}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise TapvirtError(RUNTIME_DIR_UNSAFE, str(path), "is not a directory (a symlink?)",
                           f"remove it: rm {path}")
    if st.st_uid != uid:
        raise TapvirtError(
            RUNTIME_DIR_UNSAFE, str(path),
            f"is owned by uid {st.st_uid}, not by us (uid {uid}): someone else created it",
            "set XDG_RUNTIME_DIR to your own directory, or TAPVIRT_RUNTIME_DIR=DIR",
        )
    if st.st_mode & 0o077:
        raise TapvirtError(
            RUNTIME_DIR_UNSAFE, str(path),
            f"has mode {stat.S_IMODE(st.st_mode):04o}: other users can reach the QMP sockets",
            f"chmod 700 {path}",
        )


@dataclass
class IfaceState:
    """One interface of a running guest, as `domiflist` shows it."""

    alias: str
    type: str
    device: str | None
    model: str
    mac: str
    delete_at_stop: bool = False
    link: str = "up"  # <link state>, changed live by domif-setlink / update-device


@dataclass
class State:
    """The state file's content. Unknown keys of newer versions are ignored."""

    name: str
    uuid: str = ""
    state: str = SHUTOFF
    reason: str = ""
    transient: bool = False
    launcher_pid: int | None = None
    supervisor_pid: int | None = None
    supervisor_start: int | None = None  # /proc start time: detects pid reuse
    qemu_pid: int | None = None
    qemu_start: int | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    exit_status: int | None = None
    restarts: int = 0
    interfaces: list[IfaceState] = field(default_factory=list)
    to_delete: list[str] = field(default_factory=list)
    # check findings that did not stop the start (e.g. device-down): Finding.to_json()
    warnings: list[dict[str, Any]] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["interfaces"] = [IfaceState(**i) for i in data.get("interfaces", [])]
        return cls(**known)


class DomainDir:
    """The runtime files of one domain."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.path = root / name

    def ensure(self) -> DomainDir:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.path, 0o700)
        _verify_private(self.path, os.getuid())
        return self

    def exists(self) -> bool:
        return self.path.is_dir()

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def qmp_socket(self) -> Path:
        path = self.path / "qmp.sock"
        if len(str(path).encode()) > 100:  # sun_path holds 108 bytes
            import hashlib

            digest = hashlib.sha256(self.name.encode()).hexdigest()[:16]
            return self.root / f".{digest}.qmp"
        return path

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def supervisor_log(self) -> Path:
        return self.path / "supervisor.log"

    @property
    def domain_xml(self) -> Path:
        return self.path / "domain.xml"

    # -- state ------------------------------------------------------------------------

    def read(self) -> State:
        try:
            with open(self.state_file, encoding="utf-8") as f:
                return State.from_json(json.load(f))
        except FileNotFoundError:
            return State(self.name)
        except (ValueError, TypeError):
            # a torn or foreign file: writes are atomic, so this is not ours; start over
            return State(self.name, reason="state file unreadable")

    def write(self, state: State) -> None:
        write_atomic(self.state_file, json.dumps(state.to_json(), indent=1) + "\n")

    # -- lock -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, *, wait: float = 0.0) -> Iterator[None]:
        """Hold the domain's lock; another holder -> domain-busy (after `wait` seconds)."""
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise TapvirtError(
                            DOMAIN_BUSY, f"domain {self.name}",
                            "another tapvirt command is starting or stopping it right now",
                            "wait for it to finish, then retry",
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` so that readers see the old or the new content, never a mix."""
    # tempfile would pull shutil/random into the supervisor; pid + time is unique enough
    # because the directory is private and O_EXCL refuses a collision
    tmp = path.parent / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        # no fsync: runtime state describes processes, which a power loss ends anyway;
        # the rename alone keeps readers from seeing a torn file (and fsync costs
        # milliseconds per write on a disk-backed /tmp, on the start's critical path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def list_domain_dirs(root: Path) -> list[DomainDir]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(root)):
            if not entry.startswith("."):
                d = DomainDir(root, entry)
                if d.state_file.exists():
                    out.append(d)
    return out
