"""The guest agent protocol against a scripted agent on a real UNIX socket: the
guest-sync-delimited handshake skips stale output, commands return, a silent agent is
agent-unresponsive within the timeout, an agent error is agent-error."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tapvirt.domains.agent import AgentClient, secure_sockets
from tapvirt.errors import TapvirtError

IFACES = [{"name": "eth0", "hardware-address": "52:54:00:e3:00:21",
           "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.0.2",
                             "prefix": 24}]}]


def _agent(sock: socket.socket, answer: Callable[[dict[str, object]], bytes | None]) -> None:
    conn, _ = sock.accept()
    with conn:
        conn.sendall(b'{"return": 999}\n garbage \n')  # an abandoned conversation's rest
        buf = b""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line.lstrip(b"\xff"))
                out = answer(msg)
                if out is not None:
                    conn.sendall(out)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    socks: list[socket.socket] = []

    def start(answer: Callable[[dict[str, object]], bytes | None]) -> str:
        path = str(tmp_path / f"ga{len(socks)}.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        socks.append(s)
        threading.Thread(target=_agent, args=(s, answer), daemon=True).start()
        return path

    yield start
    for s in socks:
        s.close()


def _real(msg: dict[str, object]) -> bytes | None:
    args = msg.get("arguments") or {}
    assert isinstance(args, dict)
    if msg["execute"] == "guest-sync-delimited":
        return b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n"
    if msg["execute"] == "guest-network-get-interfaces":
        return json.dumps({"return": IFACES}).encode() + b"\n"
    if msg["execute"] == "guest-shutdown":
        return None  # the guest goes down: no answer
    return json.dumps({"error": {"class": "CommandNotFound", "desc": "no such"}}).encode() \
        + b"\n"


def test_sync_then_commands(server: Callable[..., str]) -> None:
    with AgentClient(server(_real), subject="g", timeout=5) as c:
        c.sync()
        assert c.execute("guest-network-get-interfaces") == IFACES
        with pytest.raises(TapvirtError) as exc:
            c.execute("guest-nope")
        assert exc.value.code.code == "agent-error" and "no such" in exc.value.cause
        c.execute("guest-shutdown", {"mode": "powerdown"}, reply=False)


def test_a_silent_agent_is_unresponsive_within_the_timeout(
        server: Callable[..., str]) -> None:
    path = server(lambda msg: None)
    t0 = time.monotonic()
    with AgentClient(path, subject="g", timeout=0.5) as c, \
            pytest.raises(TapvirtError) as exc:
        c.sync()
    assert exc.value.code.code == "agent-unresponsive"
    assert "0.5 s" in exc.value.cause and "qemu-guest-agent" in exc.value.fix
    assert time.monotonic() - t0 < 3


def test_no_socket_is_unresponsive(tmp_path: Path) -> None:
    with pytest.raises(TapvirtError) as exc:
        AgentClient(str(tmp_path / "none.sock"), subject="g", timeout=0.5)
    assert exc.value.code.code == "agent-unresponsive"


def test_sockets_in_the_runtime_dir_become_0600(tmp_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(tmp_path / "org.qemu.guest_agent.0.sock"))
        (tmp_path / "org.qemu.guest_agent.0.sock").chmod(0o777)
        (tmp_path / "plain").write_text("")
        (tmp_path / "plain").chmod(0o644)
        secure_sockets(str(tmp_path))
        assert (tmp_path / "org.qemu.guest_agent.0.sock").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o644
    finally:
        s.close()


def test_guestinfo_in_virshs_parameter_names() -> None:
    from tapvirt.domains.agent import flatten_guestinfo

    got = flatten_guestinfo({
        "user": [{"user": "root", "login-time": 1.5}],
        "os": {"id": "debian", "name": "Debian", "kernel-release": "6.1", "extra": "x"},
        "timezone": {"zone": "UTC", "offset": 0},
        "hostname": {"host-name": "vm1"},
        "fs": [{"name": "vda1", "mountpoint": "/", "type": "ext4", "used-bytes": 5,
                "total-bytes": 9, "disk": [{"serial": "S1", "dev": "/dev/vda1"}]}],
    })
    assert got == {
        "user.count": "1", "user.0.name": "root", "user.0.login-time": "1500",
        "os.id": "debian", "os.name": "Debian", "os.kernel-release": "6.1",
        "timezone.name": "UTC", "timezone.offset": "0", "hostname": "vm1",
        "fs.count": "1", "fs.0.name": "vda1", "fs.0.mountpoint": "/", "fs.0.fstype": "ext4",
        "fs.0.total-bytes": "9", "fs.0.used-bytes": "5", "fs.0.disk.count": "1",
        "fs.0.disk.0.serial": "S1", "fs.0.disk.0.device": "/dev/vda1"}
    # a group the agent refused is absent, not empty
    assert flatten_guestinfo({"hostname": {"host-name": "h"}}) == {"hostname": "h"}
