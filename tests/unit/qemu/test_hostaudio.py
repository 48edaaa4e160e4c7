"""The OSS device check before start: QEMU's oss backend does not start without them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tapvirt.conf.model import Domain
from tapvirt.conf.parse import parse_domain
from tapvirt.errors import TapvirtError
from tapvirt.qemu.hostaudio import check_audio_devices, oss_devices

DOC = """<domain type='qemu'><name>guest</name><memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>{}</devices></domain>"""


def _dom(audio: str) -> Domain:
    return parse_domain(DOC.format(audio), rand=random.Random(0))


def test_default_device_is_dev_dsp_for_both_directions() -> None:
    dom = _dom("<audio id='1' type='oss'><output dev='/srv/dsp1'/></audio>"
               "<audio id='2' type='alsa'/>")
    assert oss_devices(dom) == [(1, "/dev/dsp"), (1, "/srv/dsp1")]


def test_missing_device_is_refused_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "dsp"
    dom = _dom(f"<audio id='3' type='oss'><input dev='{tmp_path}/ok'/>"
               f"<output dev='{missing}'/></audio>")
    (tmp_path / "ok").write_bytes(b"")
    with pytest.raises(TapvirtError) as info:
        check_audio_devices(dom)
    err = info.value
    assert err.code.code == "audio-device-unavailable"
    assert f"audio 3 ({missing})" in err.subject and "does not exist" in err.message
    assert "alsa" in err.fix


def test_accessible_devices_pass(tmp_path: Path) -> None:
    (tmp_path / "dsp").write_bytes(b"")
    dom = _dom(f"<audio id='1' type='oss'><input dev='{tmp_path}/dsp'/>"
               f"<output dev='{tmp_path}/dsp'/></audio>")
    check_audio_devices(dom)  # raises on failure
    assert oss_devices(dom) == [(1, f"{tmp_path}/dsp")]
