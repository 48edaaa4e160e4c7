"""End to end: VNC and SPICE as the unprivileged user (issue 10, test 4 and the port
failure of test 7). A real RFB handshake (tests.support.rfb) reads the screen size on the
default UNIX socket (0600) and on 127.0.0.1 with autoport; `domdisplay` prints virsh's
URIs; `screenshot` writes a PNG of the guest's text console that is not blank and has the
screen's size; a password is set through QMP (the server then wants VNC authentication)
and is on no command line and not in `dumpxml` without `--security-info`; two concurrent
starts with SPICE and VNC autoport get different ports; a fixed port in use is refused by
name with nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab import Lab, module_lab, wait_until
from tests.support import rfb
from tests.support.sandbox import unprivileged_python

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "screenshot-vga-console.png"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _start(lab: Lab, name: str, graphics: str, *, check: bool = True,
           video: str = "<video><model type='vga'/></video>"
           ) -> subprocess.CompletedProcess[str]:
    # the kernel writes to the VGA text console too (console=tty0), loudly enough to see
    cmdline = "console=tty0 " + lab.image.cmdline() + " loglevel=7"
    xml = lab.domain_xml(name, graphics + video, cmdline)
    lab.define(name, xml)
    return lab.tv("start", name, check=check)


def _rfb_tcp(lab: Lab, host: str, port: int) -> dict[str, object]:
    """The handshake from inside the lab's namespace (where QEMU's 127.0.0.1 is)."""
    script = lab.scratch / "rfb.py"
    if not script.exists():
        shutil.copy(rfb.__file__, script)
        script.chmod(0o644)
    proc = lab.as_user.run([unprivileged_python(), str(script), "tcp", host, str(port)],
                           timeout=60)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def _cmdlines(lab: Lab, name: str) -> str:
    st = lab.state(name)
    text = ""
    for key in ("qemu_pid", "supervisor_pid"):
        if st.get(key):
            text += Path(f"/proc/{st[key]}/cmdline").read_bytes().decode(errors="replace")
    return text


def test_vnc_on_the_default_unix_socket_screen_and_screenshot(lab: Lab) -> None:
    _start(lab, "gfx-sock", "<graphics type='vnc'/>")
    try:
        sock = lab.rundir("gfx-sock") / "vnc.sock"
        assert wait_until(sock.exists, 30)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert sock.stat().st_uid == lab.user.uid
        uri = lab.tv("domdisplay", "gfx-sock").stdout.strip()
        assert uri == f"vnc+unix://{sock}"
        assert f"socket='{sock}'" in lab.tv("dumpxml", "gfx-sock").stdout
        hello = rfb.connect("unix", str(sock))
        assert hello["security"] == [1] and hello["width"] and hello["height"]
        lab.wait_console("gfx-sock", r"TV-MARKER", timeout=180)
        shot = lab.user.home / "shot.png"  # a directory the user (QEMU) may write
        lab.tv("screenshot", "gfx-sock", str(shot))
        width, height, rows = rfb.png_pixels(shot.read_bytes())
        # the text console's size as the RFB server reported it now
        now = rfb.connect("unix", str(sock))
        assert (width, height) == (now["width"], now["height"])
        lit = sum(1 for row in rows for i in range(0, len(row), 3) if any(row[i:i + 3]))
        colours = {row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)}
        assert lit > width * height // 200, f"screenshot is blank: {lit} lit pixels"
        assert len(colours) >= 2
        if os.environ.get("TAPVIRT_UPDATE_DOCS_SHOT") == "1":
            DOCS_SHOT.parent.mkdir(exist_ok=True)
            shutil.copy(shot, DOCS_SHOT)
    finally:
        lab.tv("destroy", "gfx-sock", check=False)


def test_vnc_on_localhost_autoport_with_a_password_set_through_qmp(lab: Lab) -> None:
    _start(lab, "gfx-tcp", "<graphics type='vnc' autoport='yes' listen='127.0.0.1' "
                           "passwd='Sekr1t-pw'/>")
    try:
        uri = lab.tv("domdisplay", "gfx-tcp").stdout.strip()
        assert uri.startswith("vnc://127.0.0.1:"), uri
        display = int(uri.rsplit(":", 1)[1])
        hello = _rfb_tcp(lab, "127.0.0.1", 5900 + display)
        assert hello["security"] == [2]  # VNC authentication: the password is set
        assert "Sekr1t-pw" not in _cmdlines(lab, "gfx-tcp")
        assert "Sekr1t-pw" not in lab.tv("dumpxml", "gfx-tcp").stdout
        assert "passwd='Sekr1t-pw'" in lab.tv("dumpxml", "gfx-tcp", "--security-info").stdout
        assert "Sekr1t-pw" in lab.tv("domdisplay", "gfx-tcp", "--include-password").stdout
    finally:
        lab.tv("destroy", "gfx-tcp", check=False)


def test_vnc_on_localhost_without_password_gets_the_screen_size(lab: Lab) -> None:
    _start(lab, "gfx-open", "<graphics type='vnc' listen='127.0.0.1'/>",
           video="<video><model type='virtio'/></video><input type='tablet' bus='usb'/>")
    try:
        uri = lab.tv("domdisplay", "gfx-open").stdout.strip()
        hello = _rfb_tcp(lab, "127.0.0.1", 5900 + int(uri.rsplit(":", 1)[1]))
        assert hello["security"] == [1]
        assert int(str(hello["width"])) > 0 and int(str(hello["height"])) > 0
    finally:
        lab.tv("destroy", "gfx-open", check=False)


def test_concurrent_starts_get_different_automatic_ports(lab: Lab) -> None:
    names = ("gfx-c1", "gfx-c2")
    graphics = ("<graphics type='spice' autoport='yes' listen='127.0.0.1'/>"
                "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>")
    for n in names:
        lab.define(n, lab.domain_xml(n, graphics + "<video><model type='qxl'/></video>",
                                     lab.image.cmdline()))
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(
        n, lab.tv("start", n, check=False))) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for n in names:
            assert results[n].returncode == 0, results[n].stderr
        spice = {lab.tv("domdisplay", n, "--type", "spice").stdout.strip() for n in names}
        vnc = {lab.tv("domdisplay", n, "--type", "vnc").stdout.strip() for n in names}
        assert len(spice) == 2 and all(u.startswith("spice://127.0.0.1:") for u in spice)
        assert len(vnc) == 2 and all(u.startswith("vnc://127.0.0.1:") for u in vnc)
    finally:
        for n in names:
            lab.tv("destroy", n, check=False)


def test_a_fixed_port_in_use_is_refused_by_name_and_nothing_runs(lab: Lab) -> None:
    _start(lab, "gfx-p1", "<graphics type='vnc' port='5977' autoport='no'/>")
    try:
        proc = _start(lab, "gfx-p2", "<graphics type='vnc' port='5977' autoport='no' "
                                     "listen='127.0.0.1'/>", check=False)
        assert proc.returncode != 0
        assert "graphics-port-in-use" in proc.stderr and "5977" in proc.stderr
        assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
        st = json.loads(lab.tv("dominfo", "gfx-p2", "--json").stdout)
        assert st.get("state") in ("shut off", "shutoff"), st
        assert lab.tv("domdisplay", "gfx-p1").stdout.strip() == "vnc://127.0.0.1:77"
    finally:
        lab.tv("destroy", "gfx-p1", check=False)
