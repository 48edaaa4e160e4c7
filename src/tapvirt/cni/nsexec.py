"""Run a function inside the pod's network namespace, in a forked child.

The plugin's own process never changes namespace: the child enters CNI_NETNS with
setns() (before any tun fd or netlink socket is opened, both bind their namespace at
open time), gets a private mount namespace with a sysfs of that network namespace (a
macvtap's char device number is read there), does its work and reports back one JSON
message on a pipe, then exits. A TapvirtError in the child comes back as the same error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import traceback
from collections.abc import Callable
from typing import Any

from tapvirt.cni.errors import CNI_INTERNAL, CNI_NETNS
from tapvirt.errors import TapvirtError, lookup

NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000
MAX_REPLY = 4 << 20


class NetnsGone(Exception):
    """CNI_NETNS does not exist (any more)."""


def open_netns(path: str) -> int:
    """An fd of the network namespace at `path` (/run/netns/X, /proc/PID/ns/net).

    No O_NOFOLLOW: /proc/PID/ns/net is a "magic" symlink that must be followed. The fd
    is verified to be a network namespace, and not the plugin's own."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NetnsGone(path) from None
    except OSError as exc:
        raise TapvirtError(CNI_NETNS, f"CNI_NETNS {path!r}",
                           f"cannot be opened: {exc.strerror}",
                           "give the path of the pod's network namespace") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise TapvirtError(CNI_NETNS, f"CNI_NETNS {path!r}", "is not a network namespace",
                           "give the path of the pod's network namespace")
    st, own = os.fstat(fd), os.stat("/proc/self/ns/net")
    if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
        os.close(fd)
        raise TapvirtError(CNI_NETNS, f"CNI_NETNS {path!r}",
                           "is the plugin's own (host) network namespace: tapvirt-cni "
                           "only makes devices inside pods",
                           "give the pod's namespace, not the host's")
    return fd


def _child(ns_fd: int, write_fd: int, fn: Callable[[], Any], sysfs: bool) -> None:
    from tapvirt.host import admin

    try:
        libc = admin._libc()
        if libc.setns(ns_fd, CLONE_NEWNET) != 0:
            err = os.strerror(__import__("ctypes").get_errno())
            raise TapvirtError(CNI_NETNS, "CNI_NETNS", f"setns failed: {err}",
                               "run tapvirt-cni as root (the container runtime does)")
        os.close(ns_fd)
        if sysfs:
            admin.private_sysfs()
        msg: dict[str, Any] = {"ok": True, "value": fn()}
    except TapvirtError as err:
        msg = {"ok": False, "error": {"code": err.code.code, "subject": err.subject,
                                      "cause": err.cause, "fix": err.fix,
                                      "details": err.details}}
    except BaseException as exc:  # a bug in the child: report, never hang the parent
        msg = {"ok": False, "error": {
            "code": CNI_INTERNAL.code, "subject": "tapvirt-cni",
            "cause": f"unexpected {type(exc).__name__}: {exc}",
            "fix": "please report this with the plugin's stderr",
            "details": {"traceback": traceback.format_exc()[-2000:]}}}
    data = json.dumps(msg, default=str).encode()
    view = memoryview(data)
    with contextlib.suppress(OSError):
        while view:
            view = view[os.write(write_fd, view):]
    os._exit(0)


def run_in_netns(path: str, fn: Callable[[], Any], *, sysfs: bool = False) -> Any:
    """fn() inside the namespace at `path`, in a child process; its JSON-able result.

    Raises NetnsGone when the namespace does not exist, TapvirtError as raised by fn."""
    ns_fd = open_netns(path)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(ns_fd)
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read_fd)
        _child(ns_fd, write_fd, fn, sysfs)
    os.close(ns_fd)
    os.close(write_fd)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except InterruptedError:
                continue
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REPLY:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    break
    try:
        msg = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        msg = {}
    if msg.get("ok"):
        return msg.get("value")
    err = msg.get("error") or {"code": CNI_INTERNAL.code, "subject": "tapvirt-cni",
                               "cause": "the namespace worker died without reporting",
                               "fix": "please report this with the plugin's stderr"}
    import tapvirt.netcodes
    import tapvirt.prep.errors  # noqa: F401  (their codes can come back from the child)

    raise TapvirtError(lookup(str(err.get("code"))) or CNI_INTERNAL, str(err["subject"]),
                       str(err["cause"]), str(err.get("fix", "")),
                       details=err.get("details") or {})
