"""Golden xml2argv: tests/data/xml2argv/NAME.xml + NAME.host.json (a FakeHost) -> NAME.args
(the argv, then the QMP commands and warnings as '#' lines) or NAME.err (code, message,
fix). Regenerate with REGENERATE=1 and review the diff.

Every case also asserts what a user relies on beyond the text: `domxml-to-native`'s plan
gives the same argv as a real connect, and afterwards every fd is closed, every device
tapvirt created is gone, and no pre-existing device was changed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tapvirt.conf.parse import parse_domain_file
from tapvirt.errors import TapvirtError
from tapvirt.host.fake import FakeHost
from tapvirt.qemu.argv import build_argv, startup_commands
from tapvirt.qemu.connect import connect_domain, plan_domain

DATA = Path(__file__).resolve().parents[2] / "data" / "xml2argv"
CASES = sorted(p.name[: -len(".xml")] for p in DATA.glob("*.xml"))
QMP = "/run/user/1000/tapvirt/guest/qmp.sock"
REGENERATE = os.environ.get("REGENERATE") == "1"


def _run(name: str) -> tuple[str, str]:
    desc = json.loads((DATA / f"{name}.host.json").read_text())
    desc.setdefault("identity", {"uid": 1000, "gids": [1000], "user": "alice"})
    fake = FakeHost.from_json(desc)
    before = dict(fake.links)
    tun_node = desc.get("tun_node")
    user = fake.user_name or "alice"
    try:
        dom = parse_domain_file(DATA / f"{name}.xml", rand=random.Random(0))
        planned = build_argv(dom, plan_domain(dom, fake, tun_node=tun_node), qmp_socket=QMP)
        conn = connect_domain(dom, fake, tun_node=tun_node, user=user,
                              bridge_helper=fake.run_bridge_helper,
                              vhost_opener=fake.open_vhost_net)
    except TapvirtError as err:
        assert not fake.open_fds, "an fd leaked on the error path"
        assert fake.links.keys() == before.keys(), "a device created on the way was left"
        assert not fake.changes
        return "err", f"{err.code.code}\n{err.message}\nfix: {err.fix}\n"
    argv = build_argv(dom, conn.specs(), qmp_socket=QMP)
    assert argv == planned, "domxml-to-native would not show what start runs"
    lines = list(argv)
    lines += [f"# qmp {json.dumps(c, separators=(',', ':'))}" for c in startup_commands(dom)]
    lines += [f"# {w.code.code}: {w.message}" for w in conn.warnings()]
    assert conn.cleanup() == []
    assert not fake.open_fds
    assert fake.links.keys() == before.keys() and not fake.changes
    return "args", "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", CASES)
def test_xml2argv(name: str) -> None:
    kind, text = _run(name)
    other = "err" if kind == "args" else "args"
    path = DATA / f"{name}.{kind}"
    if REGENERATE:
        path.write_text(text)
        (DATA / f"{name}.{other}").unlink(missing_ok=True)
    assert not (DATA / f"{name}.{other}").exists(), f"expected {name}.{other}, got {kind}"
    assert path.exists(), f"no golden {path.name}: run with REGENERATE=1 and review it"
    assert text == path.read_text()


def test_every_network_code_has_a_golden_case() -> None:
    from tapvirt import netcodes
    from tapvirt.errors import ErrorCode

    codes = {v.code for v in vars(netcodes).values() if isinstance(v, ErrorCode)}
    seen = {p.read_text().split("\n", 1)[0] for p in DATA.glob("*.err")}
    seen |= {line.split(":")[0][2:] for p in DATA.glob("*.args")
             for line in p.read_text().splitlines() if line.startswith("# ") and
             not line.startswith("# qmp")}
    # host-error: only for errno tapvirt cannot explain (covered by the rollback case)
    missing = codes - seen
    assert not missing, f"no golden case for {sorted(missing)}"


ORACLE = DATA.parent / "oracle"
# Intentional differences (docs/argv.md): tapvirt numbers fds from 3 and tells a virtio
# guest the MTU of a device whose MTU is not 1500. PCI slots (bus, addr) are compared:
# tapvirt assigns them as libvirt does (tapvirt.conf.addresses).


def _normalize_oracle(lines: list[str]) -> list[str]:
    out: list[str] = []
    fd_map: dict[str, str] = {}
    for line in lines:
        opt, _, value = line.partition(" ")
        if opt not in ("-netdev", "-device"):
            out.append(line)
            continue
        obj = json.loads(value)
        for key in ("fd", "fds", "vhostfd", "vhostfds"):
            if key in obj:
                nums = obj[key].split(":")
                obj[key] = ":".join(fd_map.setdefault(n, str(3 + len(fd_map))) for n in nums)
        out.append(f"{opt} {json.dumps(obj, separators=(',', ':'))}")
    return out


def _ours(name: str, inherited_mtu: bool) -> list[str]:
    lines = (DATA / f"{name}.args").read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if line in ("-netdev", "-device") and lines[i + 1].startswith("{"):
            obj = json.loads(lines[i + 1])
            if line == "-device" and "netdev" not in obj:
                continue
            if inherited_mtu:
                obj.pop("host_mtu", None)
            out.append(f"{line} {json.dumps(obj, separators=(',', ':'))}")
        elif line.startswith("# qmp "):
            out.append(line[len("# qmp "):])
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in ORACLE.glob("*.net")))
def test_network_argv_matches_real_libvirt(name: str) -> None:
    """Against real libvirt 9.0 + QEMU 7.2 (libvirt-oracle.sh; the command heads each file)."""
    oracle = [line for line in (ORACLE / f"{name}.net").read_text().splitlines()
              if not line.startswith("#")]
    xml = (DATA / f"{name}.xml").read_text()
    inherited = "<mtu" not in xml
    ours = _ours(name, inherited)
    assert len(ours) >= 2 and ours == _normalize_oracle(oracle)
