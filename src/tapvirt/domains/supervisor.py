"""The per-guest supervisor: QEMU's parent for the guest's whole life.

`tapvirt start` runs `python -I -S -B -c "<import this module's main>" ROOT FD` as early
as it can, so that the supervisor's interpreter starts while the launcher parses and
connects (-I: PYTHON* variables ignored, ROOT is the launcher's own package root);
FD is one end of a socketpair. The supervisor detaches at once (forks once more, so it
is nobody's child but init's) and waits for its job: one JSON message carrying the
interface fds (SCM_RIGHTS). It then spawns QEMU paused with those fds renumbered as
the command line says, waits for QMP, sends the link-state commands and `cont`,
reports one JSON line back on the socket and waits for QEMU to end (pidfd:
immediate). If the launcher goes away before sending a job, the supervisor just exits.
When QEMU ends, for whatever reason, it applies on_poweroff / on_crash (restart or
stop), closes its fd copies, deletes the managed devices that need explicit deletion,
and writes state "shut off".

Signals: SIGTERM = destroy (SIGTERM to QEMU, SIGKILL after a grace period);
SIGUSR1 = a shutdown was requested (a guest power-off then is final, never restarted).

While the guest runs, the supervisor also serves its control socket
(`tapvirt.domains.control`): the verbs that change a running guest (hotplug, link state,
suspend/resume, reboot) send it their QMP steps and the state change to record, so the
supervisor stays the only writer of the guest's state and runs one change at a time.

It imports only the stdlib and tapvirt's small lifecycle modules (no lxml, no
pyroute2): one of these runs per guest, so its memory counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from tapvirt.domains import control
from tapvirt.domains.errors import DESTROYED_WHILE_STARTING, DOMAIN_NOT_RUNNING, SUPERVISOR_FAILED
from tapvirt.domains.live_errors import CONTROL_FAILED
from tapvirt.domains.runtime import (
    PAUSED,
    RUNNING,
    SHUTOFF,
    STARTING,
    DomainDir,
    IfaceState,
    State,
    write_atomic,
)
from tapvirt.errors import INTERNAL, TapvirtError
from tapvirt.qemu import process
from tapvirt.qemu.qmp import QmpClient

DESTROY_GRACE = 3.0  # seconds between SIGTERM and SIGKILL on destroy
QUICK_EXIT = 5.0  # a restarted QEMU that ends sooner than this counts towards a loop
MAX_QUICK_RESTARTS = 3
FDS_PER_MESSAGE = 250  # SCM_RIGHTS carries at most 253 fds per message (SCM_MAX_FD)


def trace(job: dict[str, Any], label: str) -> None:
    if job.get("trace"):
        log(f"tapvirt-trace {time.time():.4f} supervisor {label}")


def log(msg: str) -> None:
    # never raises: a full disk under supervisor.log must not stop the cleanup that follows
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor[{os.getpid()}]: "
                         f"{msg}\n")
        sys.stderr.flush()


class Supervisor:
    def __init__(self, job: dict[str, Any]) -> None:
        from pathlib import Path

        self.job = job
        self.dd = DomainDir(Path(job["root"]), job["name"])
        self.argv: list[str] = list(job["argv"])
        from tapvirt.domains import events

        self.argv += events.monitor_args(str(self.dd.qmp_socket))  # the events monitor
        self.follower: events.Follower | None = None
        self.last_events = events.Pending()  # the closed follower's, for classify
        self.fds: list[int] = list(job["fds"])
        # our fd -> the number QEMU's command line names (positional: job["fd_numbers"])
        self.fd_map = list(zip(self.fds, job.get("fd_numbers", self.fds), strict=True))
        self.status: socket.socket | None = job.get("status")
        # Our copies of the fds are kept for the guest's life: a restart policy and an
        # ACPI reboot (`tapvirt reboot`: power-off, then a fresh QEMU) need them again.
        self.keep_fds = True
        self.reboot_requested = False
        self.control: control.ControlServer | None = None
        self.proc: process.Process | None = None
        self.destroy_requested = False
        self.shutdown_requested = False
        self.kill_at: float | None = None
        self._wake_r = -1  # read end of the signal wakeup pipe (set up in run)
        self._lock_fd = -1  # the supervisor lock: held until this process ends
        self.state = State(
            name=job["name"], uuid=job.get("uuid", ""), state=STARTING,
            transient=bool(job.get("transient")), launcher_pid=job.get("launcher_pid"),
            supervisor_pid=os.getpid(), supervisor_start=process.proc_starttime(os.getpid()),
            interfaces=[IfaceState(**i) for i in job.get("interfaces", [])],
            to_delete=list(job.get("to_delete", [])), started_at=time.time(),
            warnings=list(job.get("warnings", [])),
        )
        # what a fresh QEMU (restart, ACPI reboot) has: the start's devices, not hotplugs
        self.base_interfaces = [dict(i) for i in job.get("interfaces", [])]
        self.tpm: Any = None  # helper processes (domains/swtpm.py), started before QEMU
        if job.get("swtpm"):
            from tapvirt.domains import swtpm

            self.tpm = swtpm.Helper(job["swtpm"], f"domain {job['name']}: <tpm>")
        try:
            self.base_live_xml: str | None = self.dd.domain_xml.read_text(encoding="utf-8")
        except OSError:
            self.base_live_xml = None

    # -- reporting to the launcher ------------------------------------------------------

    def report(self, msg: dict[str, Any]) -> None:
        if self.status is None:
            return
        with contextlib.suppress(OSError):  # the launcher may be gone: keep going
            self.status.sendall(json.dumps(msg).encode() + b"\n")
        self.status.close()
        self.status = None

    # -- signals ------------------------------------------------------------------------

    def _on_term(self, signum: int, frame: object) -> None:
        self.destroy_requested = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGTERM)
            if self.kill_at is None:
                self.kill_at = time.monotonic() + DESTROY_GRACE

    def _on_usr1(self, signum: int, frame: object) -> None:
        self.shutdown_requested = True

    # -- the guest ----------------------------------------------------------------------

    def launch(self) -> None:
        """Spawn QEMU paused, wait for QMP, apply link state, cont."""
        qmp_path = str(self.dd.qmp_socket)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(qmp_path)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.dd.console_log, str(self.dd.console_log) + ".old")
        subject = f"domain {self.state.name}"
        if self.destroy_requested:
            raise self._destroyed_while_starting()
        if self.tpm is not None:  # a fresh swtpm for each QEMU (--terminate)
            self.tpm.spawn()
            self.state.helpers = self.tpm.record()
        self.proc = process.spawn(self.argv, fd_map=self.fd_map,
                                  log_path=str(self.dd.qemu_log), subject=subject)
        if self.destroy_requested:  # the SIGTERM came between the check and the spawn
            self._on_term(signal.SIGTERM, None)
        trace(self.job, "qemu spawned")
        self.state.qemu_pid = self.proc.pid
        self.state.qemu_start = process.proc_starttime(self.proc.pid)
        self.dd.write(self.state)  # a pid on disk before anything can fail
        if not self.keep_fds:
            self._close_fds()
        try:
            client = process.wait_for_qmp(
                self.proc, qmp_path, log_path=str(self.dd.qemu_log),
                timeout=float(self.job.get("start_timeout", 30)), subject=subject)
            trace(self.job, "qmp answered")
            # QEMU makes it with the umask's mode; the directory is private already, but
            # the socket itself is also ours alone
            os.chmod(qmp_path, 0o600)
            from tapvirt.domains.agent import secure_sockets

            secure_sockets(os.path.dirname(qmp_path))  # channel sockets (guest agent) too
            self._follow_events(subject)
            for path in self.job.get("private_sockets", []):  # graphics sockets given a path
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
            with client:
                for cmd in self.job.get("qmp_before_cont", []):
                    client.execute(cmd["execute"], cmd.get("arguments"))
                if not self.job.get("paused"):
                    client.execute("cont")
                status = client.status()
                want = "prelaunch" if self.job.get("paused") else "running"
                if status != want:
                    raise TapvirtError(INTERNAL, subject, f"QEMU is {status!r}, not {want!r}")
        except BaseException:
            process.stop(self.proc, subject=subject)
            if self.destroy_requested:  # QEMU ended because of it: say so, not "SIGTERM"
                raise self._destroyed_while_starting() from None
            raise
        if self.destroy_requested:
            process.stop(self.proc, subject=subject)
            raise self._destroyed_while_starting()
        trace(self.job, "cont done")
        self.state.state = PAUSED if self.job.get("paused") else RUNNING
        self.state.reason = "booted" if not self.state.restarts else "restarted"
        if self.job.get("paused"):
            self.state.reason = "started paused"
        self.dd.write(self.state)

    def _follow_events(self, subject: str) -> None:
        from tapvirt.domains import events

        if self.follower is not None:
            self.follower.close()
        try:
            self.follower = events.Follower(str(self.dd.qmp_socket), subject)
        except TapvirtError as err:  # the guest runs; its state follows verbs only
            self.follower = None
            log(f"not following QEMU's events: {err.cause}")

    def _on_events(self) -> None:
        from tapvirt.domains import events

        assert self.follower is not None
        got = self.follower.read()
        if got is None:  # QEMU closed it: it is ending, the pidfd tells the rest
            self.last_events = self.follower.pending  # for classify
            self.follower.close()
            self.follower = None
            return
        changed = False
        for ev in got:
            did, line = events.apply(self.state, ev, self.follower.pending)
            changed = changed or did
            if line:
                log(line)
        if changed:
            self.dd.write(self.state)

    def _drain_events(self) -> None:
        """The events QEMU wrote before it exited (its end of the socket is closed, so
        this reads to EOF and never waits)."""
        for _ in range(100):
            if self.follower is None or not select.select([self.follower], [], [], 0)[0]:
                return
            self._on_events()

    def _destroyed_while_starting(self) -> TapvirtError:
        return TapvirtError(
            DESTROYED_WHILE_STARTING, f"domain {self.state.name}",
            "destroyed while starting: `tapvirt destroy` stopped it before it ran",
            f"start it again if that was not meant: tapvirt start {self.state.name}")

    def watch(self) -> int:
        """Block until QEMU ends; return its exit status. Handles destroy requests."""
        assert self.proc is not None
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            while True:
                timeout = None
                if self.kill_at is not None:
                    timeout = max(0.0, self.kill_at - time.monotonic())
                watched: list[Any] = [pidfd, self._wake_r]
                if self.control is not None:
                    watched.append(self.control)
                if self.tpm is not None and self.tpm.pidfd is not None:
                    watched.append(self.tpm.pidfd)
                if self.follower is not None:
                    watched.append(self.follower)
                ready, _, _ = select.select(watched, [], [], timeout)
                if self.tpm is not None and self.tpm.pidfd in ready:
                    self.helper_ended(pidfd)
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 512)
                if pidfd in ready:
                    self._drain_events()  # a GUEST_PANICKED or WATCHDOG says why it ended
                    return self.proc.wait()
                if self.control is not None and self.control in ready:
                    self.serve_control()
                if self.follower is not None and self.follower in ready:
                    self._on_events()
                if self.kill_at is not None and time.monotonic() >= self.kill_at:
                    log(f"QEMU {self.proc.pid} ignored SIGTERM for {DESTROY_GRACE:g} s: SIGKILL")
                    with contextlib.suppress(OSError):
                        self.proc.kill()
                    self.kill_at = time.monotonic() + 3600
        finally:
            os.close(pidfd)

    def run(self) -> int:
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            # from here until this process ends, the lock says "this guest has a live
            # supervisor", whatever the state file says (or whether it can be written)
            self._lock_fd = self.dd.hold_supervisor_lock()
        except TapvirtError as err:
            log(f"start refused: {err.render()}")
            self._close_fds()
            self.report({"ok": False, "error": err.to_json()})
            return 1
        try:
            self.dd.write(self.state)
            self.launch()
        except TapvirtError as err:
            log(f"start failed: {err.render()}")
            self.finish("destroyed" if err.code is DESTROYED_WHILE_STARTING else "failed",
                        None)
            self.report({"ok": False, "error": err.to_json()})
            return 1
        except Exception as exc:
            log(f"start failed unexpectedly: {exc!r}")
            bug = TapvirtError(SUPERVISOR_FAILED, f"domain {self.state.name}",
                               f"unexpected {type(exc).__name__}: {exc}",
                               f"see {self.dd.supervisor_log}")
            self.finish("failed", None)
            self.report({"ok": False, "error": bug.to_json()})
            return 1
        assert self.proc is not None
        try:
            self.control = control.ControlServer(control.control_socket(self.dd))
        except OSError as exc:  # the guest runs; only live changes are unavailable
            log(f"no control socket: {exc}")
        self.report({"ok": True, "qemu_pid": self.proc.pid, "supervisor_pid": os.getpid()})
        if self.destroy_requested:  # SIGTERM arrived during start
            self._on_term(signal.SIGTERM, None)
        quick = 0
        while True:
            ran_from = time.monotonic()
            status = self.watch()
            ran = time.monotonic() - ran_from
            reason, action = self.classify(status)
            log(f"QEMU {self.proc.pid} ended ({process.describe_exit(status)}): {reason}")
            if action != "restart":
                self.finish(reason, status)
                return 0
            quick = quick + 1 if ran < QUICK_EXIT else 0
            if quick > MAX_QUICK_RESTARTS:
                self.finish(f"{reason}; not restarted: it ended {quick} times within "
                            f"{QUICK_EXIT:g} s", status)
                return 0
            self.state.restarts += 1
            self.state.state = STARTING
            self.state.exit_status = status
            # a fresh QEMU has the devices of the start, not the hot-plugged ones
            self.state.interfaces = [IfaceState(**i) for i in self.base_interfaces]
            if self.base_live_xml is not None:
                with contextlib.suppress(OSError):
                    write_atomic(self.dd.domain_xml, self.base_live_xml)
            self.dd.write(self.state)
            try:
                self.launch()
            except TapvirtError as err:
                log(f"restart failed: {err.render()}")
                self.finish(f"{reason}; restart failed: {err.cause}", status)
                return 0

    def helper_ended(self, qemu_pidfd: int) -> None:
        """swtpm ended: fine when QEMU is going too (--terminate), reported otherwise."""
        status = self.tpm.poll()
        if status is None:
            return
        self.state.helpers = []
        if self.destroy_requested or select.select([qemu_pidfd], [], [], 1.0)[0]:
            return
        warning = self.tpm.ended_warning(status, self.state.name)
        log(f"{warning['cause']}: the guest keeps running without a working TPM")
        self.state.warnings.append(warning)
        self.dd.write(self.state)

    def classify(self, status: int) -> tuple[str, str]:
        """Why QEMU ended, and what to do: 'restart' or 'stop'."""
        pending = self.follower.pending if self.follower is not None else self.last_events
        self.last_events = type(pending)()  # each QEMU's events are its own
        if self.destroy_requested:
            return "destroyed", "stop"
        if pending.panicked:  # -action panic=exit-failure; libvirt: shut off (crashed)
            return "crashed", str(self.job.get("on_crash", "destroy"))
        if status == 0 and pending.watchdog == "poweroff":
            # QEMU exits 0 without a SHUTDOWN event; libvirt reports that as a crash and
            # applies no lifecycle action
            return "crashed", "stop"
        if status == 0 and self.reboot_requested:
            self.reboot_requested = False
            return "rebooted", "restart"
        if status == 0:
            if self.shutdown_requested:
                return "shutdown", "stop"
            return "shutdown", str(self.job.get("on_poweroff", "destroy"))
        return "crashed", str(self.job.get("on_crash", "destroy"))

    def _close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []
        self.fd_map = []

    def finish(self, reason: str, status: int | None) -> None:
        """Everything the guest held goes; unmanaged devices are never touched."""
        if self.proc is not None and self.proc.poll() is None:
            process.stop(self.proc)
        if self.control is not None:
            self.control.close()
            self.control = None
        self._close_fds()
        if self.tpm is not None:
            self.tpm.close()
            self.state.helpers = []
        for name in self.state.to_delete:
            try:
                delete_link(name)
            except Exception as exc:  # keep cleaning; say what is left
                log(f"could not delete managed device {name}: {exc}")
        from tapvirt.domains.events import socket_of

        for sock in (str(self.dd.qmp_socket), socket_of(str(self.dd.qmp_socket))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        self.state.state = SHUTOFF
        self.state.reason = reason
        self.state.exit_status = status
        self.state.stopped_at = time.time()
        self.state.qemu_pid = None
        self.state.qemu_start = None
        if not self.state.transient:
            self._write_final()
            return
        # A transient domain is forgotten. Under the domain's lock, so that a `create` of
        # the same name that starts meanwhile never loses its fresh files to our rmtree;
        # during our own start the launcher holds that lock while it waits for us.
        if reason in ("failed", "destroyed") and self.status is not None:
            remove_runtime_dir(self.dd)  # still in our own start: the launcher holds the lock
            return
        try:
            with self.dd.locked(wait=30):
                remove_runtime_dir(self.dd)
        except (TapvirtError, OSError):
            log("the domain stayed locked for 30 s: leaving its runtime files")
            self._write_final()

    def _write_final(self) -> None:
        """The last state, also on a full disk: the file being replaced is removed first
        if that is what it takes to make room (a missing state reads as shut off, which
        is true by now)."""
        try:
            self.dd.write(self.state)
            return
        except TapvirtError as err:
            log(f"could not write the final state: {err.render()}; retrying in place")
        with contextlib.suppress(OSError):
            os.unlink(self.dd.state_file)
        try:
            self.dd.write(self.state)
        except TapvirtError as err:
            log(f"could not write the final state: {err.render()} (the lock is released "
                "when this process ends, so readers still see the guest shut off)")


    # -- live changes (the control socket) ---------------------------------------------

    def serve_control(self) -> None:
        assert self.control is not None
        got = self.control.accept()
        if got is None:
            return
        conn, req, fds = got
        try:
            reply = self.handle(req, fds)
        except Exception as exc:  # a bug must not take the guest's supervisor down
            log(f"control request failed unexpectedly: {exc!r}")
            reply = {"ok": False, "error": TapvirtError(
                SUPERVISOR_FAILED, f"domain {self.state.name}",
                f"unexpected {type(exc).__name__}: {exc}",
                f"see {self.dd.supervisor_log}").to_json()}
        finally:
            for fd in fds:  # QEMU has its own copies of what it took
                with contextlib.suppress(OSError):
                    os.close(fd)
        control.ControlServer.answer(conn, reply)

    def handle(self, req: dict[str, Any] | None, fds: list[int]) -> dict[str, Any]:
        subject = f"domain {self.state.name}"
        if req is None:
            return {"ok": False, "error": TapvirtError(
                CONTROL_FAILED, subject, "malformed control request").to_json()}
        if (self.proc is None or self.proc.poll() is not None or self.destroy_requested
                or self.state.state not in (RUNNING, PAUSED)):
            return {"ok": False, "error": TapvirtError(
                DOMAIN_NOT_RUNNING, subject, f"it is {self.state.state} (stopping?)",
                f"start it: tapvirt start {self.state.name}").to_json()}
        if req.get("op") == "status":
            return {"ok": True, "state": self.state.to_json()}
        if req.get("op") != "transaction":
            return {"ok": False, "error": TapvirtError(
                CONTROL_FAILED, subject, f"unknown request {req.get('op')!r}"
            ).to_json()}
        try:
            with QmpClient.connect(str(self.dd.qmp_socket), subject=subject,
                                           timeout=5) as qmp:
                results = control.run_steps(qmp, list(req.get("steps") or []), fds, log)
        except control.StepFailed as failed:
            log(f"live change failed at step {failed.index}: {failed.error.get('cause')}")
            return {"ok": False, "error": failed.error, "step": failed.index}
        except TapvirtError as err:
            return {"ok": False, "error": err.to_json()}
        self.commit(dict(req.get("commit") or {}))
        return {"ok": True, "results": results}

    def commit(self, change: dict[str, Any]) -> None:
        """Record what a successful live change did (the verb computed it)."""
        if change.get("reboot"):
            self.reboot_requested = True
        line = control.apply_commit(self.dd, self.state, change)
        if line:
            log(line)


def delete_link(name: str) -> None:
    # Only managed macvtaps get here, and only with CAP_NET_ADMIN: the import is lazy so
    # that the common case keeps the supervisor small.
    from tapvirt.host.linux import LinuxHost

    LinuxHost().delete_link(name)


def remove_runtime_dir(dd: DomainDir) -> None:
    import shutil

    shutil.rmtree(dd.path, ignore_errors=True)


def receive_job(sock: socket.socket) -> dict[str, Any] | None:
    """The launcher's job and its fds, or None if it went away without sending one.

    The fds come in batches of at most FDS_PER_MESSAGE (one SCM_RIGHTS message holds at
    most 253), so a start may pass any number; the job says how many to expect."""
    fds: list[int] = []
    chunks: list[bytes] = []
    truncated = False
    while True:
        data, got, flags, _ = socket.recv_fds(sock, 1 << 20, FDS_PER_MESSAGE + 3,
                                              socket.MSG_CMSG_CLOEXEC)
        fds += got
        truncated = truncated or bool(flags & socket.MSG_CTRUNC)
        if not data:
            break
        chunks.append(data)
    raw = b"".join(chunks)
    job: dict[str, Any] | None = json.loads(raw) if raw.strip() else None
    want = len(job.get("fd_numbers", fds)) if job is not None else 0
    if job is None or truncated or len(fds) != want:
        for fd in fds:
            os.close(fd)
        if job is None:
            return None
        raise RuntimeError(f"received {len(fds)} of the start's {want} fds"
                           + (" (ancillary data truncated)" if truncated else ""))
    job["fds"] = fds
    return job


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ready = time.time()
    sock = socket.socket(fileno=int(args[0]))
    os.set_inheritable(sock.fileno(), False)
    # Detach: our parent (the launcher) reaps this intermediate process at once; the
    # child below is adopted by init (or the nearest subreaper) and outlives the CLI.
    if os.fork():
        os._exit(0)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir("/")  # do not pin the launcher's working directory (paths in XML are absolute)
    try:
        job = receive_job(sock)
    except (RuntimeError, ValueError) as exc:  # a job we cannot run: say so, touch nothing
        log(f"bad job: {exc}")
        bug = TapvirtError(SUPERVISOR_FAILED, "supervisor", f"the start's job: {exc}",
                           "please report this")
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"ok": False, "error": bug.to_json()}).encode() + b"\n")
        return 1
    if job is None:
        return 0  # the launcher failed before handing over anything
    trace(job, f"imports done at {ready:.4f}")
    job["status"] = sock
    trace(job, "job received")
    try:
        return Supervisor(job).run()
    except Exception as exc:  # never leave a guest without state
        log(f"supervisor crashed: {exc!r}")
        raise


if __name__ == "__main__":
    raise SystemExit(main())
