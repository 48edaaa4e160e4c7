"""`tapvirt run`: one guest in the foreground, for containers (docs/cni.md).

A container's main process is the thing its runtime (the kubelet) watches and signals,
so `run` starts the guest and then stays until the guest has ended:

- it makes itself a child subreaper (in a container it is PID 1 anyway), so the
  detached per-guest supervisor stays its child and is reaped by it;
- the guest's serial console log goes to stdout (`kubectl logs` shows the guest);
- SIGTERM or SIGINT (`kubectl delete pod`, `podman kube down`) becomes an ACPI
  power-down, and the guest is destroyed if it has not powered off within
  `shutdown_timeout` seconds (keep it below the pod's terminationGracePeriodSeconds);
- it exits when the guest has ended: 0 after a power-off, 3 after a crash or a
  destroy, 1 when the guest could not be started.

`run FILE` defines the domain from FILE first (replacing a definition of the same name,
as `tapvirt define` does), so the final state stays visible to `tapvirt domstate`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import BinaryIO

from tapvirt.domains import api
from tapvirt.domains.runtime import RUNNING, SHUTOFF
from tapvirt.errors import TapvirtError

PR_SET_CHILD_SUBREAPER = 36
EXIT_POWERED_OFF = 0
EXIT_FAILED = 1
EXIT_CRASHED = 3
POLL = 0.2


def _say(msg: str) -> None:
    print(f"tapvirt run: {msg}", file=sys.stderr, flush=True)


def become_subreaper() -> None:
    """Orphaned descendants (the detached supervisor) are re-parented to us."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return


def _name_of(target: str) -> str:
    """A file defines the domain (its name is in it); anything else names one."""
    if os.path.sep not in target and not target.endswith(".xml") and not os.path.isfile(target):
        return target
    from tapvirt.domains.store import Store
    from tapvirt.errors import FILE_UNREADABLE

    try:
        with open(target, "rb") as f:
            data = f.read(16 << 20)
    except OSError as exc:
        raise TapvirtError(FILE_UNREADABLE, target, exc.strerror or str(exc),
                           "give a domain XML file or the name of a defined domain") from None
    return Store().define(data, source=target).domain.name


def _pump(name: str, out: BinaryIO) -> None:
    """Copy the console log to `out` until the guest has stopped."""
    try:
        for chunk in api.follow_console(name):
            out.write(chunk)
            out.flush()
    except (TapvirtError, OSError):
        pass  # no console log (the domain has none, or stdout went away): nothing to copy


def _exit_code(reason: str) -> int:
    return EXIT_POWERED_OFF if reason.startswith("shutdown") else EXIT_CRASHED


def run(target: str, *, tun_node: str | None = None, start_timeout: float = 30.0,
        shutdown_timeout: float = 60.0, console: bool = True,
        out: BinaryIO | None = None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    become_subreaper()
    name = _name_of(target)
    st = api.start(name, tun_node=tun_node, timeout=start_timeout)
    _say(f"domain {name!r} is {st.state} (QEMU pid {st.qemu_pid}); SIGTERM powers it off")
    pump = None
    if console:
        pump = threading.Thread(target=_pump, args=(name, out or sys.stdout.buffer),
                                daemon=True)
        pump.start()
    asked = False
    while True:
        reap()
        st = api.state_of(name)
        if st.state == SHUTOFF:
            break
        if stop.is_set() and not asked:
            asked = True
            _say(f"signal received: ACPI power-down of {name!r} "
                 f"(destroyed after {shutdown_timeout:g} s)")
            try:
                if st.state == RUNNING:
                    api.shutdown(name, timeout=shutdown_timeout)
                else:
                    api.destroy(name)
            except TapvirtError as err:
                if api.state_of(name).state != SHUTOFF:
                    _say(f"{err.render()}; destroying it")
                    with contextlib.suppress(TapvirtError):
                        api.destroy(name)
            continue
        stop.wait(POLL)
    if pump is not None:
        pump.join(timeout=5)
    reap()
    _say(f"domain {name!r} ended: {st.reason or 'shut off'}")
    return _exit_code(st.reason)
