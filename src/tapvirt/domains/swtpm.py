"""swtpm for an emulated `<tpm>`: libvirt 9.0's session mode, run as the user.

Two halves, so that the supervisor stays small:

* the launcher (`prepare`, in `tapvirt.domains.api`) checks that swtpm is installed,
  creates the TPM's state on the first start the way libvirt does (`swtpm_setup
  --create-config-files skip-if-exist`, then `swtpm_setup --tpm2 --tpm-state DIR --vmid
  NAME:UUID --createek --create-ek-cert --create-platform-cert --lock-nvram
  --not-overwrite`, or `--reconfigure --pcr-banks` on later starts when
  `<active_pcr_banks>` is given) and puts swtpm's command line into the supervisor's job;
* the supervisor (`Helper`) starts `swtpm socket ... --terminate` before each QEMU it
  spawns (a restart gets a fresh one on the same state), waits for its control socket,
  records its pid and start time in the state (`helpers`), watches it (an swtpm that ends
  while the guest runs is logged and becomes the state warning `swtpm-ended`) and stops
  it after QEMU has ended.

Whoever repairs a domain whose supervisor was killed (`api.reconcile`) ends the recorded
swtpm by pid AND start time (`stop_recorded`), never by name.

State: `$XDG_DATA_HOME/tapvirt/swtpm/UUID/tpm2` (or `tpm1.2`; fallback
`~/.local/share/tapvirt`), directories 0700 and files 0600, like libvirt's
`~/.config/libvirt/qemu/swtpm/UUID/tpm2` in session mode. It is kept across starts and
removed by `undefine` unless `persistent_state='yes'` or `--keep-tpm` (`--tpm` removes it
anyway), and when a transient domain stops (virsh 9.0's rules).

Only the stdlib and tapvirt.errors are imported: the supervisor imports this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tapvirt.errors import TapvirtError, define

SWTPM_MISSING = define(
    "swtpm-missing", "an emulated <tpm> needs swtpm and swtpm_setup, which are not installed",
    layer="lifecycle")
SWTPM_FAILED = define(
    "swtpm-failed", "swtpm_setup or swtpm failed for an emulated <tpm> (its log says why)",
    layer="lifecycle")
SWTPM_ENDED = define(
    "swtpm-ended", "the guest's swtpm ended while the guest ran: its TPM no longer answers",
    layer="lifecycle", warning=True)

INSTALL_FIX = "install it: apt-get install swtpm swtpm-tools (Debian's packages)"
SOCKET_WAIT = 10.0  # seconds for swtpm's control socket to appear
SETUP_TIMEOUT = 120.0  # EK creation under TCG load takes a few seconds


def data_root(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/tapvirt/swtpm`, or `~/.local/share/tapvirt/swtpm`."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path(env.get("HOME") or
                                                      os.path.expanduser("~")) / ".local/share"
    return base / "tapvirt" / "swtpm"


def domain_state(uuid: str, env: Mapping[str, str] | None = None) -> Path:
    """Everything of one domain's TPM (libvirt: swtpm/UUID)."""
    return data_root(env) / uuid


def state_dir(uuid: str, version: str, env: Mapping[str, str] | None = None) -> Path:
    return domain_state(uuid, env) / ("tpm2" if version == "2.0" else "tpm1.2")


def has_state(directory: Path, version: str) -> bool:
    name = "tpm2-00.permall" if version == "2.0" else "tpm-00.permall"
    return (directory / name).exists()


# -- command lines (pure) ---------------------------------------------------------------

def setup_argv(directory: Path, *, version: str, vmid: str, log: Path,
               pcr_banks: tuple[str, ...] = ()) -> list[str]:
    """libvirt 9.0's qemuTPMEmulatorRunSetup, unprivileged with create-config-files."""
    argv = ["swtpm_setup"]
    if version == "2.0":
        argv.append("--tpm2")
        if pcr_banks:
            argv += ["--pcr-banks", ",".join(pcr_banks)]
    argv += ["--tpm-state", str(directory), "--vmid", vmid, "--logfile", str(log),
             "--createek", "--create-ek-cert", "--create-platform-cert", "--lock-nvram",
             "--not-overwrite"]
    return argv


def reconfigure_argv(directory: Path, *, log: Path, pcr_banks: tuple[str, ...]) -> list[str]:
    """libvirt 9.0's qemuTPMEmulatorReconfigure (TPM 2.0 with <active_pcr_banks>)."""
    return ["swtpm_setup", "--tpm2", "--tpm-state", str(directory), "--logfile", str(log),
            "--pcr-banks", ",".join(pcr_banks), "--reconfigure"]


def swtpm_argv(directory: Path, *, version: str, socket: str, log: Path) -> list[str]:
    """libvirt 9.0's qemuTPMEmulatorBuildCommand (without --daemon/--pid: the supervisor
    is swtpm's parent and knows its pid)."""
    argv = ["swtpm", "socket", "--ctrl", f"type=unixio,path={socket},mode=0600",
            "--tpmstate", f"dir={directory},mode=0600", "--log", f"file={log}",
            "--terminate"]
    if version == "2.0":
        argv.append("--tpm2")
    return argv


# -- the launcher's half ----------------------------------------------------------------

def _missing(subject: str, what: str) -> TapvirtError:
    return TapvirtError(SWTPM_MISSING, subject, f"{what} is not installed (not in PATH)",
                        INSTALL_FIX)


def prepare(tpm: Any, *, name: str, uuid: str, runtime_dir: Path,
            transient: bool = False) -> dict[str, Any] | None:
    """The supervisor's `swtpm` job for an emulated TPM (None for none or external):
    checks the programs, creates the state on the first start. `tpm` is the model's Tpm."""
    if tpm is None or str(getattr(tpm.backend, "value", tpm.backend)) != "emulator":
        return None
    import shutil

    subject = f"domain {name}: <tpm>"
    for prog in ("swtpm", "swtpm_setup"):
        if shutil.which(prog) is None:
            raise _missing(subject, prog)
    version = str(getattr(tpm.version, "value", tpm.version) or "2.0")
    banks = tuple(getattr(tpm, "pcr_banks", ()) or ())
    directory = state_dir(uuid, version)
    log = domain_state(uuid) / "swtpm.log"
    old = os.umask(0o077)
    try:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for d in (directory, directory.parent):
                os.chmod(d, 0o700)
        except OSError as exc:
            raise TapvirtError(SWTPM_FAILED, subject,
                               f"cannot create the TPM state directory {directory}: "
                               f"{exc.strerror}",
                               f"make {data_root()} a directory you own "
                               "(or set XDG_DATA_HOME)") from None
        if not has_state(directory, version):
            # user-level swtpm_setup.conf / swtpm-localca.conf for the EK certificates
            _run(["swtpm_setup", "--create-config-files", "skip-if-exist"], subject, log,
                 tolerate_failure=True)
            _run(setup_argv(directory, version=version, vmid=f"{name}:{uuid}", log=log,
                            pcr_banks=banks), subject, log)
        elif banks and version == "2.0":
            _run(reconfigure_argv(directory, log=log, pcr_banks=banks), subject, log)
    finally:
        os.umask(old)
    socket = str(runtime_dir / "swtpm.sock")
    return {"argv": swtpm_argv(directory, version=version, socket=socket, log=log),
            "socket": socket, "log": str(log), "state": str(directory),
            # a transient domain's TPM goes when it stops, unless persistent_state='yes'
            "remove_at_stop": str(domain_state(uuid)) if transient and not
            getattr(tpm, "persistent_state", False) else None}


def _run(argv: list[str], subject: str, log: Path, *, tolerate_failure: bool = False) -> None:
    import subprocess

    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=SETUP_TIMEOUT, check=False)
    except FileNotFoundError:
        raise _missing(subject, argv[0]) from None
    except subprocess.TimeoutExpired:
        raise TapvirtError(SWTPM_FAILED, subject,
                           f"{argv[0]} did not finish in {SETUP_TIMEOUT:g} s",
                           f"see {log}") from None
    if proc.returncode != 0 and not tolerate_failure:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise TapvirtError(SWTPM_FAILED, subject,
                           f"{' '.join(argv[:2])} failed (exit {proc.returncode})"
                           + (f": {said[-1]}" if said else ""),
                           f"see {log}; `tapvirt undefine --tpm` starts the TPM afresh")


def remove_state(uuid: str) -> bool:
    """Remove a domain's TPM state (undefine --tpm); True if there was any."""
    import shutil

    path = domain_state(uuid)
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def remove_on_undefine(tpm: Any, uuid: str, *, remove: bool, keep: bool) -> bool:
    """virsh 9.0: --tpm removes, --keep-tpm keeps, otherwise removed unless
    persistent_state='yes'."""
    if keep or not uuid:
        return False
    if remove or (tpm is not None and not getattr(tpm, "persistent_state", False)):
        return remove_state(uuid)
    return False


# -- the supervisor's half --------------------------------------------------------------

def _starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class Helper:
    """One swtpm, the child of the supervisor."""

    def __init__(self, job: dict[str, Any], subject: str) -> None:
        self.job = job
        self.subject = subject
        self.pid: int | None = None
        self.start: int | None = None
        self.pidfd: int | None = None
        self.ended: int | None = None  # wait status, once reaped

    def spawn(self) -> None:
        """Start swtpm and wait for its control socket (before QEMU is spawned)."""
        self.stop()
        sock = self.job["socket"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        out = os.open(os.devnull, os.O_WRONLY)
        try:
            self.pid = os.posix_spawnp(
                self.job["argv"][0], list(self.job["argv"]), os.environ,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)],
                setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                           signal.SIGPIPE))
        except OSError as exc:
            raise TapvirtError(SWTPM_MISSING, self.subject,
                               f"cannot run swtpm: {exc.strerror}", INSTALL_FIX) from None
        finally:
            os.close(out)
        self.ended = None
        self.start = _starttime(self.pid)
        self.pidfd = os.pidfd_open(self.pid)
        deadline = time.monotonic() + SOCKET_WAIT
        while not os.path.exists(sock):
            if self.poll() is not None or time.monotonic() > deadline:
                why = (f"it exited ({describe(self.ended)})" if self.ended is not None
                       else f"no control socket after {SOCKET_WAIT:g} s")
                self.stop()
                raise TapvirtError(SWTPM_FAILED, self.subject, f"swtpm did not start: {why}",
                                   f"see {self.job['log']}")
            time.sleep(0.01)

    def poll(self) -> int | None:
        """swtpm's wait status once it has ended (reaped here), else None."""
        if self.pid is None:
            return self.ended
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return None
        self.ended = status
        self._forget()
        return status

    def _forget(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.pidfd = None
        self.pid = None

    def stop(self, grace: float = 3.0) -> None:
        """End swtpm (it usually has, with --terminate, when QEMU went)."""
        if self.pid is None:
            return
        if self.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.poll() is None:
            if time.monotonic() > deadline and self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.01)

    def record(self) -> list[dict[str, Any]]:
        """The state's `helpers` entry."""
        if self.pid is None:
            return []
        return [{"name": "swtpm", "pid": self.pid, "start": self.start,
                 "remove": self.job.get("remove_at_stop")}]

    def close(self) -> None:
        """After the guest's last QEMU: swtpm ends; a transient domain's state goes."""
        self.stop()
        if self.job.get("remove_at_stop"):
            _remove_tree(str(self.job["remove_at_stop"]))

    def ended_warning(self, status: int, guest: str) -> dict[str, Any]:
        return TapvirtError(SWTPM_ENDED, f"domain {guest}: <tpm>",
                            f"swtpm ended while the guest ran ({describe(status)})",
                            f"see {self.job['log']}; restart the guest: tapvirt destroy "
                            f"{guest} && tapvirt start {guest}").to_json()


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def stop_recorded(helpers: list[dict[str, Any]]) -> None:
    """End recorded helpers of a domain whose supervisor is gone: by pid, only if the
    process still has the recorded start time (pids are reused)."""
    for h in helpers:
        pid, start = h.get("pid"), h.get("start")
        if not isinstance(pid, int) or pid <= 0 or start is None or _starttime(pid) != start:
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if _starttime(pid) != start:  # reused between the check and the open
                continue
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            deadline = time.monotonic() + 3
            while _starttime(pid) == start and time.monotonic() < deadline:
                time.sleep(0.02)
            if _starttime(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)
    for h in helpers:
        if isinstance(h.get("remove"), str):
            _remove_tree(h["remove"])


def _remove_tree(path: str) -> None:
    import shutil

    # only ever a TPM state directory under our data root
    if Path(path).parent == data_root():
        shutil.rmtree(path, ignore_errors=True)
