"""Firmware autoselection from descriptors (libvirt 9.0's rules) and the NVRAM file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tapvirt.conf.parse import parse_domain
from tapvirt.errors import TapvirtError
from tapvirt.qemu import fwdesc
from tapvirt.qemu.argv.firmware import firmware_args, firmware_machine_params, pflash_args

SYSTEM = Path("/usr/share/qemu/firmware")


def _dom(os_inner: str, *, firmware: str = "efi", machine: str = "q35",
         features: str = "", name: str = "g") -> str:
    fw = f" firmware='{firmware}'" if firmware else ""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            f"<os{fw}><type arch='x86_64' machine='{machine}'>hvm</type>{os_inner}</os>"
            f"<features>{features}</features><devices/></domain>")


def _desc(tmp: Path, name: str, code: str, vars_: str, *, machines: list[str],
          features: list[str]) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_text(json.dumps({
        "interface-types": ["uefi"],
        "mapping": {"device": "flash", "executable": {"filename": code, "format": "raw"},
                    "nvram-template": {"filename": vars_, "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": machines}],
        "features": features}))


@pytest.fixture
def descs(tmp_path: Path) -> list[fwdesc.Descriptor]:
    d = tmp_path / "share"
    _desc(d, "40-enrolled.json", "/fw/CODE.ms.fd", "/fw/VARS.ms.fd", machines=["pc-q35-*"],
          features=["enrolled-keys", "requires-smm", "secure-boot"])
    _desc(d, "50-secure.json", "/fw/CODE.secboot.fd", "/fw/VARS.fd", machines=["pc-q35-*"],
          features=["requires-smm", "secure-boot"])
    _desc(d, "60-plain.json", "/fw/CODE.fd", "/fw/VARS.fd",
          machines=["pc-i440fx-*", "pc-q35-*"], features=[])
    return fwdesc.load_descriptors([d])


ENV = {"HOME": "/home/u", "XDG_DATA_HOME": "/home/u/data"}


def _resolve(xml: str, descs: list[fwdesc.Descriptor]) -> tuple[str, str | None, bool]:
    dom = fwdesc.resolve(parse_domain(xml), descriptors=descs, env=ENV)
    ob = dom.os.boot_options
    assert ob.loader is not None and ob.loader.path is not None and ob.nvram is not None
    return ob.loader.path, ob.nvram.template, bool(dom.features.smm)


def test_first_matching_descriptor_wins_and_enables_smm(descs: list[fwdesc.Descriptor]) -> None:
    assert _resolve(_dom(""), descs) == ("/fw/CODE.ms.fd", "/fw/VARS.ms.fd", True)


def test_pc_machine_gets_the_non_smm_firmware(descs: list[fwdesc.Descriptor]) -> None:
    assert _resolve(_dom("", machine="pc"), descs) == ("/fw/CODE.fd", "/fw/VARS.fd", False)
    assert _resolve(_dom("", machine="pc-i440fx-7.2"), descs)[0] == "/fw/CODE.fd"


@pytest.mark.parametrize(("inner", "features", "code"), [
    ("<firmware><feature enabled='no' name='secure-boot'/></firmware>", "", "/fw/CODE.fd"),
    ("<firmware><feature enabled='yes' name='secure-boot'/>"
     "<feature enabled='no' name='enrolled-keys'/></firmware>", "", "/fw/CODE.secboot.fd"),
    ("<firmware><feature enabled='yes' name='enrolled-keys'/></firmware>", "",
     "/fw/CODE.ms.fd"),
    ("<loader secure='yes'/>", "", "/fw/CODE.ms.fd"),
    ("", "<smm state='off'/>", "/fw/CODE.fd"),
])
def test_features_select(inner: str, features: str, code: str,
                         descs: list[fwdesc.Descriptor]) -> None:
    assert _resolve(_dom(inner, features=features), descs)[0] == code


def test_secure_descriptor_sets_loader_secure_and_argv(descs: list[fwdesc.Descriptor]) -> None:
    dom = fwdesc.resolve(parse_domain(_dom("")), descriptors=descs, env=ENV)
    assert firmware_args(dom) == ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    assert firmware_machine_params(dom) == \
        ",pflash0=libvirt-pflash0-format,pflash1=libvirt-pflash1-format"
    argv = pflash_args(dom)
    assert '"filename":"/home/u/data/tapvirt/nvram/g_VARS.fd"' in argv[5]


def test_nvram_path_given_is_kept(descs: list[fwdesc.Descriptor]) -> None:
    dom = fwdesc.resolve(parse_domain(_dom("<nvram>/tmp/mine.fd</nvram>")), descriptors=descs)
    assert dom.os.boot_options.nvram is not None
    assert dom.os.boot_options.nvram.path == "/tmp/mine.fd"


def test_no_match_is_a_named_error(descs: list[fwdesc.Descriptor]) -> None:
    xml = _dom("<firmware><feature enabled='yes' name='secure-boot'/></firmware>",
               machine="pc")
    with pytest.raises(TapvirtError) as info:
        fwdesc.resolve(parse_domain(xml), descriptors=descs, env=ENV)
    assert info.value.code is fwdesc.FIRMWARE_NOT_FOUND
    assert "apt-get install ovmf" in info.value.fix
    with pytest.raises(TapvirtError):
        fwdesc.resolve(parse_domain(_dom("")), descriptors=[], env=ENV)


def test_priority_and_masking(tmp_path: Path) -> None:
    user, share = tmp_path / "user", tmp_path / "share"
    _desc(share, "50-a.json", "/share/A.fd", "/share/V.fd", machines=["pc-q35-*"], features=[])
    _desc(share, "60-b.json", "/share/B.fd", "/share/V.fd", machines=["pc-q35-*"], features=[])
    _desc(user, "60-b.json", "/user/B.fd", "/user/V.fd", machines=["pc-q35-*"], features=[])
    user.joinpath("50-a.json").write_text("")  # masks share's 50-a
    got = fwdesc.load_descriptors([user, share])
    assert [d.executable for d in got] == ["/user/B.fd"]


def test_explicit_readonly_loader_gets_default_nvram_and_template(
        descs: list[fwdesc.Descriptor]) -> None:
    xml = _dom("<loader readonly='yes' type='pflash'>/fw/CODE.fd</loader>", firmware="")
    dom = fwdesc.resolve(parse_domain(xml), descriptors=descs, env=ENV)
    nv = dom.os.boot_options.nvram
    assert nv is not None
    assert (nv.path, nv.template) == ("/home/u/data/tapvirt/nvram/g_VARS.fd", "/fw/VARS.fd")


def test_bios_and_plain_domains_unchanged(descs: list[fwdesc.Descriptor]) -> None:
    for xml in (_dom("", firmware="bios"), _dom("", firmware="")):
        dom = parse_domain(xml)
        assert fwdesc.resolve(dom, descriptors=descs) is dom


def test_prepare_copies_the_template_0600_once(tmp_path: Path) -> None:
    code, tpl = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"c")
    tpl.write_bytes(b"template" * 1000)
    target = tmp_path / "data" / "nvram" / "g_VARS.fd"
    xml = _dom(f"<loader readonly='yes' type='pflash'>{code}</loader>"
               f"<nvram template='{tpl}'>{target}</nvram>", firmware="")
    dom = parse_domain(xml)
    fwdesc.prepare(dom)
    assert target.read_bytes() == tpl.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    ino = target.stat().st_ino
    target.write_bytes(b"guest wrote variables")
    fwdesc.prepare(dom)  # kept across starts
    assert target.read_bytes() == b"guest wrote variables" and target.stat().st_ino == ino
    assert os.listdir(target.parent) == ["g_VARS.fd"]


def test_prepare_missing_firmware_or_template(tmp_path: Path) -> None:
    xml = _dom(f"<loader readonly='yes' type='pflash'>{tmp_path}/nope.fd</loader>"
               f"<nvram>{tmp_path}/v.fd</nvram>", firmware="")
    with pytest.raises(TapvirtError) as info:
        fwdesc.prepare(parse_domain(xml))
    assert info.value.code is fwdesc.FIRMWARE_NOT_FOUND
    code = tmp_path / "CODE.fd"
    code.write_bytes(b"c")
    xml = _dom(f"<loader readonly='yes' type='pflash'>{code}</loader>"
               f"<nvram>{tmp_path}/v.fd</nvram>", firmware="")
    with pytest.raises(TapvirtError) as info:
        fwdesc.prepare(parse_domain(xml))
    assert info.value.code is fwdesc.NVRAM_UNUSABLE


@pytest.mark.skipif(not (SYSTEM / "60-edk2-x86_64.json").exists(), reason="ovmf not installed")
def test_debian_ovmf_descriptors() -> None:
    descs = fwdesc.load_descriptors([SYSTEM])
    dom = parse_domain(_dom(""))
    assert fwdesc.select(dom, descs) is not None
    got = fwdesc.select(dom, descs)
    assert got is not None and got.executable == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    pc = fwdesc.select(parse_domain(_dom("", machine="pc")), descs)
    assert pc is not None and pc.executable == "/usr/share/OVMF/OVMF_CODE_4M.fd"


def test_stateless_loader_picks_a_stateless_descriptor_and_has_no_nvram(
        tmp_path: Path, descs: list[fwdesc.Descriptor]) -> None:
    # libvirt's qemuFirmwareMatchDomain: stateless='yes' wants mode 'stateless', else 'split'
    xml = _dom("<loader stateless='yes'/>")
    with pytest.raises(TapvirtError) as info:
        fwdesc.resolve(parse_domain(xml), descriptors=descs, env=ENV)
    assert info.value.code is fwdesc.FIRMWARE_NOT_FOUND
    d = tmp_path / "stateless"
    d.mkdir()
    (d / "45-stateless.json").write_text(json.dumps({
        "interface-types": ["uefi"],
        "mapping": {"device": "flash", "mode": "stateless",
                    "executable": {"filename": "/fw/OVMF.fd", "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}],
        "features": []}))
    every = fwdesc.load_descriptors([d, tmp_path / "share"])
    dom = fwdesc.resolve(parse_domain(xml), descriptors=every, env=ENV)
    ob = dom.os.boot_options
    assert ob.loader is not None and ob.loader.path == "/fw/OVMF.fd"
    assert ob.loader.stateless and ob.nvram is None
    assert firmware_machine_params(dom) == ",pflash0=libvirt-pflash0-format"
    assert fwdesc.nvram_path(dom, ENV) is None
    # a split (default) loader never takes the stateless descriptor, though it sorts first
    assert _resolve(_dom("", machine="pc"), every)[0] == "/fw/CODE.fd"


def test_manual_stateless_pflash_gets_no_nvram(descs: list[fwdesc.Descriptor]) -> None:
    xml = _dom("<loader readonly='yes' type='pflash' stateless='yes'>/fw/CODE.fd</loader>",
               firmware="")
    dom = parse_domain(xml)
    assert fwdesc.resolve(dom, descriptors=descs, env=ENV) == dom
    assert fwdesc.nvram_path(dom, ENV) is None
    assert "libvirt-pflash1" not in " ".join(pflash_args(dom))
