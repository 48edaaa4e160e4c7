"""The lifecycle API: start, create, shutdown, destroy, and what a guest looks like now.

The CLI (`tapvirt.cli.run_cmds`) is a thin layer over these functions. `start` runs in
the calling process up to the point where QEMU can be spawned (checks, fds); from then
on a per-guest supervisor process owns the guest (see `tapvirt.domains.supervisor`).
On any failure nothing is left behind: fds closed, QEMU reaped, managed devices
deleted, state "shut off", and the error says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapvirt.domains.errors import (
    DOMAIN_NOT_FOUND,
    DOMAIN_NOT_RUNNING,
    DOMAIN_RUNNING,
    START_TIMEOUT,
    STATE_UNREADABLE,
    STOP_TIMEOUT,
    SUPERVISOR_FAILED,
)
from tapvirt.domains.runtime import (
    RUNNING,
    SHUTOFF,
    STARTING,
    UNKNOWN,
    DomainDir,
    IfaceState,
    State,
    list_domain_dirs,
    runtime_root,
)
from tapvirt.errors import TapvirtError
from tapvirt.qemu.process import pid_alive, proc_starttime

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain
    from tapvirt.host.api import Host

START_TIMEOUT_S = 30.0
STOP_WAIT_S = 15.0
_TRACE = bool(os.environ.get("TAPVIRT_TRACE"))


def _trace(label: str) -> None:
    """TAPVIRT_TRACE=1: phase timestamps of a start on stderr (the supervisor's go to its
    log), to see where start-up time goes."""
    if _TRACE:
        print(f"tapvirt-trace {time.time():.4f} launcher {label}", file=sys.stderr)


# -- liveness and reconciliation ------------------------------------------------------
#
# The state file is a record; liveness comes from the kernel: a supervisor is alive while
# it holds its lock (DomainDir.supervisor_holder), QEMU while a process with the recorded
# pid AND start time exists (pids are reused) or, with no record to trust, while its QMP
# socket answers. A pid is never signalled on the record's word alone.

def _same_process(pid: int | None, start: int | None) -> bool:
    """A pid is ours only with the start time we recorded for it."""
    return bool(pid) and start is not None and pid_alive(pid or 0) and \
        proc_starttime(pid or 0) == start


def qemu_alive(st: State) -> bool:
    return _same_process(st.qemu_pid, st.qemu_start)


def _liveness(dd: DomainDir) -> str:
    """What still runs of a domain, in words, without trusting its state file."""
    pid = dd.supervisor_holder()
    if pid:
        return f"its supervisor (pid {pid}) is running, so the guest may be running"
    if dd.supervisor_locked():
        return "a supervisor of it is running, so the guest may be running"
    if dd.qmp_listening():
        return f"a QEMU of it is still running: it answers on its QMP socket {dd.qmp_socket}"
    return "nothing of it is running"


def _read_checked(dd: DomainDir) -> State:
    """dd.read(), with state-unreadable saying what of the guest still runs."""
    try:
        return dd.read()
    except TapvirtError as err:
        if err.code is not STATE_UNREADABLE:
            raise
        alive = _liveness(dd)
        raise TapvirtError(err.code, err.subject, f"{err.cause}; {alive}", err.fix,
                           details={"alive": alive != "nothing of it is running"}) from None


def reconcile(dd: DomainDir) -> State:
    """The domain's true state. Stale state (a supervisor or launcher that was killed,
    QEMU gone) is repaired on the spot, so no command ever needs manual cleanup. A state
    file that cannot be trusted raises state-unreadable (never read as "shut off")."""
    st = _read_checked(dd)
    if st.state == SHUTOFF:
        # a supervisor writes "shut off" a moment before it exits and drops its lock
        if dd.supervisor_locked() and not dd.wait_supervisor_gone(1.0):
            raise dd.unreadable("says shut off", alive=_liveness(dd))
        return st
    if dd.supervisor_locked():
        return st
    if st.state == STARTING and st.supervisor_pid is None and \
            _same_process(st.launcher_pid, st.launcher_start) and st.launcher_pid != os.getpid():
        return st  # a launcher is still connecting devices
    if st.state == STARTING:
        # its supervisor died before the start completed (the launcher reported that):
        # nobody will ever finish it, so its QEMU goes: the recorded one (pid and start
        # time checked), or one spawned before its pid could be recorded
        found = _qemus_of(dd)
        if qemu_alive(st) and (st.qemu_pid, st.qemu_start) not in found:
            found.append((st.qemu_pid or 0, st.qemu_start))
        for pid, start in found:
            _kill_qemu(dataclasses.replace(st, qemu_pid=pid, qemu_start=start))
        if found:
            who = "launcher" if st.direct else "supervisor"
            _mark_shut_off(dd, st, f"start failed: its {who} was killed before the "
                                   "guest ran")
            return st
    if st.direct:  # no supervisor by design: QEMU's process and events say it all
        from tapvirt.domains import direct

        if qemu_alive(st):
            return direct.refresh(dd, st)
        _mark_shut_off(dd, st, direct.exit_reason(dd))
        return st
    if qemu_alive(st):
        # QEMU outlived its supervisor: still running, but nobody will clean up after it
        if st.reason != "unsupervised":
            st.reason = "unsupervised"
            _write_best_effort(dd, st)
        return st
    _mark_shut_off(dd, st, f"stale state repaired: {st.state} guest had no live process")
    return st


def _qemus_of(dd: DomainDir) -> list[tuple[int, int | None]]:
    """(pid, start time) of our processes whose command line names this domain's QMP
    socket: its QEMUs, found without any record (the socket path is in our private
    directory, so no other program names it). Only for repairs: it scans /proc."""
    needle = str(dd.qmp_socket).encode()
    uid, found = os.getuid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(needle) or needle + b"," in a for a in args[1:]) and \
                pid_alive(int(entry)):
            found.append((int(entry), proc_starttime(int(entry))))
    return found


def _write_best_effort(dd: DomainDir, st: State) -> None:
    """A repair of the record; on a full disk the next command repairs it again (the
    truth is computed, not read), so reading state never fails because of a write."""
    with contextlib.suppress(TapvirtError):
        dd.write(st)


def _mark_shut_off(dd: DomainDir, st: State, reason: str) -> None:
    if st.helpers:  # its supervisor is gone: its swtpm goes by pid and start time
        from tapvirt.domains.swtpm import stop_recorded

        stop_recorded(st.helpers)
        st.helpers = []
    for name in st.to_delete:
        with contextlib.suppress(Exception):  # needs privilege; the supervisor may have done it
            from tapvirt.host.linux import LinuxHost

            LinuxHost().delete_link(name)
    from tapvirt.domains.control import control_socket
    from tapvirt.domains.events import socket_of

    # a killed process leaves them (the events monitor's socket too)
    for sock in (dd.qmp_socket, socket_of(str(dd.qmp_socket)), control_socket(dd)):
        with contextlib.suppress(OSError):
            os.unlink(sock)
    st.state, st.reason, st.stopped_at = SHUTOFF, reason, time.time()
    st.qemu_pid = st.qemu_start = None
    dd.remove_stale_temps()
    _write_best_effort(dd, st)
    if st.transient:
        import shutil

        shutil.rmtree(dd.path, ignore_errors=True)


# -- looking domains up ---------------------------------------------------------------

def _store() -> Any:
    from tapvirt.domains.store import Store

    return Store()


def _runtime(name: str) -> DomainDir:
    return DomainDir(runtime_root(), name)


def _not_found(name: str) -> TapvirtError:
    return TapvirtError(DOMAIN_NOT_FOUND, f"domain {name}", "no domain of that name is defined "
                        "or running", "see `tapvirt list --all`; define it with "
                        "`tapvirt define FILE`")


def state_of(name: str) -> State:
    """The domain's reconciled state; domain-not-found if it is neither defined nor known."""
    dd = _runtime(name)
    if dd.state_file.exists():
        st = reconcile(dd)
        if st.state != SHUTOFF or not st.transient:
            return st
    if _store().exists(name):
        return State(name)
    raise _not_found(name)


# -- start ------------------------------------------------------------------------------

def _free_display_ports(dom: Domain) -> list[int]:
    """A reserved free TCP port for each VNC/SPICE display with autoport on an address;
    a fixed port already bound is refused by name. See tapvirt.domains.display."""
    if not dom.devices.graphics:
        return []
    from tapvirt.domains.display import autoport_ports, check_fixed_ports

    check_fixed_ports(dom)
    return autoport_ports(dom, runtime_root())


def _graphics_sockets(dom: Domain, dd: DomainDir) -> list[str]:
    """The graphics UNIX sockets the supervisor makes 0600 once QEMU answers."""
    if not dom.devices.graphics:
        return []
    from tapvirt.qemu.argv.graphics import graphics_socket

    rundir = os.path.dirname(str(dd.qmp_socket))  # where build_argv puts them
    return [p for g in dom.devices.graphics if (p := graphics_socket(g, rundir))]


def _with_console_log(dom: Domain, log: Path) -> Domain:
    """Serial port 0 is the interactive console and is logged to the runtime console log.

    A `pty` (or a domain without serial port, which gets one) stays a real pty, a `unix`
    socket stays that socket (tcp, udp, dev, pipe and vc sources stay what they are);
    QEMU copies what the guest writes into `log` as well (chardev `logfile=`), so the
    log keeps recording while a console is attached. A
    `file` serial keeps its path (it is the log), `null` stays silent."""
    from tapvirt.conf.model import Chardev, ChardevKind, ChardevType

    serials = list(dom.devices.serials)
    consoles = list(dom.devices.consoles)
    serial_consoles = [c for c in consoles if not getattr(c, "virtio", False)]
    if serials:
        s0 = serials[0]
    elif serial_consoles:  # a <console> without <serial> is serial port 0
        s0 = dataclasses.replace(serial_consoles[0], kind=ChardevKind.SERIAL, port=0)
    else:
        s0 = Chardev(ChardevKind.SERIAL, ChardevType.PTY)
    if s0.type not in (ChardevType.FILE, ChardevType.NULL) and s0.log_file is None:
        s0 = dataclasses.replace(s0, log_file=str(log))
    serials[:1] = [s0]
    if serial_consoles:  # the console describes serial port 0 (libvirt's rule)
        consoles[consoles.index(serial_consoles[0])] = dataclasses.replace(
            s0, kind=ChardevKind.CONSOLE, port=0)
    devices = dataclasses.replace(dom.devices, serials=tuple(serials), consoles=tuple(consoles))
    return dataclasses.replace(dom, devices=devices)


def console_path(dom: Domain, dd: DomainDir) -> Path:
    """Where serial port 0's output is recorded: its <log file>, a file serial's path, or
    the runtime console log."""
    from tapvirt.conf.model import ChardevType

    chars = list(dom.devices.serials) or list(dom.devices.consoles)
    if chars and chars[0].log_file:
        return Path(chars[0].log_file)
    if chars and chars[0].type is ChardevType.FILE and chars[0].path:
        return Path(chars[0].path)
    return dd.console_log


def pty_paths(qmp_socket: Path, subject: str) -> dict[str, str]:
    """The pty each `pty` chardev got from QEMU (label -> /dev/pts/N), from QMP."""
    from tapvirt.qemu.qmp import QmpClient

    with QmpClient.connect(str(qmp_socket), subject=subject, timeout=5) as qmp:
        found = qmp.execute("query-chardev")
    return {str(c.get("label")): str(c["filename"]).removeprefix("pty:")
            for c in found if str(c.get("filename", "")).startswith("pty:")}


def _with_pty_paths(dom: Domain, ptys: dict[str, str]) -> Domain:
    from tapvirt.conf.model import ChardevType

    serials = tuple(dataclasses.replace(s, path=ptys.get(f"charserial{s.port}", s.path))
                    if s.type is ChardevType.PTY else s for s in dom.devices.serials)
    s0 = next((s for s in serials if s.port == 0), None)
    consoles = tuple(dataclasses.replace(c, path=s0.path)
                     if s0 is not None and c.type is ChardevType.PTY and c.port == 0
                     and not getattr(c, "virtio", False) else c
                     for c in dom.devices.consoles)
    return dataclasses.replace(dom, devices=dataclasses.replace(
        dom.devices, serials=serials, consoles=consoles))


def _package_root() -> str:
    import tapvirt

    return str(Path(tapvirt.__file__).resolve().parent.parent)


class PendingSupervisor:
    """A supervisor started ahead of need: its interpreter loads while the launcher
    parses and connects. `send()` hands it the job and the fds; dropping it (`abandon`)
    makes it exit without touching anything."""

    def __init__(self, dd: DomainDir) -> None:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # -I -S: no site, no user site, no PYTHON* variables (saves memory and time, and
        # a PYTHONPATH of the caller's cannot change what the supervisor runs); the
        # package is the launcher's own, put first on the path by the -c code
        boot = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from tapvirt.domains.supervisor import main; raise SystemExit(main())")
        try:
            log_fd = os.open(dd.supervisor_log,
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            ours.close()
            theirs.close()
            from tapvirt.domains.runtime import write_error

            raise write_error(dd.supervisor_log, exc) from None
        try:
            # posix_spawn (vfork + exec) rather than subprocess: a fork of the launcher
            # with lxml loaded costs ~10 ms on the start's critical path. The launcher
            # holds no other inheritable fd at this point (the tap fds come later).
            from tapvirt.qemu.process import Process, remap_actions

            self.proc = Process(os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", "-B", "-c", boot, _package_root(),
                 str(theirs.fileno())],
                env, setsid=True,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, log_fd, 1),
                              (os.POSIX_SPAWN_DUP2, log_fd, 2),
                              *remap_actions([(theirs.fileno(), theirs.fileno())])]))
        except OSError as exc:
            ours.close()
            raise TapvirtError(SUPERVISOR_FAILED, f"domain {dd.name}",
                               f"cannot run the supervisor: {exc}") from None
        finally:
            theirs.close()
            os.close(log_fd)
        self.sock = ours
        self.name = dd.name

    def send(self, job: dict[str, Any], fds: list[int]) -> None:
        import socket

        from tapvirt.domains.supervisor import FDS_PER_MESSAGE

        data = json.dumps(job).encode()
        try:
            # one SCM_RIGHTS message carries at most 253 fds (the kernel's SCM_MAX_FD):
            # the rest follow in batches, each on a blank that JSON ignores
            batches = [fds[i:i + FDS_PER_MESSAGE] for i in range(0, len(fds), FDS_PER_MESSAGE)]
            first = batches.pop(0) if batches else []
            sent = socket.send_fds(self.sock, [data], first) if first else self.sock.send(data)
            if sent < len(data):
                self.sock.sendall(data[sent:])
            for batch in batches:
                socket.send_fds(self.sock, [b" "], batch)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise TapvirtError(SUPERVISOR_FAILED, f"domain {self.name}",
                               f"the supervisor did not take its job: {exc}") from None

    def reply(self, timeout: float) -> dict[str, Any] | None:
        """Its one-line report, None if it ended without one; TimeoutError if none came."""
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        msg = json.loads(buf.split(b"\n", 1)[0])
        return msg if isinstance(msg, dict) else None

    def reap(self) -> None:
        """Reap the intermediate process (it exits as soon as the supervisor detached)."""
        self.proc.wait()

    def abandon(self) -> None:
        self.sock.close()
        self.reap()

    def close(self) -> None:
        self.sock.close()


def _error_from_json(data: dict[str, Any]) -> TapvirtError:
    from tapvirt.errors import INTERNAL, all_codes

    codes = {c.code: c for c in all_codes()}
    return TapvirtError(codes.get(data.get("code", ""), INTERNAL), data.get("subject", ""),
                        data.get("cause", ""), data.get("fix", ""),
                        details=data.get("details"))


def _log_tail(path: Path, limit: int = 600) -> str:
    from tapvirt.qemu.process import log_tail

    return log_tail(str(path), limit)


def start(name: str, *, tun_node: str | None = None, host: Host | None = None,
          timeout: float = START_TIMEOUT_S, paused: bool = False) -> State:
    """Start a defined domain; returns when the guest runs (or, paused, before its
    first instruction: `virsh start --paused`)."""
    store = _store()
    if not store.exists(name):
        raise _not_found(name)
    return _start(name, store.get, transient=False, tun_node=tun_node, host=host,
                  timeout=timeout, paused=paused)


def create(xml_path: str, *, tun_node: str | None = None, host: Host | None = None,
           timeout: float = START_TIMEOUT_S, paused: bool = False) -> State:
    """Start a transient domain from an XML file (not defined; gone once it stops)."""
    from tapvirt.conf.parse import parse_domain_file

    dom = parse_domain_file(xml_path)
    if _store().exists(dom.name):
        st = state_of(dom.name)
        if st.state != SHUTOFF:
            raise _running(dom.name, st)
    return _start(dom.name, lambda _: dom, transient=True, tun_node=tun_node, host=host,
                  timeout=timeout, paused=paused)


def _running(name: str, st: State) -> TapvirtError:
    return TapvirtError(DOMAIN_RUNNING, f"domain {name}", f"it is already {st.state}",
                        f"stop it first: tapvirt destroy {name}")


def _start(name: str, load: Callable[[str], Domain], *, transient: bool,
           tun_node: str | None, host: Host | None, timeout: float,
           paused: bool = False) -> State:
    _trace("start")
    dd = DomainDir(runtime_root(), name).ensure()
    dd.check_socket_path()
    with dd.locked():
        st = reconcile(dd)
        if st.state != SHUTOFF:
            raise _running(name, st)
        dd.remove_stale_temps()
        dd.write(State(name, "", STARTING, "connecting devices", transient,
                       launcher_pid=os.getpid(), launcher_start=proc_starttime(os.getpid()),
                       started_at=time.time()))
        sup = None
        try:
            from tapvirt.domains import direct

            if direct.mode() == "always":  # its interpreter loads while we work
                sup = PendingSupervisor(dd)
                _trace("supervisor spawned")
            dom = _with_console_log(load(name), dd.console_log)
            if dom.devices.graphics:
                from tapvirt.domains.display import with_runtime_listens

                dom = with_runtime_listens(dom, os.path.dirname(str(dd.qmp_socket)))
            _trace("definition loaded")
            tpm_job = None
            if dom.devices.tpm is not None:
                from tapvirt.domains.swtpm import prepare

                tpm_job = prepare(dom.devices.tpm, name=dom.name, uuid=dom.uuid,
                                  runtime_dir=dd.qmp_socket.parent, transient=transient)
            if dom.os.firmware == "efi" or dom.os.boot_options.pflash:
                from tapvirt.qemu import fwdesc

                dom = fwdesc.resolve(dom)
                fwdesc.prepare(dom)
            if dom.devices.disks:
                from tapvirt.qemu.storage import check_disk_sources

                check_disk_sources(dom)
            if dom.numatune is not None:
                from tapvirt.qemu.hostnuma import check_numatune

                check_numatune(dom)
            if dom.devices.audios:
                from tapvirt.qemu.hostaudio import check_audio_devices

                check_audio_devices(dom)
            from tapvirt.qemu.argv import FD_BASE, build_argv, fd_layout, startup_commands
            from tapvirt.qemu.connect import connect_domain

            if host is None:
                from tapvirt.host.linux import LinuxHost

                host = LinuxHost()
            if tun_node is None:
                tun_node = os.environ.get("TAPVIRT_TUN_NODE") or None
            with connect_domain(dom, host, tun_node=tun_node) as conn:
                specs = conn.specs()
                argv = build_argv(dom, specs, qmp_socket=str(dd.qmp_socket), fd_base=FD_BASE,
                                  display_ports=_free_display_ports(dom))
                pairs = fd_layout(specs, FD_BASE)
                ifaces = [IfaceState(b.alias, b.iface.type.value, b.device,
                                     b.iface.model.value, b.iface.mac, b.delete_at_stop,
                                     link=b.iface.link_state.value if b.iface.link_state
                                     else "up")
                          for b in conn.backends]
                _write_live_xml(dom, dd, {i.alias: i.device for i in ifaces if i.device})
                _trace("connected, argv built")
                why = direct.why_supervised(dom, to_delete=conn.to_delete, tpm=tpm_job)
                if why is None:
                    state = State(name, dom.uuid, STARTING, "starting", transient,
                                  launcher_pid=os.getpid(),
                                  launcher_start=proc_starttime(os.getpid()),
                                  started_at=time.time(), interfaces=ifaces,
                                  warnings=[w.to_json() for w in conn.warnings()])
                    direct.launch(dd, state, argv, pairs,
                                  qmp_before_cont=startup_commands(dom),
                                  private_sockets=_graphics_sockets(dom, dd), paused=paused,
                                  timeout=timeout, trace=_trace if _TRACE else None)
                    conn.close()  # QEMU has its own copies of the fds
                    st = dd.read()
                    _show_ptys(dom, dd, st)
                    return st
                if sup is None:
                    sup = PendingSupervisor(dd)
                    _trace("supervisor spawned")
                sup.send({
                    "name": dom.name, "uuid": dom.uuid, "root": str(dd.root),
                    "transient": transient, "argv": argv, "launcher_pid": os.getpid(),
                    "fd_numbers": [child for _, child in pairs],
                    "qmp_before_cont": startup_commands(dom),
                    "private_sockets": _graphics_sockets(dom, dd),
                    "on_poweroff": dom.on_poweroff.value, "on_crash": dom.on_crash.value,
                    "interfaces": [dataclasses.asdict(i) for i in ifaces],
                    "to_delete": list(conn.to_delete), "start_timeout": timeout,
                    "paused": paused, "trace": _TRACE, "swtpm": tpm_job,
                    "warnings": [w.to_json() for w in conn.warnings()],
                }, [parent for parent, _ in pairs])
                _trace("job sent")
                # the supervisor owns copies of the fds and the devices to delete now
                conn.close()
                conn.to_delete.clear()
            assert sup is not None
            sup.reap()
        except BaseException:
            if sup is not None:
                sup.abandon()
            try:
                st = dd.read()
            except TapvirtError:
                st = State(name, transient=transient)
            if st.supervisor_pid is None and not dd.supervisor_locked():
                _mark_shut_off(dd, st, "start failed")
            raise
        assert sup is not None
        try:
            msg = sup.reply(timeout + 10)
            _trace("reply received")
        except TimeoutError:
            _signal_supervisor(dd, signal.SIGTERM)
            raise TapvirtError(START_TIMEOUT, f"domain {name}",
                               f"the guest was not running after {timeout + 10:g} s",
                               f"see {dd.qemu_log} and {dd.supervisor_log}") from None
        finally:
            sup.close()
        if msg is None:
            st = reconcile(dd)
            if st.state != SHUTOFF and not dd.supervisor_locked():
                # it died after QEMU ran but before it said so: this start failed, so
                # nothing of it may keep running unsupervised
                _kill_qemu(st)
                _mark_shut_off(dd, st, "start failed: its supervisor was killed")
            raise TapvirtError(
                SUPERVISOR_FAILED, f"domain {name}",
                "the supervisor ended without reporting: "
                + (_log_tail(dd.supervisor_log) or "no log"),
                f"see {dd.supervisor_log}")
        if not msg.get("ok"):
            raise _error_from_json(msg.get("error", {}))
        st = dd.read()
        _show_ptys(dom, dd, st)
        return st


def _show_ptys(dom: Domain, dd: DomainDir, st: State) -> None:
    """Put the ptys QEMU opened into the live XML (`<source path='/dev/pts/N'/>`), as
    libvirt does. Best effort: the guest runs either way, and `console` asks QMP itself."""
    from tapvirt.conf.model import ChardevType

    if not any(s.type is ChardevType.PTY for s in dom.devices.serials):
        return
    try:
        ptys = pty_paths(dd.qmp_socket, f"domain {dom.name}")
        _write_live_xml(_with_pty_paths(dom, ptys), dd,
                        {i.alias: i.device for i in st.interfaces if i.device})
    except (TapvirtError, OSError):
        pass


def _write_live_xml(dom: Domain, dd: DomainDir, actual: dict[str, str]) -> None:
    from tapvirt.conf.format import format_domain
    from tapvirt.domains.runtime import write_atomic, write_error

    try:
        write_atomic(dd.domain_xml, format_domain(dom, live=True, actual_devs=actual))
    except OSError as exc:
        raise write_error(dd.domain_xml, exc) from None


# -- stop -------------------------------------------------------------------------------

def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to end (pidfd: no polling)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):  # a zombie counts as gone
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([pidfd], [], [], min(left, 0.1))
        return True
    finally:
        os.close(pidfd)


def _open_verified(pid: int | None, start: int | None) -> int | None:
    """A pidfd of `pid` if it is the process started at `start`, else None. Signalling
    through the pidfd cannot hit a process that reused the pid after the check."""
    if not pid or start is None:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if proc_starttime(pid) != start or not pid_alive(pid):
        os.close(pidfd)
        return None
    return pidfd


def _supervisor_pidfd(dd: DomainDir) -> int | None:
    """A pidfd of the supervisor holding the domain's lock (checked again after opening,
    so the pidfd is the holder's, not a successor's of the same pid)."""
    pid = dd.supervisor_holder()
    if not pid:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if dd.supervisor_holder() != pid:
        os.close(pidfd)
        return None
    return pidfd


def _signal_supervisor(dd: DomainDir, sig: int) -> bool:
    pidfd = _supervisor_pidfd(dd)
    if pidfd is None:
        return False
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def _wait_pidfd(pidfd: int, timeout: float) -> bool:
    """Wait for the process of a pidfd to end (readable = it exited)."""
    return bool(select.select([pidfd], [], [], max(0.0, timeout))[0])


def _running_dir(name: str) -> tuple[DomainDir, State]:
    dd = _runtime(name)
    st = reconcile(dd) if dd.state_file.exists() or dd.supervisor_locked() else None
    if st is None or st.state == SHUTOFF:
        if st is None and not _store().exists(name):
            raise _not_found(name)
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", "it is not running",
                           f"start it: tapvirt start {name}")
    return dd, st


def _wait_for_launcher(dd: DomainDir, timeout: float) -> None:
    """A start still in its launcher (connecting devices, no supervisor yet): wait until
    its supervisor holds the lock or the start ended, so that destroy stops what the start
    makes instead of racing it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not dd.supervisor_locked():
        try:
            st = dd.read()
        except TapvirtError:
            return
        if st.state != STARTING or st.supervisor_pid is not None or \
                not _same_process(st.launcher_pid, st.launcher_start):
            return
        time.sleep(0.01)


def destroy(name: str, *, timeout: float = STOP_WAIT_S) -> State:
    """Stop the guest now (SIGTERM, then SIGKILL) and wait until it is shut off.

    Works from the kernel's facts, not the record: the supervisor holding the lock, a
    QEMU whose pid and start time match, or (no record to trust) QEMU's QMP socket. With
    an unreadable state and nothing running, it writes a fresh "shut off" state."""
    dd = _runtime(name)
    try:
        dd, st = _running_dir(name)
    except TapvirtError as err:
        if err.code is not STATE_UNREADABLE:
            raise
        return _destroy_unknown(dd, timeout)
    if st.state == STARTING:
        _wait_for_launcher(dd, timeout)
        # what the start recorded meanwhile (a launcher running QEMU itself records its
        # pid only after the read above: killing by the old record would miss it)
        with contextlib.suppress(TapvirtError):
            st = dd.read()
    pidfd = _supervisor_pidfd(dd)
    if pidfd is not None:
        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not _wait_pidfd(pidfd, timeout):
                raise TapvirtError(STOP_TIMEOUT, f"domain {name}",
                                   f"the supervisor did not finish within {timeout:g} s",
                                   f"see {dd.supervisor_log}")
        finally:
            os.close(pidfd)
        dd.wait_supervisor_gone(1.0)
    else:
        _kill_qemu(st)
        if st.state != SHUTOFF:
            _mark_shut_off(dd, st, "destroyed")
    if not dd.state_file.exists():  # a transient domain is gone
        return dataclasses.replace(st, state=SHUTOFF, reason="destroyed")
    final = reconcile(dd)
    if final.state == SHUTOFF and final.reason.startswith("stale state repaired"):
        # the supervisor ended but could not record it (a full disk): say what happened
        final.reason = "destroyed"
    return final


def _kill_qemu(st: State) -> None:
    """Stop a QEMU that has no supervisor, if the record's pid is still that QEMU."""
    pidfd = _open_verified(st.qemu_pid, st.qemu_start)
    if pidfd is None:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not _wait_pidfd(pidfd, 3.0):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _wait_pidfd(pidfd, 10.0)
    finally:
        os.close(pidfd)


def _destroy_unknown(dd: DomainDir, timeout: float) -> State:
    """destroy with a state file that cannot be trusted."""
    pidfd = _supervisor_pidfd(dd)
    if pidfd is not None:
        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not _wait_pidfd(pidfd, timeout):
                raise TapvirtError(STOP_TIMEOUT, f"domain {dd.name}",
                                   f"the supervisor did not finish within {timeout:g} s",
                                   f"see {dd.supervisor_log}")
        finally:
            os.close(pidfd)
        dd.wait_supervisor_gone(1.0)
        with contextlib.suppress(TapvirtError):
            st = dd.read()  # the supervisor wrote the truth on its way out
            if st.state == SHUTOFF:
                return st
    elif dd.supervisor_locked():
        raise TapvirtError(STOP_TIMEOUT, f"domain {dd.name}",
                           "a supervisor holds its lock, but the kernel does not say which "
                           "process (another pid namespace?)",
                           f"stop it from where it runs; its log: {dd.supervisor_log}")
    elif dd.qmp_listening():
        _quit_through_qmp(dd)
    st = State(dd.name, state=SHUTOFF, stopped_at=time.time(),
               reason="destroyed (its state file was unreadable; a fresh one was written)")
    with contextlib.suppress(OSError):
        os.unlink(dd.qmp_socket)
    dd.write(st)
    return st


def _quit_through_qmp(dd: DomainDir) -> None:
    """Stop an unsupervised QEMU known only by its QMP socket (no pid to trust)."""
    from tapvirt.qemu.qmp import QmpClient

    deadline = time.monotonic() + 5
    while True:
        try:
            qmp = QmpClient.connect(str(dd.qmp_socket), subject=f"domain {dd.name}",
                                    timeout=5)
            break
        except TapvirtError:
            # QEMU serves one monitor client at a time; probes may still be queued
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    # QEMU may close the connection before it answers `quit`
    with qmp, contextlib.suppress(TapvirtError):
        qmp.execute("quit")
    deadline = time.monotonic() + 10
    while dd.qmp_listening() and time.monotonic() < deadline:
        time.sleep(0.02)


def shutdown(name: str, *, timeout: float = 60.0, mode: str = "acpi") -> State:
    """ACPI power-down through QMP (or, mode agent, the guest agent's guest-shutdown);
    destroy if the guest is still running after `timeout`."""
    from tapvirt.qemu.qmp import QmpClient

    dd, st = _running_dir(name)
    if st.state != RUNNING:
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", f"it is {st.state}",
                           f"wait, or stop it now: tapvirt destroy {name}")
    from tapvirt.domains.control import control_socket

    agent_conn = None
    if mode == "agent":
        from tapvirt.domains import agent

        agent_conn = agent.connect(name)  # agent-unresponsive before anything changed
    pidfd = _supervisor_pidfd(dd)
    # through the supervisor, or (a guest without one) the verb's own monitor session
    supervised = (pidfd is not None and control_socket(dd).exists()) or st.direct
    if pidfd is None:
        pidfd = _open_verified(st.qemu_pid, st.qemu_start)
    elif not _signal_pidfd(pidfd, signal.SIGUSR1):  # a power-off now is final
        os.close(pidfd)
        pidfd, supervised = None, False
    try:
        if agent_conn is not None:
            with agent_conn:
                agent_conn.execute("guest-shutdown", {"mode": "powerdown"}, reply=False)
        elif supervised:
            # through the supervisor: it runs one QMP request at a time, so a power-down
            # never races a hotplug for the monitor (it waits for it instead)
            from tapvirt.domains import live

            live.transact(dd, [{"execute": "system_powerdown"}],
                          commit={"log": "shutdown requested"})
        else:
            with QmpClient.connect(str(dd.qmp_socket), subject=f"domain {name}",
                                   timeout=5) as qmp:
                qmp.execute("system_powerdown")
        if pidfd is not None and _wait_pidfd(pidfd, timeout):
            dd.wait_supervisor_gone(1.0)
            if not dd.state_file.exists():
                return dataclasses.replace(st, state=SHUTOFF, reason="shutdown")
            return reconcile(dd)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    destroy(name)
    if not dd.state_file.exists():
        return dataclasses.replace(st, state=SHUTOFF, reason="destroyed after shutdown timeout")
    final = reconcile(dd)
    final.reason = f"destroyed: no power-off within {timeout:g} s"
    _write_best_effort(dd, final)
    return final


def _signal_pidfd(pidfd: int, sig: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False


def resume(name: str) -> State:
    """Let a paused guest run (QMP `cont`): started with --paused, or suspended."""
    from tapvirt.domains import live

    return live.resume(name)


# -- looking at guests ------------------------------------------------------------------

@dataclass
class DomainRow:
    id: int | None  # QEMU's pid while running (libvirt shows a small counter here)
    name: str
    uuid: str
    state: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _stored_uuid(store: Any, name: str) -> str:
    """The uuid of a stored definition without parsing it (the file is canonical XML)."""
    import re

    try:
        m = re.search(r"<uuid>([^<]+)</uuid>", store.get_xml(name))
    except TapvirtError:
        return ""
    return m.group(1).strip() if m else ""


def list_domains(*, include_inactive: bool = False) -> list[DomainRow]:
    """Running (and with include_inactive, every defined) domain, sorted by name.

    Reads state files and the stored files only: no XML parsing, so it stays fast with
    many definitions."""
    rows: dict[str, DomainRow] = {}
    store = _store()
    defined = set(store.names())
    for dd in list_domain_dirs(runtime_root()):
        try:
            st = reconcile(dd)
        except TapvirtError as err:
            if err.code is not STATE_UNREADABLE:
                raise
            # one damaged file never hides the others; `domstate NAME` says what is wrong
            rows[dd.name] = DomainRow(None, dd.name, _stored_uuid(store, dd.name), UNKNOWN)
            continue
        if st.state == SHUTOFF and (st.transient or dd.name not in defined):
            continue
        running = st.state != SHUTOFF
        rows[dd.name] = DomainRow(st.qemu_pid if running else None, dd.name,
                                  st.uuid or _stored_uuid(store, dd.name), st.state)
    if not include_inactive:
        return sorted((r for r in rows.values() if r.state != SHUTOFF), key=lambda r: r.name)
    for name in defined - rows.keys():
        rows[name] = DomainRow(None, name, _stored_uuid(store, name), SHUTOFF)
    return sorted(rows.values(), key=lambda r: r.name)


def dominfo(name: str) -> dict[str, Any]:
    st = state_of(name)
    dd = _runtime(name)
    dom = _domain_for(name, st, dd)
    running = st.state != SHUTOFF
    return {
        "name": name, "uuid": dom.uuid, "state": st.state, "reason": st.reason,
        "id": st.qemu_pid if running else None,
        "persistent": _store().exists(name), "vcpus": dom.vcpus,
        "memory_kib": dom.memory_kib, "qemu_pid": st.qemu_pid if running else None,
        "supervisor_pid": dd.supervisor_holder() if running else None,
        "supervised": running and not st.direct,
        "started_at": st.started_at if running else None,
        "stopped_at": st.stopped_at, "exit_status": st.exit_status, "restarts": st.restarts,
        "console_log": str(console_path(dom, dd)), "qemu_log": str(dd.qemu_log),
        "warnings": st.warnings if running else [],
        "interfaces": len(dom.devices.interfaces),
    }


def _domain_for(name: str, st: State, dd: DomainDir) -> Domain:
    if st.state != SHUTOFF and dd.domain_xml.exists():
        from tapvirt.conf.parse import parse_domain_file

        return parse_domain_file(dd.domain_xml, live=True)
    store = _store()
    if not store.exists(name):
        raise _not_found(name)
    dom: Domain = store.get(name)
    return dom


def domiflist(name: str) -> list[IfaceState]:
    """Interface, type, host device, model, MAC: live while running, else as defined."""
    st = state_of(name)
    if st.state != SHUTOFF and st.interfaces:
        return st.interfaces
    dom: Domain = _store().get(name)
    return [IfaceState(i.alias or f"net{n}", i.type.value, i.dev, i.model.value, i.mac)
            for n, i in enumerate(dom.devices.interfaces)]


def dumpxml(name: str, *, security_info: bool = False) -> str:
    """The live XML of a running guest (aliases, actual devices), else the definition.
    Graphics passwords only with `security_info` (virsh dumpxml --security-info)."""
    st = state_of(name)
    dd = _runtime(name)
    if st.state != SHUTOFF and dd.domain_xml.exists():
        text = dd.domain_xml.read_text(encoding="utf-8")
    else:
        text = _store().get_xml(name)
    if not security_info and " passwd=" in text:
        import re

        # canonical XML: passwd='...' with quotes escaped inside, on the <graphics> line
        text = re.sub(r"(<graphics\b[^>]*?) passwd='[^']*'", r"\1", text)
    return text


def follow_console(name: str, *, follow: bool = True, from_start: bool = True,
                   poll: float = 0.1) -> Iterator[bytes]:
    """The serial console log; with `follow`, keep yielding until the guest stops."""
    st = state_of(name)
    dd = _runtime(name)
    path = console_path(_domain_for(name, st, dd), dd)
    if not path.exists():
        if st.state == SHUTOFF:
            raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}",
                               "it is not running and has no console log",
                               f"start it: tapvirt start {name}")
        # QEMU creates it a moment after start
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(poll)
    with open(path, "rb") as f:
        if not from_start:
            f.seek(0, os.SEEK_END)
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            st = dd.read() if dd.state_file.exists() else dataclasses.replace(st, state=SHUTOFF)
            if st.state == SHUTOFF or (st.state != STARTING and not qemu_alive(st)
                                       and not dd.supervisor_locked()):
                tail = f.read()
                if tail:
                    yield tail
                return
            time.sleep(poll)
