"""Real-host test sandboxes: network namespaces, unprivileged users, private tun nodes.

Everything here creates things with a recognisable `tv-` prefix and removes them again,
also when a test fails. Nothing touches the root namespace's links or the global
/dev/net/tun. Processes are ended by pid only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
_counter = itertools.count()


def is_root() -> bool:
    return os.geteuid() == 0


def skip_unless_root() -> None:
    if not is_root():
        pytest.skip("needs root: creates network namespaces, users and devices (run as root)")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command as the test's own (root) user, capturing output."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          input=input, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(argv)}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def unique(prefix: str) -> str:
    """A short unique name (interface names are at most 15 bytes)."""
    return f"{prefix}{os.getpid() % 10000}{next(_counter)}"[:15]


@dataclass
class Netns:
    """A network namespace the test created; deleted (with all its devices) on close."""

    name: str

    @classmethod
    def create(cls, prefix: str = "tv-") -> Netns:
        name = unique(prefix)
        run(["ip", "netns", "add", name])
        ns = cls(name)
        ns.ip("link", "set", "lo", "up")
        return ns

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def exec(self, *argv: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout)

    def link_json(self, dev: str) -> dict[str, object] | None:
        """`ip -d -j link show dev` as a dict, or None if the device is absent."""
        proc = self.ip("-d", "-j", "link", "show", "dev", dev, check=False)
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout)
        return data[0] if data else None

    def close(self) -> None:
        pids = run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", self.name], check=False)


@dataclass
class User:
    """An unprivileged system user created for the test (removed on close)."""

    name: str
    uid: int
    gid: int
    home: Path
    extra_groups: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, base: Path, prefix: str = "tvu") -> User:
        name = unique(prefix)
        home = base / f"home-{name}"
        run(["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name])
        home.mkdir(mode=0o700, parents=True)
        info = run(["id", "-u", name]).stdout.strip(), run(["id", "-g", name]).stdout.strip()
        user = cls(name, int(info[0]), int(info[1]), home)
        os.chown(home, user.uid, user.gid)
        return user

    def close(self) -> None:
        run(["userdel", self.name], check=False)
        for group in self.extra_groups:
            run(["groupdel", group], check=False)
        run(["groupdel", self.name], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


def make_group(prefix: str = "tvg") -> tuple[str, int]:
    name = unique(prefix)
    run(["groupadd", "--system", name])
    return name, int(run(["getent", "group", name]).stdout.split(":")[2])


def private_tun_node(directory: Path, uid: int, gid: int, mode: int = 0o600) -> Path:
    """A private clone-device node (c 10 200) owned by the user: /dev/net/tun stays 0600."""
    path = directory / f"tun-{uid}"
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(10, 200))
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def world_readable_dir(prefix: str = "tv-") -> Path:
    """A temporary directory every user can traverse (the unprivileged side reads code here)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def _readable_by_all(path: Path) -> bool:
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError:
            return False
        if p == path:
            if not mode & stat.S_IROTH:
                return False
        elif not mode & stat.S_IXOTH:
            return False
    return True


def unprivileged_python() -> str:
    """An interpreter another uid can run: ours if world-readable, else the system one."""
    exe = Path(sys.executable)
    if _readable_by_all(exe) and _readable_by_all(exe.resolve()):
        return str(exe)
    return "/usr/bin/python3"


@dataclass
class CodeCopy:
    """tapvirt's source copied where an unprivileged uid can read it."""

    root: Path

    @classmethod
    def create(cls) -> CodeCopy:
        root = world_readable_dir("tv-code-")
        shutil.copytree(SRC / "tapvirt", root / "tapvirt",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for dirpath, _dirnames, filenames in os.walk(root):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        return cls(root)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class AsUser:
    """Runs commands as an unprivileged user with no capabilities, inside a netns."""

    user: User
    netns: Netns | None
    code: CodeCopy
    env: dict[str, str] = field(default_factory=dict)
    gid: int | None = None  # run with this primary gid instead of the user's
    groups: list[int] = field(default_factory=list)  # supplementary groups to keep
    # "-all": not even a setuid or file-capability helper can gain a capability. A test
    # of qemu-bridge-helper lets CAP_NET_ADMIN through, as an ordinary login has it.
    bounding_set: str = "-all"

    def argv(self, argv: Sequence[str]) -> list[str]:
        gid = self.user.gid if self.gid is None else self.gid
        groups = (["--groups", ",".join(map(str, self.groups))] if self.groups
                  else ["--clear-groups"])
        env = {
            "HOME": str(self.user.home),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "USER": self.user.name,
            "LOGNAME": self.user.name,
            "PYTHONPATH": str(self.code.root),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            **self.env,
        }
        prefix = ["ip", "netns", "exec", self.netns.name] if self.netns else []
        return [*prefix, "setpriv", f"--reuid={self.user.uid}", f"--regid={gid}", *groups,
                "--inh-caps=-all", f"--bounding-set={self.bounding_set}", "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), *argv]

    def run(self, argv: Sequence[str], *, check: bool = False, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), check=check, timeout=timeout, input=input)

    def python(self, code: str, *, check: bool = False,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run([unprivileged_python(), "-c", code], check=check, timeout=timeout)

    def tapvirt(self, *args: str, check: bool = False, timeout: float = 120,
                env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        saved = dict(self.env)
        self.env.update(env or {})
        try:
            return self.run([unprivileged_python(), "-m", "tapvirt.cli.main", *args],
                            check=check, timeout=timeout)
        finally:
            self.env = saved


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(interval)
    return bool(callable(predicate) and predicate())


@contextlib.contextmanager
def closing_all(*objs: object) -> Iterator[None]:
    try:
        yield
    finally:
        for obj in reversed(objs):
            close = getattr(obj, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
