"""The QEMU guest agent of a running guest: its channel socket and the protocol.

A `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>` without
a path listens on `<runtime dir>/org.qemu.guest_agent.0.sock` (QEMU is the server; the
supervisor makes it 0600 as soon as QEMU answers). The protocol is QMP-like JSON lines
without a greeting. Every conversation starts like libvirt's (qemuAgentGuestSync):
`guest-sync-delimited` with a random id, written after a 0xFF byte that makes the agent
drop any half-read input; the agent answers with 0xFF and then the id, so stale output
of an earlier, abandoned conversation is skipped. Only then the command. An agent that
does not answer within the timeout (not installed in the guest, not started yet, the
guest paused) is `agent-unresponsive`, never a hang.

Verbs: `domifaddr --source agent` (guest-network-get-interfaces), `domhostname`
(guest-get-host-name), `guestinfo` (users, OS, timezone, host name, file systems, in
virsh's parameter names), `shutdown --mode agent`
and `reboot --mode agent` (guest-shutdown, which the agent does not answer when it
works: the guest goes down instead)."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any

from tapvirt.domains.live_errors import AGENT_ERROR, AGENT_UNRESPONSIVE, NO_GUEST_AGENT
from tapvirt.errors import TapvirtError

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

DEFAULT_TIMEOUT = 5.0  # libvirt: VIR_DOMAIN_QEMU_AGENT_COMMAND_DEFAULT (5 s)


def agent_socket(dom: Domain, runtime_dir: str) -> str:
    """The guest agent channel's socket path; no-guest-agent when there is none."""
    from tapvirt.conf.devices.channel import channel_socket

    for c in dom.devices.channels:
        if c.guest_agent:
            path = channel_socket(c, runtime_dir)
            if path is not None:
                return path
    raise TapvirtError(
        NO_GUEST_AGENT, f"domain {dom.name}", "it has no guest agent channel",
        "add <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
        "</channel> to the definition, install qemu-guest-agent in the guest, restart")


class AgentClient:
    """One conversation with the agent over its socket (connect, sync, commands)."""

    def __init__(self, path: str, *, subject: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path, self.subject, self.timeout = path, subject, timeout
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise TapvirtError(
                AGENT_UNRESPONSIVE, subject,
                f"cannot connect to the guest agent socket {path}: {exc.strerror or exc}",
                "check that the guest runs (tapvirt domstate) and retry") from None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline_error(self, what: str) -> TapvirtError:
        return TapvirtError(
            AGENT_UNRESPONSIVE, self.subject,
            f"the guest agent did not answer {what} within {self.timeout:g} s",
            "install and start qemu-guest-agent in the guest (it needs virtio_console and "
            "/dev/virtio-ports/org.qemu.guest_agent.0), or use another --source / --mode")

    def _read_until(self, deadline: float, what: str, pred: Any) -> Any:
        while True:
            found = pred()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._deadline_error(what)
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise self._deadline_error(what) from None
            except OSError as exc:
                raise TapvirtError(AGENT_UNRESPONSIVE, self.subject,
                                   f"the agent socket failed: {exc.strerror or exc}",
                                   "retry") from None
            if not data:
                raise TapvirtError(AGENT_UNRESPONSIVE, self.subject,
                                   "QEMU closed the guest agent socket",
                                   "check that the guest still runs; retry")
            self._buf += data

    def _next_message(self) -> dict[str, Any] | None:
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            line = line.strip(b"\xff \r\t")
            if not line:
                continue
            try:
                msg = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the remains of an abandoned conversation
            if isinstance(msg, dict):
                return msg
        return None

    def sync(self) -> None:
        """guest-sync-delimited: from here on the replies are ours."""
        ident = random.SystemRandom().randrange(1, 2**31)
        self._send({"execute": "guest-sync-delimited", "arguments": {"id": ident}},
                   delimit=True)
        deadline = time.monotonic() + self.timeout

        def synced() -> bool | None:
            while True:
                # skip to the agent's 0xFF, then the id
                if b"\xff" in self._buf:
                    self._buf = self._buf.split(b"\xff")[-1]
                msg = self._next_message()
                if msg is None:
                    return None
                if msg.get("return") == ident:
                    return True

        self._read_until(deadline, "guest-sync-delimited", synced)

    def _send(self, msg: dict[str, Any], *, delimit: bool = False) -> None:
        data = (b"\xff" if delimit else b"") + json.dumps(msg).encode() + b"\n"
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise TapvirtError(AGENT_UNRESPONSIVE, self.subject,
                               f"writing to the agent socket failed: {exc.strerror or exc}",
                               "retry") from None

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                reply: bool = True) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._send(msg)
        if not reply:
            return None
        answer = self._read_until(time.monotonic() + self.timeout, command,
                                  self._next_message)
        if "error" in answer:
            err = answer["error"] if isinstance(answer["error"], dict) else {}
            raise TapvirtError(AGENT_ERROR, self.subject,
                               f"{command}: {err.get('desc', answer['error'])}",
                               "see the guest agent's log in the guest")
        return answer.get("return")


def connect(name: str, *, timeout: float = DEFAULT_TIMEOUT) -> AgentClient:
    """A synced agent conversation of the running guest NAME."""
    from tapvirt.domains import live
    from tapvirt.qemu.argv.peripherals import runtime_dir_of

    dd, _ = live.supervised(name)
    dom = live.live_domain(dd)
    path = agent_socket(dom, runtime_dir_of(str(dd.qmp_socket)))
    client = AgentClient(path, subject=f"domain {name} (guest agent)", timeout=timeout)
    try:
        client.sync()
    except BaseException:
        client.close()
        raise
    return client


def interfaces(name: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """guest-network-get-interfaces, as the agent reports it."""
    with connect(name, timeout=timeout) as c:
        got = c.execute("guest-network-get-interfaces")
    return list(got) if isinstance(got, list) else []


def shutdown(name: str, *, reboot: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
    """guest-shutdown mode powerdown or reboot: the guest OS goes down by itself; the
    agent sends no reply when it works (it may send an error when it cannot)."""
    with connect(name, timeout=timeout) as c:
        c.execute("guest-shutdown", {"mode": "reboot" if reboot else "powerdown"},
                  reply=False)


def hostname(name: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """guest-get-host-name (virsh domhostname --source agent)."""
    with connect(name, timeout=timeout) as c:
        got = c.execute("guest-get-host-name")
    return str((got or {}).get("host-name", ""))


# virsh guestinfo's groups: (group, agent command)
GUESTINFO = (("user", "guest-get-users"), ("os", "guest-get-osinfo"),
             ("timezone", "guest-get-timezone"), ("hostname", "guest-get-host-name"),
             ("fs", "guest-get-fsinfo"))


def guestinfo(name: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
    """virsh guestinfo: one conversation, every group the agent supports (a group whose
    command the agent refuses is left out, as virsh does without a group flag)."""
    answers: dict[str, Any] = {}
    with connect(name, timeout=timeout) as c:
        for group, command in GUESTINFO:
            try:
                answers[group] = c.execute(command)
            except TapvirtError as err:
                if err.code is not AGENT_ERROR:
                    raise
    return flatten_guestinfo(answers)


def flatten_guestinfo(answers: dict[str, Any]) -> dict[str, str]:
    """The agent's answers as virsh guestinfo's typed parameters (qemuAgentGetUsers,
    ...GetOSInfo, ...GetTimezone, ...GetHostname, ...GetFSInfo). PURE."""
    out: dict[str, str] = {}
    if isinstance(users := answers.get("user"), list):
        out["user.count"] = str(len(users))
        for n, u in enumerate(users):
            out[f"user.{n}.name"] = str(u.get("user", ""))
            if u.get("domain"):
                out[f"user.{n}.domain"] = str(u["domain"])
            if "login-time" in u:
                out[f"user.{n}.login-time"] = str(int(float(u["login-time"]) * 1000))
    if isinstance(osinfo := answers.get("os"), dict):
        for key in ("id", "name", "pretty-name", "version", "version-id", "kernel-release",
                    "kernel-version", "machine", "variant", "variant-id"):
            if key in osinfo:
                out[f"os.{key}"] = str(osinfo[key])
    if isinstance(tz := answers.get("timezone"), dict):
        if "zone" in tz:
            out["timezone.name"] = str(tz["zone"])
        out["timezone.offset"] = str(tz.get("offset", 0))
    if isinstance(host := answers.get("hostname"), dict):
        out["hostname"] = str(host.get("host-name", ""))
    if isinstance(fss := answers.get("fs"), list):
        out["fs.count"] = str(len(fss))
        for n, fs in enumerate(fss):
            for key, field in (("name", "name"), ("mountpoint", "mountpoint"),
                               ("fstype", "type"), ("total-bytes", "total-bytes"),
                               ("used-bytes", "used-bytes")):
                if field in fs:
                    out[f"fs.{n}.{key}"] = str(fs[field])
            disks = fs.get("disk") or []
            out[f"fs.{n}.disk.count"] = str(len(disks))
            for k, d in enumerate(disks):
                if d.get("serial"):
                    out[f"fs.{n}.disk.{k}.serial"] = str(d["serial"])
                if d.get("dev"):
                    out[f"fs.{n}.disk.{k}.device"] = str(d["dev"])
    return out


def secure_sockets(runtime_dir: str) -> None:
    """Channel sockets QEMU made in the runtime directory get mode 0600 (QEMU makes them
    with its umask; the directory is private already)."""
    import stat

    try:
        names = os.listdir(runtime_dir)
    except OSError:
        return
    for n in names:
        p = os.path.join(runtime_dir, n)
        try:
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(p, 0o600)
        except OSError:
            continue
