"""The plugin as the DaemonSet installs it: one zipapp (tapvirt + pyroute2) run by a bare
system python3 that has neither tapvirt nor pyroute2 installed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import REPO, Netns


def test_the_zipapp_plugin_runs_on_a_bare_python(netns: Netns, scratch: Path) -> None:
    import pyroute2

    system_python = "/usr/bin/python3"
    probe = subprocess.run([system_python, "-c", "import pyroute2"], capture_output=True,
                           check=False, env={"PATH": "/usr/bin:/bin"})
    if probe.returncode == 0:
        pytest.skip("the system python3 has pyroute2: it would not show the zipapp's own")
    out = scratch / "tapvirt-cni"
    subprocess.run([str(REPO / "scripts/build-cni-plugin"), str(out),
                    os.path.dirname(pyroute2.__file__)], check=True, capture_output=True)
    conf = {"cniVersion": "1.1.0", "name": "tvnet", "type": "tapvirt-cni", "owner": 107,
            "group": 107, "mtu": 1400, "stateDir": str(scratch / "state"),
            "nodeDir": str(scratch / "nodes")}
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_CONTAINERID": "zip1",
            "CNI_IFNAME": "tap0", "CNI_NETNS": f"/run/netns/{netns.name}",
            "CNI_PATH": str(scratch)}
    results: dict[str, Any] = {}
    for command in ("VERSION", "ADD", "CHECK", "DEL"):
        stdin = dict(conf)
        if command == "CHECK":
            stdin["prevResult"] = results["ADD"]
        proc = subprocess.run([str(out)], input=json.dumps(stdin), capture_output=True,
                              text=True, env={**base, "CNI_COMMAND": command}, check=False)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        results[command] = json.loads(proc.stdout) if proc.stdout.strip() else None
    assert results["ADD"]["interfaces"][0]["mtu"] == 1400
    assert netns.link_json("tap0") is None
