"""Fixtures for tapvirt-cni: the plugin installed as a runtime finds it (an executable in
a CNI_PATH directory), executed directly with CNI_* variables and JSON on stdin."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import SRC, Netns, world_readable_dir

DEBIAN_PLUGINS = "/usr/lib/cni"


@pytest.fixture(scope="session")
def plugin_dir() -> Iterator[Path]:
    """A CNI_PATH directory holding `tapvirt-cni` (a wrapper for this source tree)."""
    d = world_readable_dir("tv-cnibin-")
    exe = d / "tapvirt-cni"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={SRC} exec {sys.executable} -m tapvirt.cni.main\n")
    exe.chmod(0o755)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


@dataclass
class CniRun:
    rc: int
    out: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def code(self) -> int | None:
        return int(self.out["code"]) if self.rc != 0 and "code" in self.out else None


@dataclass
class Cni:
    """Runs tapvirt-cni as a runtime does; `conf()` makes a configuration with the test's
    own stateDir and nodeDir."""

    plugin_dir: Path
    netns: Netns
    state_dir: Path
    node_dir: Path

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns.name}"

    def conf(self, version: str = "1.1.0", **keys: Any) -> dict[str, Any]:
        return {"cniVersion": version, "name": "tvnet", "type": "tapvirt-cni",
                "owner": 107, "group": 107, "stateDir": str(self.state_dir),
                "nodeDir": str(self.node_dir), **keys}

    def run(self, command: str, conf: dict[str, Any] | bytes | None = None, *,
            cid: str = "ctr1", ifname: str = "tap0", netns: str | None = None,
            args: str = "", env: dict[str, str] | None = None,
            drop: tuple[str, ...] = (), argv_prefix: tuple[str, ...] = ()) -> CniRun:
        full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
                "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
                "CNI_NETNS": self.netns_path if netns is None else netns,
                "CNI_PATH": f"{self.plugin_dir}:{DEBIAN_PLUGINS}", **(env or {})}
        if args:
            full["CNI_ARGS"] = args
        for var in drop:
            full.pop(var, None)
        data = conf if isinstance(conf, bytes) else json.dumps(conf or self.conf()).encode()
        proc = subprocess.run([*argv_prefix, str(self.plugin_dir / "tapvirt-cni")],
                              input=data, capture_output=True, env=full, timeout=60,
                              check=False)
        stdout = proc.stdout.decode()
        out = json.loads(stdout) if stdout.strip() else {}
        return CniRun(proc.returncode, out, stdout, proc.stderr.decode())

    def ok(self, command: str, conf: dict[str, Any] | bytes | None = None,
           **kw: Any) -> CniRun:
        run = self.run(command, conf, **kw)
        assert run.rc == 0, (run.stdout, run.stderr)
        return run

    def fails(self, code: int, command: str, conf: dict[str, Any] | bytes | None = None,
              **kw: Any) -> CniRun:
        run = self.run(command, conf, **kw)
        assert run.rc != 0 and run.code == code, (run.rc, run.stdout, run.stderr)
        assert set(run.out) == {"cniVersion", "code", "msg", "details"}, run.out
        return run


@pytest.fixture
def cni(plugin_dir: Path, netns: Netns, scratch: Path) -> Iterator[Cni]:
    c = Cni(plugin_dir, netns, scratch / "state", scratch / "nodes")
    yield c
    # whatever a failing test left: the netns goes with its devices; nodes with scratch


def link(netns: Netns, dev: str) -> dict[str, Any] | None:
    return netns.link_json(dev)


def tun_data(netns: Netns, dev: str) -> dict[str, Any]:
    data = netns.link_json(dev)
    assert data is not None, dev
    info = data.get("linkinfo", {})
    assert isinstance(info, dict)
    return dict(info.get("info_data", {}))


def run_plain(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**os.environ})


def is_id(value: Any, number: int, *, group: bool = False) -> bool:
    """`ip -j` shows a uid/gid by name when it has one on this machine."""
    import grp
    import pwd

    names = {str(number)}
    with contextlib.suppress(KeyError):
        names.add(grp.getgrgid(number).gr_name if group else pwd.getpwuid(number).pw_name)
    return str(value) in names
