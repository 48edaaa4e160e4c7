"""A small libcni-style runtime for the tests: what a container runtime does with a
network configuration list (CNI spec 1.1.0 §"Lifecycle"), no more.

- ADD runs the plugins in order, each getting the previous one's result as
  `prevResult`, and caches the final result (libcni: /var/lib/cni/results/...);
- CHECK runs them in order with the cached result; DEL in reverse order with it (and
  without one when there is none, as after a failed ADD);
- GC and STATUS run every plugin that speaks 1.1.0;
- the stdin of each plugin is its own object plus `cniVersion` and `name` of the list and
  a `runtimeConfig` made of the capability arguments it declares.

Plugins are looked up in CNI_PATH. With `host_netns`, every plugin runs inside that
namespace (`ip netns exec`), which then plays the role of the host's: a plugin like
`bridge` creates its host-side bridge there, never in the real root namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PluginRun:
    plugin: str
    command: str
    rc: int
    out: dict[str, Any]
    stdout: str
    stderr: str
    stdin: dict[str, Any]


class CniFailed(Exception):
    def __init__(self, run: PluginRun) -> None:
        self.run = run
        super().__init__(f"{run.plugin} {run.command} failed ({run.rc}): {run.stdout} "
                         f"{run.stderr[-2000:]}")

    @property
    def code(self) -> int:
        return int(self.run.out.get("code", -1))


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


@dataclass
class Runtime:
    conflist: dict[str, Any]
    path: list[str]
    cache_dir: Path
    host_netns: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    runs: list[PluginRun] = field(default_factory=list)

    # -- one plugin
    def _binary(self, kind: str) -> str:
        for d in self.path:
            candidate = os.path.join(d, kind)
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(f"plugin {kind} not in CNI_PATH {self.path}")

    def _stdin(self, plugin: dict[str, Any], prev: dict[str, Any] | None,
               capability_args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        conf = dict(plugin)
        conf["cniVersion"] = self.conflist["cniVersion"]
        conf["name"] = self.conflist["name"]
        caps = plugin.get("capabilities") or {}
        rc = {k: v for k, v in capability_args.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        conf.update(extra)
        return conf

    def exec(self, plugin: dict[str, Any], command: str, *, cid: str = "", netns: str = "",
             ifname: str = "", cni_args: str = "", prev: dict[str, Any] | None = None,
             capability_args: dict[str, Any] | None = None,
             extra: dict[str, Any] | None = None) -> PluginRun:
        stdin = self._stdin(plugin, prev, capability_args or {}, extra or {})
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
               "CNI_PATH": ":".join(self.path), **self.env}
        for k, v in (("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                     ("CNI_ARGS", cni_args)):
            if v:
                env[k] = v
        argv = [self._binary(plugin["type"])]
        if self.host_netns:
            argv = ["ip", "netns", "exec", self.host_netns, *argv]
        proc = subprocess.run(argv, input=json.dumps(stdin), capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        out: dict[str, Any] = {}
        if proc.stdout.strip():
            out = json.loads(proc.stdout)
        run = PluginRun(plugin["type"], command, proc.returncode, out, proc.stdout,
                        proc.stderr, stdin)
        self.runs.append(run)
        if proc.returncode != 0:
            raise CniFailed(run)
        return run

    # -- the list
    def _cache(self, cid: str, ifname: str) -> Path:
        return self.cache_dir / f"{self.conflist['name']}-{cid}-{ifname}"

    def cached(self, cid: str, ifname: str) -> dict[str, Any] | None:
        path = self._cache(cid, ifname)
        return json.loads(path.read_text()) if path.exists() else None

    def add(self, cid: str, netns: str, ifname: str, *, cni_args: str = "",
            capability_args: dict[str, Any] | None = None) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            prev = self.exec(plugin, "ADD", cid=cid, netns=netns, ifname=ifname,
                             cni_args=cni_args, prev=prev,
                             capability_args=capability_args).out
        assert prev is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache(cid, ifname).write_text(json.dumps(prev))
        return prev

    def check(self, cid: str, netns: str, ifname: str, *, cni_args: str = "") -> None:
        result = self.cached(cid, ifname)
        if result is None:
            raise FileNotFoundError("no cached result: CHECK needs a previous ADD")
        for plugin in self.conflist["plugins"]:
            self.exec(plugin, "CHECK", cid=cid, netns=netns, ifname=ifname,
                      cni_args=cni_args, prev=result)

    def delete(self, cid: str, netns: str, ifname: str, *, cni_args: str = "") -> None:
        result = self.cached(cid, ifname)
        for plugin in reversed(self.conflist["plugins"]):
            self.exec(plugin, "DEL", cid=cid, netns=netns, ifname=ifname,
                      cni_args=cni_args, prev=result)
        self._cache(cid, ifname).unlink(missing_ok=True)

    def _v11(self) -> list[dict[str, Any]]:
        if version_tuple(self.conflist["cniVersion"]) < (1, 1, 0):
            return []
        return list(self.conflist["plugins"])

    def gc(self, valid: list[tuple[str, str]]) -> list[PluginRun]:
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        return [self.exec(p, "GC", extra={"cni.dev/valid-attachments": attachments})
                for p in self._v11()]

    def status(self) -> list[PluginRun]:
        return [self.exec(p, "STATUS") for p in self._v11()]
