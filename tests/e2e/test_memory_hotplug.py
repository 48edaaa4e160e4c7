"""End to end: memory hotplug (issue 9) as the unprivileged user: a guest with
<maxMemory> and one NUMA cell gets a dimm by `attach-device --live --config`; QEMU's
query-memory-devices shows it in the slot tapvirt assigned, the live and the stored XML
have it (and the larger <memory>), a second attach takes the next slot, one beyond the
hotplug space is refused by name before QEMU sees it, and detach-device is refused by
name. After a restart the stored dimms are on the command line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab import Lab, module_lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

NAME = "tv-memhp"
HOTPLUG = ("\n  <maxMemory slots='4' unit='MiB'>1024</maxMemory>\n"
           "  <cpu><numa><cell id='0' cpus='0' memory='192' unit='MiB'/></numa></cpu>")


def dimm(size_mib: int) -> str:
    return (f"<memory model='dimm'><target><size unit='MiB'>{size_mib}</size>"
            "<node>0</node></target></memory>\n")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _file(lab: Lab, name: str, text: str) -> str:
    path = lab.scratch / name
    path.write_text(text)
    path.chmod(0o644)
    return str(path)


def _memory_devices(lab: Lab) -> list[dict[str, Any]]:
    out = lab.tv("qemu-monitor-command", NAME, '{"execute":"query-memory-devices"}').stdout
    reply = json.loads(out)
    return [d["data"] for d in reply.get("return", reply if isinstance(reply, list) else [])]


def test_dimm_attach_live_and_config(lab: Lab) -> None:
    xml = lab.domain_xml(NAME, "", lab.image.cmdline(), extra=HOTPLUG)
    lab.define(NAME, xml)
    lab.tv("start", NAME)
    try:
        assert _memory_devices(lab) == []
        first = _file(lab, "dimm1.xml", dimm(128))
        lab.tv("attach-device", NAME, first, "--live", "--config")
        devs = _memory_devices(lab)
        assert [(d["id"], d["slot"], d["size"], d["node"]) for d in devs] == [
            ("dimm0", 0, 128 << 20, 0)]
        live_xml = lab.tv("dumpxml", NAME).stdout
        assert "<address type='dimm' slot='0'/>" in live_xml
        assert f"<memory unit='KiB'>{(192 + 128) * 1024}</memory>" in live_xml

        lab.tv("attach-device", NAME, _file(lab, "dimm2.xml", dimm(256)), "--live")
        assert [(d["id"], d["slot"]) for d in _memory_devices(lab)] == [
            ("dimm0", 0), ("dimm1", 1)]
        # 192 + 128 + 256 MiB in the guest; 512 more do not fit the 1024 MiB maximum
        too_big = lab.tv("attach-device", NAME, _file(lab, "dimm3.xml", dimm(512)),
                         "--live", check=False)
        assert too_big.returncode != 0
        assert "maximum memory size must be equal or greater" in too_big.stderr
        assert len(_memory_devices(lab)) == 2
        gone = lab.tv("detach-device", NAME, first, "--live", check=False)
        assert gone.returncode != 0 and "hotplug-unsupported" in gone.stderr
    finally:
        lab.tv("destroy", NAME, check=False)
    # the stored definition has the first dimm (--config), not the live-only second
    lab.tv("start", NAME)
    try:
        assert [(d["id"], d["slot"]) for d in _memory_devices(lab)] == [("dimm0", 0)]
    finally:
        lab.tv("destroy", NAME, check=False)
        lab.tv("undefine", NAME, check=False)
