"""Runtime state of guests: where it lives, how it is written, locked and reconciled.

Layout (one private directory per user, one subdirectory per domain):

    $XDG_RUNTIME_DIR/tapvirt/          (fallback /tmp/tapvirt-<uid>), 0700, owned by us
        NAME/lock                      flock: one start/stop of NAME at a time
        NAME/supervisor.lock           flock held by the guest's supervisor for its whole
                                       life: the truth about liveness (the state is a record)
        NAME/state.json                written atomically (temp file + rename)
        NAME/qmp.sock                  QEMU's monitor, 0600 (the directory is private)
        NAME/console.log               serial port 0 (previous run: console.log.old)
        NAME/qemu.log                  QEMU's stdout/stderr
        NAME/supervisor.log            the supervisor's own messages (a guest without
                                       supervisor: the lifecycle lines of its commands)
        NAME/events.in, events.out     a guest without supervisor: QEMU's own events
                                       monitor (a FIFO it reads, the log it writes)
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

from tapvirt.domains.errors import (
    DOMAIN_BUSY,
    DOMAIN_RUNNING,
    RUNTIME_DIR_FULL,
    RUNTIME_DIR_UNSAFE,
    RUNTIME_DIR_UNWRITABLE,
    RUNTIME_PATH_TOO_LONG,
    STATE_UNREADABLE,
)
from tapvirt.errors import TapvirtError

# Domain states, named like libvirt's `virsh domstate`.
RUNNING = "running"
PAUSED = "paused"
STARTING = "starting"
SHUTOFF = "shut off"
IN_SHUTDOWN = "in shutdown"
CRASHED = "crashed"  # a guest panic kept for inspection (<on_crash>preserve), reason panicked

KNOWN_STATES = (RUNNING, PAUSED, STARTING, SHUTOFF, IN_SHUTDOWN, CRASHED)
# What `list` shows for a domain whose state file cannot be trusted (see reconcile)
UNKNOWN = "unknown"

STATE_VERSION = 1
MAX_STATE_BYTES = 1 << 20  # a state file is a few KiB; anything bigger is not ours
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL


def write_error(path: Path, exc: OSError) -> TapvirtError:
    """A failed write under the runtime directory, with the path and the fix."""
    where = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TapvirtError(
            RUNTIME_DIR_FULL, str(path), f"cannot write it: {exc.strerror}",
            f"free some space on the file system of {where} (`df -h {where}`), or set "
            "TAPVIRT_RUNTIME_DIR to a private directory on one with room",
            details={"errno": exc.errno, "path": str(path)},
        )
    return TapvirtError(
        RUNTIME_DIR_UNWRITABLE, str(path), f"cannot write it: {exc.strerror}",
        f"{where} must be yours, mode 0700, on a writable file system; or set "
        "TAPVIRT_RUNTIME_DIR to such a directory",
        details={"errno": exc.errno, "path": str(path)},
    )


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
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        if not os.path.lexists(root):
            raise write_error(root, exc) from None
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
    launcher_start: int | None = None
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
    # helper processes of the guest (swtpm): {"name", "pid", "start", "remove"}
    helpers: list[dict[str, Any]] = field(default_factory=list)
    # started without a supervisor (tapvirt.domains.direct): QEMU is nobody's child,
    # commands reconcile its state from the process table and QEMU's events log, of
    # which the first `events_offset` bytes are already reflected here
    direct: bool = False
    events_offset: int = 0
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, name: str | None = None) -> State:
        """The state in `data`, checked field by field; ValueError says what is wrong
        (a file of another program, another domain or a newer tapvirt is not ours)."""
        if not isinstance(data, dict):
            raise ValueError(f"holds a JSON {type(data).__name__}, not a state object")
        for key, want in _FIELD_TYPES.items():
            if key in data and not _is(data[key], want):
                raise ValueError(f"field {key!r} is {data[key]!r:.60}, not {_NAMES[want]}")
        if "name" not in data:
            raise ValueError("has no domain name")
        if name is not None and data["name"] != name:
            raise ValueError(f"is the state of domain {data['name']!r:.80}, not {name!r}")
        if data.get("state", SHUTOFF) not in KNOWN_STATES:
            raise ValueError(f"has an unknown state {data['state']!r:.40}")
        if data.get("version", STATE_VERSION) != STATE_VERSION:
            raise ValueError(f"has layout version {data['version']!r:.20}, "
                             f"this tapvirt reads {STATE_VERSION}")
        ifaces = [_iface_from_json(item) for item in data.get("interfaces", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["interfaces"] = ifaces
        return cls(**known)


def _iface_from_json(item: Any) -> IfaceState:
    """One interface record, each field of the type IfaceState declares."""
    from dataclasses import MISSING, fields

    if not isinstance(item, dict):
        raise ValueError(f"has a malformed interface {item!r:.60}")
    args: dict[str, Any] = {}
    for f in fields(IfaceState):
        if f.name not in item:
            if f.default is MISSING:
                raise ValueError(f"has an interface without {f.name!r}")
            continue
        value = item[f.name]
        want = _IFACE_TYPES.get(str(f.type), str)
        if not _is(value, want):
            raise ValueError(f"has an interface whose {f.name!r} is {value!r:.40}")
        args[f.name] = value
    return IfaceState(**args)


_IFACE_TYPES: dict[str, Any] = {"str": str, "str | None": (str, None), "bool": bool,
                                "int": int, "int | None": (int, None)}

# The state file's fields and their JSON types (None: may be null)
_OPT_INT = (int, None)
_FIELD_TYPES: dict[str, Any] = {
    "name": str, "uuid": str, "state": str, "reason": str, "transient": bool,
    "launcher_pid": _OPT_INT, "launcher_start": _OPT_INT, "supervisor_pid": _OPT_INT,
    "supervisor_start": _OPT_INT, "qemu_pid": _OPT_INT, "qemu_start": _OPT_INT,
    "started_at": (float, int, None), "stopped_at": (float, int, None),
    "exit_status": _OPT_INT, "restarts": int, "interfaces": list, "to_delete": list,
    "warnings": list, "helpers": list, "direct": bool, "events_offset": int,
    "version": int,
}
_NAMES: dict[Any, str] = {str: "a string", (str, None): "a string or null",
                          bool: "true/false", int: "an integer", list: "a list",
                          _OPT_INT: "an integer or null",
                          (float, int, None): "a number or null"}


def _is(value: Any, want: Any) -> bool:
    kinds = want if isinstance(want, tuple) else (want,)
    for kind in kinds:
        if kind is None and value is None:
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind in (str, bool, list, float) and isinstance(value, kind):
            return True
    return False


def _writer_alive(pid: str) -> bool:
    """A killed writer that nobody has reaped yet is a zombie: gone for this purpose (the
    fault tests saw a subreaper keep one for minutes, and the temp file with it)."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return line.rsplit(")", 1)[1].split()[0] != "Z"


class DomainDir:
    """The runtime files of one domain."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.path = root / name

    def ensure(self) -> DomainDir:
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise write_error(self.path, exc) from None
        _verify_private(self.path, os.getuid())
        return self

    def exists(self) -> bool:
        return self.path.is_dir()

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def supervisor_lock(self) -> Path:
        return self.path / "supervisor.lock"

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
    def events_pipe(self) -> Path:
        """QEMU's events monitor of a guest without supervisor: a `pipe` chardev, so
        QEMU reads PATH.in and writes PATH.out (tapvirt.domains.direct)."""
        return self.path / "events"

    @property
    def events_log(self) -> Path:
        return self.path / "events.out"

    @property
    def supervisor_log(self) -> Path:
        return self.path / "supervisor.log"

    @property
    def domain_xml(self) -> Path:
        return self.path / "domain.xml"

    # -- state ------------------------------------------------------------------------

    def read(self) -> State:
        """The recorded state (no file: never started, shut off). A file that is not a
        state of this domain written by us raises state-unreadable: it is never taken
        for "shut off" (writes are atomic, so a torn file was damaged from outside)."""
        try:
            fd = os.open(self.state_file,
                         os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return State(self.name)
        except OSError as exc:
            raise self.unreadable(f"cannot open it: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self.unreadable("is not a regular file")
            if info.st_uid != os.getuid():
                raise self.unreadable(f"is owned by uid {info.st_uid}, not by us")
            chunks, size = [], 0
            while size <= MAX_STATE_BYTES:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise self.unreadable(f"cannot read it: {exc.strerror}") from None
        finally:
            os.close(fd)
        if size > MAX_STATE_BYTES:
            raise self.unreadable(f"is larger than {MAX_STATE_BYTES} bytes")
        raw = b"".join(chunks)
        if not raw.strip():
            raise self.unreadable("is empty (truncated)")
        try:
            return State.from_json(json.loads(raw.decode("utf-8")), self.name)
        except UnicodeDecodeError:
            raise self.unreadable("is not UTF-8 text") from None
        except RecursionError:
            raise self.unreadable("is nested too deeply") from None
        except ValueError as exc:  # json.JSONDecodeError is one
            what = "is not valid JSON (torn?)" if isinstance(
                exc, json.JSONDecodeError) else str(exc)
            raise self.unreadable(what) from None

    def unreadable(self, cause: str, *, alive: str = "") -> TapvirtError:
        return TapvirtError(
            STATE_UNREADABLE, str(self.state_file),
            f"the state of domain {self.name} {cause}" + (f"; {alive}" if alive else ""),
            f"`tapvirt destroy {self.name}` stops whatever of it still runs and writes a "
            "fresh state (look at the file first if you want to know who damaged it)",
        )

    def write(self, state: State) -> None:
        """Replace the state file; a failure is runtime-dir-full/-unwritable by name."""
        try:
            write_atomic(self.state_file, json.dumps(state.to_json(), indent=1) + "\n")
        except OSError as exc:
            raise write_error(self.state_file, exc) from None

    def remove_stale_temps(self) -> None:
        """Temporary files of writers that were killed between create and rename
        (write_atomic names them .FILE.PID.NS): removed once that pid is gone."""
        try:
            entries = os.listdir(self.path)
        except OSError:
            return
        for entry in entries:
            parts = entry.rsplit(".", 2)
            if not entry.startswith(".") or len(parts) != 3 or not (
                    parts[1].isdigit() and parts[2].isdigit()):
                continue
            if not _writer_alive(parts[1]):
                with contextlib.suppress(OSError):
                    os.unlink(self.path / entry)

    # -- liveness: the supervisor's lock, not the record ------------------------------

    def hold_supervisor_lock(self, *, wait: float = 2.0) -> int:
        """Taken by the supervisor for its whole life (the fd closes when it exits, also
        when it is killed). Another live supervisor of this domain -> domain-running."""
        try:
            fd = os.open(self.supervisor_lock,
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise write_error(self.supervisor_lock, exc) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise TapvirtError(
                        DOMAIN_RUNNING, f"domain {self.name}",
                        "another supervisor of it is still running",
                        f"stop it first: tapvirt destroy {self.name}") from None
                time.sleep(0.01)

    def supervisor_locked(self) -> bool:
        """Whether a live supervisor holds this domain's lock."""
        return self._lock_probe() is not None

    def supervisor_holder(self) -> int | None:
        """The pid of the live supervisor that holds this domain's lock, None if nobody
        holds it or the kernel does not say who (then it must not be signalled).

        The kernel says who holds a flock (/proc/locks), so this needs no record that a
        full disk, a crash or a stranger could have damaged."""
        probe = self._lock_probe()
        return _flock_holder(*probe) if probe is not None else None

    def _lock_probe(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the supervisor lock if someone holds it, else None."""
        try:
            fd = os.open(self.supervisor_lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None  # nobody holds it (ours goes with the close)
            except BlockingIOError:
                pass
            info = os.fstat(fd)
            return info.st_dev, info.st_ino
        finally:
            os.close(fd)

    def wait_supervisor_gone(self, timeout: float) -> bool:
        """Wait for the lock to be released (a supervisor in its last milliseconds)."""
        deadline = time.monotonic() + timeout
        while self.supervisor_locked():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def qmp_listening(self) -> bool:
        """Whether something (QEMU) listens on the domain's QMP socket: how a QEMU that
        outlived its supervisor is seen when no record can be trusted."""
        import socket

        path = str(self.qmp_socket)
        if not os.path.exists(path):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as s:
            try:
                s.connect(path)
            except BlockingIOError:
                return True  # a full backlog: someone listens
            except OSError:
                return False
        return True

    def check_socket_path(self) -> None:
        """A QMP socket path that fits sun_path, or runtime-path-too-long before anything
        starts (QEMU would fail later with a bare "path too long")."""
        path = str(self.qmp_socket)
        if len(path.encode()) > SUN_PATH_MAX:
            raise TapvirtError(
                RUNTIME_PATH_TOO_LONG, path,
                f"the QMP socket path is {len(path.encode())} bytes; a unix socket path "
                f"holds at most {SUN_PATH_MAX}",
                f"use a shorter runtime directory: TAPVIRT_RUNTIME_DIR=/tmp/tapvirt-"
                f"{os.getuid()} (or a shorter XDG_RUNTIME_DIR)",
                details={"length": len(path.encode()), "max": SUN_PATH_MAX},
            )

    # -- lock -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, *, wait: float = 0.0) -> Iterator[None]:
        """Hold the domain's lock; another holder -> domain-busy (after `wait` seconds)."""
        try:
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise write_error(self.path / "lock", exc) from None
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


def flock_within(fd: int, wait: float) -> bool:
    """Take an exclusive flock on `fd`, trying for `wait` seconds; False if another
    holder kept it that long."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _flock_holder(dev: int, ino: int) -> int | None:
    """The pid holding a flock on (dev, ino), from /proc/locks; None if not listed.

    The device is compared too where it matches stat's (btrfs subvolumes report another
    st_dev): then the holder must also be a tapvirt supervisor of our uid."""
    exact = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    suffix = f":{ino}"
    candidates: list[int] = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 00:2b:5678 0 EOF"; waiters have "->"
                if len(parts) < 6 or parts[1] != "FLOCK" or not parts[4].isdigit():
                    continue
                if parts[5] == exact:
                    return int(parts[4]) or None
                if parts[5].endswith(suffix):
                    candidates.append(int(parts[4]))
    except OSError:
        return None
    for pid in candidates:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if owner == os.getuid() and b"tapvirt.domains.supervisor" in cmdline:
            return pid
    return None


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
                if os.path.lexists(d.state_file) or d.supervisor_lock.exists():
                    out.append(d)
    return out
