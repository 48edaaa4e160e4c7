"""Fixtures for tapvirt-prep tests: run the real CLI as root in a subprocess (it enters
the test's namespace itself with --netns), with a policy and a log file of the test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import SRC, Netns, User


@dataclass
class PrepRun:
    rc: int
    out: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def code(self) -> str | None:
        err = self.out.get("error")
        return str(err["code"]) if isinstance(err, dict) else None

    @property
    def result(self) -> dict[str, Any]:
        results = self.out["results"]
        assert len(results) == 1, results
        return dict(results[0])


@dataclass
class Prep:
    """`tapvirt-prep` as root, in one namespace, with the test's policy and log."""

    netns: Netns
    policy: Path
    log: Path
    node_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def events(self) -> list[dict[str, Any]]:
        """The decision log file's events: every line `STAMP [PID] {json}`, nothing else."""
        out = []
        for line in self.log.read_text().splitlines():
            stamp, pid, data = line.split(" ", 2)
            assert stamp[0].isdigit() and pid.startswith("["), line
            out.append(json.loads(data))
        return out

    def write_policy(self, text: str) -> None:
        self.policy.write_text(text)

    def run(self, *args: str, requester: str | None = None, json_out: bool = True,
            netns: bool = True, admin_opts: bool = True,
            env: dict[str, str] | None = None) -> PrepRun:
        # common options go right after the verb, so that `args` may end with "-- NAME"
        argv = [sys.executable, "-m", "tapvirt.cli.prep", *args[:1]]
        if netns:
            argv += ["--netns", self.netns.name]
        if admin_opts:
            argv += ["--policy", str(self.policy), "--log-file", str(self.log),
                     "--node-dir", str(self.node_dir)]
        if requester is not None:
            argv += ["--requester", requester]
        if json_out:
            argv.append("--json")
        argv += args[1:]
        # TAPVIRT_TEST_PYTHONPATH puts e.g. another pyroute2 version in front of ours
        pypath = ":".join(p for p in (os.environ.get("TAPVIRT_TEST_PYTHONPATH"), str(SRC)) if p)
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": pypath,
                    "LANG": "C.UTF-8", **self.env, **(env or {})}
        proc = subprocess.run(argv, capture_output=True, text=True, env=full_env,
                              timeout=60, check=False)
        out: dict[str, Any] = {}
        if json_out and proc.stdout.strip():
            out = json.loads(proc.stdout)
        return PrepRun(proc.returncode, out, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: Any) -> dict[str, Any]:
        run = self.run(*args, **kw)
        assert run.rc == 0, (run.stdout, run.stderr)
        return run.result

    def fails(self, code: str, *args: str, rc: int | None = None, **kw: Any) -> PrepRun:
        run = self.run(*args, **kw)
        assert run.code == code, (run.rc, run.stdout, run.stderr)
        if rc is not None:
            assert run.rc == rc
        return run


@pytest.fixture
def prep(netns: Netns, scratch: Path) -> Iterator[Prep]:
    node_dir = scratch / "nodes"
    p = Prep(netns, scratch / "prep.toml", scratch / "prep.log", node_dir)
    p.write_policy("")
    yield p


def link_names(netns: Netns) -> set[str]:
    out = netns.ip("-j", "link", "show").stdout
    return {str(link["ifname"]) for link in json.loads(out)}


def allow_user(user: User, extra: str = "") -> str:
    return f'[[allow]]\nname = "test"\nusers = ["{user.name}"]\n{extra}\n'
