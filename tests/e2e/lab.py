"""A lab for end-to-end tests: a netns with a bridge, an unprivileged user with a
private tun node and runtime directory, the test guest, and helpers to write domain XML,
run `tapvirt` as that user and watch a guest's console."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import guest
from tests.support.sandbox import (
    AsUser,
    CodeCopy,
    Netns,
    User,
    private_tun_node,
    run,
    unique,
    world_readable_dir,
)

BRIDGE_IP = "10.213.0.1"


@dataclass
class Lab:
    netns: Netns
    user: User
    code: CodeCopy
    scratch: Path
    image: guest.GuestImage
    tun: Path
    bridge: str
    as_user: AsUser
    xdg: Path
    _n: int = field(default=0)

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Lab]:
        image = guest.build()
        scratch = world_readable_dir("tv-e2e-")
        stack = contextlib.ExitStack()
        try:
            stack.callback(shutil.rmtree, scratch, True)
            code = CodeCopy.create()
            stack.callback(code.close)
            user = User.create(scratch)
            stack.callback(user.close)
            netns = Netns.create("tv-e2e")
            stack.callback(netns.close)
            tun = private_tun_node(scratch, user.uid, user.gid)
            xdg = scratch / "xdg"
            xdg.mkdir(mode=0o700)
            os.chown(xdg, user.uid, user.gid)
            bridge = unique("tvbr")
            netns.ip("link", "add", bridge, "type", "bridge")
            netns.ip("addr", "add", f"{BRIDGE_IP}/24", "dev", bridge)
            netns.ip("link", "set", bridge, "up")
            env = {"XDG_RUNTIME_DIR": str(xdg)}
            if os.environ.get("TAPVIRT_SUPERVISOR"):  # run the suite on either path
                env["TAPVIRT_SUPERVISOR"] = os.environ["TAPVIRT_SUPERVISOR"]
            as_user = AsUser(user, netns, code, env=env)
            lab = cls(netns, user, code, scratch, image, tun, bridge, as_user, xdg)
            stack.callback(lab.stop_all)
            yield lab
        finally:
            stack.close()

    # -- devices (created by root, as the privileged side would) -------------------------

    def tap(self, *, multi_queue: bool = False) -> str:
        name = unique("tvt")
        args = ["ip", "tuntap", "add", "mode", "tap", "user", self.user.name, "vnet_hdr",
                "name", name]
        if multi_queue:
            args.append("multi_queue")
        self.netns.exec(*args)
        self.netns.ip("link", "set", name, "master", self.bridge, "up")
        return name

    def macvtap(self, mac: str) -> str:
        """A macvtap on a veth whose peer is in the bridge; its MAC is the guest's, its
        node /dev/tap<ifindex> is chowned to the user. The ifindex is chosen high and
        random because /dev/tapN is shared by all namespaces (kernel-facts §9)."""
        a, b, name = unique("tvva"), unique("tvvb"), unique("tvm")
        self.netns.ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.netns.ip("link", "set", a, "master", self.bridge, "up")
        self.netns.ip("link", "set", b, "up")
        index = random.randint(20000, 60000)
        while Path(f"/dev/tap{index}").exists():
            index = random.randint(20000, 60000)
        self.netns.ip("link", "add", "link", b, "name", name, "index", str(index),
                      "address", mac, "type", "macvtap", "mode", "bridge")
        self.netns.ip("link", "set", name, "up")
        node = Path(f"/dev/tap{index}")
        deadline = time.monotonic() + 5
        while not node.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.chown(node, self.user.uid, self.user.gid)
        return name

    def snapshot(self, dev: str) -> dict[str, Any]:
        """What must not change on a precreated device: MAC, MTU, flags, owner, master."""
        info = self.netns.link_json(dev)
        assert info is not None, f"{dev} vanished"
        data = info.get("linkinfo", {})
        assert isinstance(data, dict)
        return {k: info.get(k) for k in ("ifname", "address", "mtu", "flags", "master",
                                          "operstate")} | {
            "info_data": data.get("info_data"), "kind": data.get("info_kind")}

    # -- domains ----------------------------------------------------------------------

    def next_ip(self) -> str:
        self._n += 1
        return f"10.213.0.{10 + self._n}"

    def domain_xml(self, name: str, interfaces: str, cmdline: str, *,
                   extra: str = "") -> str:
        return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{self.image.kernel}</kernel><initrd>{self.image.initrd}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <features><acpi/></features>{extra}
  <devices>
{interfaces}
  </devices>
</domain>
"""

    def define(self, name: str, xml: str) -> None:
        path = self.scratch / f"{name}.xml"
        path.write_text(xml)
        path.chmod(0o644)
        self.tv("define", str(path))

    def tv(self, *args: str, check: bool = True, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
        proc = self.as_user.tapvirt(*args, "--tun-node", str(self.tun)) if args[0] in (
            "start", "create") else self.as_user.tapvirt(*args, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"tapvirt {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def tv_json(self, *args: str) -> Any:
        return json.loads(self.tv(*args, "--json").stdout)

    def rundir(self, name: str) -> Path:
        return self.xdg / "tapvirt" / name

    def console(self, name: str) -> str:
        try:
            return (self.rundir(name) / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, name: str, pattern: str, timeout: float = 90) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.console(name))
            if m:
                return m
            time.sleep(0.2)
        raise AssertionError(f"{name}: no {pattern!r} within {timeout} s; console:\n"
                             f"{self.console(name)[-2000:]}")

    def state(self, name: str) -> dict[str, Any]:
        st: dict[str, Any] = json.loads((self.rundir(name) / "state.json").read_text())
        return st

    def host_ping(self, ip: str) -> bool:
        proc = self.netns.exec("busybox", "ping", "-c", "2", "-W", "3", ip, check=False,
                               timeout=30)
        return proc.returncode == 0

    @property
    def supervised(self) -> bool:
        """Whether a guest with nothing to supervise gets a supervisor on this run
        (TAPVIRT_SUPERVISOR; tapvirt.domains.direct)."""
        return self.as_user.env.get("TAPVIRT_SUPERVISOR", "always") == "always"

    def stop_all(self) -> None:
        """Destroy what is still running (by pid, from the state files)."""
        root = self.xdg / "tapvirt"
        if not root.is_dir():
            return
        for d in root.iterdir():
            with contextlib.suppress(Exception):
                st = json.loads((d / "state.json").read_text())
                for key in ("supervisor_pid", "qemu_pid"):
                    if st.get(key):
                        os.kill(int(st[key]), 9)
                for helper in st.get("helpers") or []:  # swtpm
                    with contextlib.suppress(Exception):
                        os.kill(int(helper["pid"]), 9)


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def wait_until(pred: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


__all__ = ["BRIDGE_IP", "Lab", "run", "wait_until", "zombie"]


def module_lab() -> Iterator[Lab]:
    """The body of a test module's `lab` fixture: skipped without root, a subreaper for
    the guests' processes, the lab torn down and orphans reaped afterwards."""
    import pytest

    from tests.support.reaper import become_subreaper, reap_orphans
    from tests.support.sandbox import is_root

    if not is_root():
        pytest.skip("needs root: creates network namespaces, users and devices")
    become_subreaper()
    try:
        with Lab.create() as lab:
            yield lab
    finally:
        reap_orphans()
