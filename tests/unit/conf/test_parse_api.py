"""The parse/format API beyond the corpus: inputs as str or bytes, seeded generation,
the live form for dumpxml of a running guest, and what errors carry."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from tapvirt.conf.format import format_domain
from tapvirt.conf.model import InterfaceType, NicModel, Target
from tapvirt.conf.parse import parse_document, parse_domain, parse_domain_file
from tapvirt.errors import TapvirtError

DOC = """<domain type='qemu'>
  <name>g</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <devices>
    <interface type='ethernet'><target dev='mytap0' managed='no'/></interface>
    <interface type='ethernet'><target dev='vnet3'/><model type='virtio'/></interface>
    <interface type='user'/>
    <disk type='file'><source file='/i.img'/><target dev='vdb'/></disk>
  </devices>
</domain>
"""


def test_generated_uuid_and_macs_come_from_the_given_random_source() -> None:
    a = parse_document(DOC, rand=random.Random(7))
    b = parse_document(DOC, rand=random.Random(7))
    assert a == b
    assert a.uuid_generated and len(a.generated_macs) == 3
    macs = [i.mac for i in a.domain.devices.interfaces]
    assert macs == list(a.generated_macs)
    for mac in macs:
        assert mac.startswith("52:54:00:") and int(mac[:2], 16) & 1 == 0
    c = parse_document(DOC)  # the default source is the system's
    assert c.domain.uuid != a.domain.uuid


def test_defaults_and_stable_aliases() -> None:
    dom = parse_domain(DOC, rand=random.Random(0))
    tap, managed, user = dom.devices.interfaces
    assert tap.model is NicModel.RTL8139 and not tap.model_given  # libvirt's x86 default
    assert tap.target == Target("mytap0", managed=False) and tap.unmanaged
    assert managed.target is None  # vnet3 is a generated-looking managed name: dropped
    assert user.type is InterfaceType.USER and user.queues == 1
    assert [i.alias for i in dom.devices.interfaces] == ["net0", "net1", "net2"]
    assert dom.devices.disks[0].alias == "virtio-disk1"


def test_live_form_shows_aliases_actual_devices_and_id() -> None:
    dom = parse_domain(DOC, rand=random.Random(0))
    live = format_domain(dom, live=True, actual_devs={"net1": "vnet0", "net0": "other"},
                         domain_id=4)
    assert live.startswith("<domain type='qemu' id='4'>")
    assert "<target dev='mytap0' managed='no'/>\n      <alias name='net0'/>" in live
    assert "<target dev='vnet0'/>" in live  # the managed one's real device
    assert "<alias name='net2'/>" in live and "<alias name='virtio-disk1'/>" in live
    persistent = format_domain(dom)
    assert "alias" not in persistent and "vnet0" not in persistent
    # the live form is still a document tapvirt (and libvirt) accept
    assert parse_domain(live.replace(" id='4'", "")).devices == replace(
        dom.devices,
        interfaces=(
            dom.devices.interfaces[0],
            replace(dom.devices.interfaces[1], target=None),  # vnet0: generated again
            dom.devices.interfaces[2],
        ),
    )


def test_the_live_form_of_a_q35_guest_parses_again() -> None:
    """q35's AHCI is 'ide' in the live XML (libvirt's name): hotplug re-reads that XML."""
    dom = parse_domain(DOC.replace("<type>hvm", "<type machine='q35'>hvm"),
                       rand=random.Random(0))
    live = format_domain(dom, live=True)
    assert "<alias name='ide'/>" in live
    assert parse_domain(live).devices.controllers == dom.devices.controllers


def test_managed_generated_names_are_hidden_in_the_persistent_form() -> None:
    dom = parse_domain(DOC, rand=random.Random(0))
    iface = replace(dom.devices.interfaces[1], target=Target("vnet0"))
    dom = replace(dom, devices=replace(dom.devices, interfaces=(iface,)))
    assert "vnet0" not in format_domain(dom)
    kept = replace(iface, target=Target("vnet0", managed=False))
    dom = replace(dom, devices=replace(dom.devices, interfaces=(kept,)))
    assert "<target dev='vnet0' managed='no'/>" in format_domain(dom)


def test_text_input_ignores_its_encoding_declaration() -> None:
    text = "<?xml version='1.0' encoding='ISO-8859-1'?>\n" + DOC.replace(
        "<os>", "<title>caf\u00e9</title><os>"
    )
    assert parse_domain(text).title == "caf\u00e9"


def test_file_input_honours_its_encoding(tmp_path: Path) -> None:
    f = tmp_path / "d.xml"
    f.write_bytes(
        b"<?xml version='1.0' encoding='ISO-8859-1'?>\n"
        + DOC.replace("<os>", "<title>caf\xe9</title><os>").encode("latin-1")
    )
    assert parse_domain_file(f).title == "caf\u00e9"


@pytest.mark.parametrize(
    "text",
    ["", "\ud800", "<domain", "\x00", "<?xml version='1.0' encoding='nope'?><domain/>",
     "<a/><b/>", "<domain type='qemu'>&undefined;</domain>"],
)
def test_garbage_is_a_tapvirt_error(text: str) -> None:
    with pytest.raises(TapvirtError) as info:
        parse_domain(text)
    assert info.value.code.code in ("xml-malformed", "xml-doctype")
    assert info.value.fix


def test_garbage_bytes_are_a_tapvirt_error(tmp_path: Path) -> None:
    f = tmp_path / "bin.xml"
    f.write_bytes(bytes(range(256)))
    with pytest.raises(TapvirtError) as info:
        parse_domain_file(f)
    assert info.value.code.code == "xml-malformed"
    with pytest.raises(TapvirtError) as info:
        parse_domain_file(tmp_path / "missing.xml")
    assert info.value.code.code == "file-unreadable"


def test_errors_name_the_place_the_line_and_the_fix() -> None:
    bad = DOC.replace("managed='no'/>", "managed='nope'/>")
    with pytest.raises(TapvirtError) as info:
        parse_domain(bad, source="vm.xml")
    err = info.value
    assert err.subject == "/domain/devices/interface[1]/target/@managed"
    assert err.line == 6
    assert err.details["source"] == "vm.xml"
    assert err.render().startswith(
        "error[invalid-value]: /domain/devices/interface[1]/target/@managed (line 6): "
        "Invalid value for attribute 'managed' in element 'target': 'nope'."
    )
    assert "fix: use managed='no'" in err.render()


def test_huge_numbers_are_range_errors() -> None:
    digits = "9" * 5000
    with pytest.raises(TapvirtError) as info:
        parse_domain(DOC.replace("<model type='virtio'/>", f"<mtu size='{digits}'/>"))
    assert info.value.code.code == "mtu-out-of-range"
    with pytest.raises(TapvirtError) as info:
        parse_domain(DOC.replace(">64<", f">{digits}<"))
    assert info.value.code.code == "invalid-memory"
