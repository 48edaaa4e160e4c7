"""The pure parts of the virt-install corpus generator: the managed='no' variant and the
boot phases of a --print-xml output."""

from __future__ import annotations

from pathlib import Path

from tests.corpus.virtinstall import CONFIGS, _phases, ethernet_unmanaged

DOC = """<domain type="qemu">
  <name>vm</name>
  <devices>
    <interface type="ethernet">
      <mac address="52:54:00:85:c7:40"/>
      <target dev="tvtap0"/>
    </interface>
    <interface type="user"/>
    <disk type="file" device="cdrom">
      <source file="HOME/cache/virt-manager/boot/virtinst-abc-cloudinit.iso"/>
    </disk>
  </devices>
</domain>
"""


def test_unmanaged_variant_marks_only_ethernet_targets() -> None:
    out = ethernet_unmanaged(DOC)
    assert out is not None
    assert '<target dev="tvtap0" managed="no"/>' in out
    assert out.count("managed=") == 1
    assert ethernet_unmanaged(DOC.replace('type="ethernet"', 'type="bridge"')) is None


def test_cloud_init_output_keeps_first_boot_and_final_document(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = DOC.replace("HOME", str(home))
    final = DOC.replace("HOME/cache/virt-manager/boot/virtinst-abc-cloudinit.iso", "")
    phases = _phases("vm", first + final, home, tmp_path)
    assert [name for name, _ in phases] == ["vm-firstboot", "vm"]
    seed = tmp_path / "vm-cloudinit.iso"
    assert seed.exists() and str(seed) in phases[0][1] and str(home) not in phases[0][1]
    assert _phases("vm", final, home, tmp_path) == [("vm", final)]


def test_at_least_twenty_configurations_with_unique_names() -> None:
    names = [c.name for c in CONFIGS]
    assert len(names) >= 20 and len(set(names)) == len(names)
