"""tapvirt.domains.display: SPICE port reservations (no two starts share a port), a
fixed port in use refused by name, virsh's domdisplay URIs, dumpxml's password rule."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tapvirt.conf.devices.graphics import Graphics, GraphicsType, Listen, ListenType
from tapvirt.conf.parse import parse_domain as parse_domain_string
from tapvirt.domains import display
from tapvirt.errors import TapvirtError

DOMAIN = """<domain type='qemu'><name>g</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{}</devices></domain>"""
SPICE = "<graphics type='spice' autoport='yes' listen='127.0.0.1'/>"


def test_concurrent_reservations_never_share_a_port(tmp_path: Path) -> None:
    dom = parse_domain_string(DOMAIN.format(SPICE * 2))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: display.autoport_ports(dom, tmp_path), range(8)))
    ports = [p for r in results for p in r]
    assert len(ports) == 16 and len(set(ports)) == 16


def test_a_bound_port_is_skipped_and_a_fixed_one_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        fixed = parse_domain_string(DOMAIN.format(
            f"<graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/>"))
        with pytest.raises(TapvirtError) as exc:
            display.check_fixed_ports(fixed)
        assert exc.value.code.code == "graphics-port-in-use"
        assert str(port) in exc.value.render() and exc.value.fix


def test_default_listen_needs_no_port(tmp_path: Path) -> None:
    dom = parse_domain_string(DOMAIN.format(
        "<graphics type='spice' autoport='yes'/><graphics type='vnc'/>"))
    assert display.autoport_ports(dom, tmp_path) == []
    live = display.with_runtime_listens(dom, "/run/x")
    assert [g.listen.socket for g in live.devices.graphics] == [
        "/run/x/spice.sock", "/run/x/vnc.sock"]


def test_uris_are_virshs() -> None:
    vnc = Graphics(GraphicsType.VNC, listen=Listen(ListenType.ADDRESS, "127.0.0.1"))
    info = {"family": "ipv4", "service": "5901", "host": "127.0.0.1"}
    assert display.display_uri(vnc, info) == "vnc://127.0.0.1:1"
    assert display.display_uri(vnc, info, "pw") == "vnc://:pw@127.0.0.1:1"
    sock = Graphics(GraphicsType.VNC, listen=Listen(ListenType.SOCKET, socket="/r/vnc.sock"))
    assert display.display_uri(sock, {"service": "/r/vnc.sock"}) == "vnc+unix:///r/vnc.sock"
    spice = Graphics(GraphicsType.SPICE, listen=Listen(ListenType.ADDRESS, "::1"))
    assert display.display_uri(spice, {"host": "::1", "port": 5930}) == "spice://[::1]:5930"
    ssock = Graphics(GraphicsType.SPICE, listen=Listen(ListenType.SOCKET, socket="/r/s"))
    assert display.display_uri(ssock, {"host": "/r/s"}) == "spice+unix:///r/s"
