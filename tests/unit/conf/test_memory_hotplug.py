"""<maxMemory> against QEMU 7.2's guest physical address space: the highest address
tapvirt computes is the one QEMU prints when it refuses to start ("Address space limit
0xffffffffff < 0x... phys-bits too low (40)"), observed with qemu-system-x86_64 7.2 under
TCG for the documents below; the boundary is where QEMU starts refusing."""

from __future__ import annotations

import pytest

from tapvirt.conf.domain.memhotplug import MaxMemory, _physical_reach
from tapvirt.conf.parse import parse_domain
from tapvirt.errors import TapvirtError

LIMIT = (1 << 40) - 1
RAM_KIB = 219136  # libvirt's memory-hotplug.xml: one 214 MiB cell


@pytest.mark.parametrize(("max_kib", "machine", "qemu_says"), [
    (1099511627776, "pc", 0x401047FFFFFFF),  # libvirt's memory-hotplug*.xml, 1 PiB
    (991 << 20, "pc", 0x1FC3FFFFFFF),  # moved to 1 TiB by the AMD HyperTransport hole
    (961 << 20, "q35", 0x1FC3FFFFFFF),
])
def test_highest_address_is_the_one_qemu_reports(max_kib: int, machine: str,
                                                  qemu_says: int) -> None:
    top, _, _ = _physical_reach(MaxMemory(max_kib, 16), RAM_KIB, machine, None)
    assert top == qemu_says


@pytest.mark.parametrize(("machine", "cpu", "largest_gib"), [
    ("pc", None, 990), ("q35", None, 960),  # qemu64 (AMD): below the HyperTransport hole
    ("pc", "Skylake-Client", 1002), ("q35", "Skylake-Client", 972),  # Intel: up to 1 TiB
])
def test_boundary_is_where_qemu_starts_refusing(machine: str, cpu: str | None,
                                                largest_gib: int) -> None:
    def fits(gib: int) -> bool:
        return _physical_reach(MaxMemory(gib << 20, 16), RAM_KIB, machine, cpu)[0] <= LIMIT

    assert fits(largest_gib)
    assert not fits(largest_gib + 1)


DOC = """<domain type='{type}'><name>g</name>
<maxMemory slots='16' unit='KiB'>1099511627776</maxMemory><vcpu>1</vcpu>
<os><type arch='{arch}' machine='pc'>hvm</type></os>
<cpu mode='{mode}'><numa><cell id='0' cpus='0' memory='214' unit='MiB'/></numa></cpu>
<devices>{emulator}</devices></domain>"""


def test_one_pib_is_refused_where_qemu_has_40_bits_and_kept_elsewhere() -> None:
    with pytest.raises(TapvirtError) as info:
        parse_domain(DOC.format(type="qemu", arch="x86_64", mode="maximum", emulator=""))
    assert info.value.code.code == "maxmemory-address-space"
    assert "0x401047fffffff" in info.value.message
    assert "at most 989 GiB" in info.value.fix
    # qemu-system-i386 does not check (libvirt's own memory-hotplug.xml starts there)
    dom = parse_domain(DOC.format(type="qemu", arch="i686", mode="custom", emulator=""))
    assert dom.max_memory == MaxMemory(1099511627776, 16)
    # under KVM host-passthrough takes the host's physical address bits
    dom = parse_domain(DOC.format(type="kvm", arch="x86_64", mode="host-passthrough",
                                  emulator=""))
    assert dom.max_memory is not None
    # an explicit x86_64 emulator of an i686 guest is checked
    with pytest.raises(TapvirtError):
        parse_domain(DOC.format(type="qemu", arch="i686", mode="custom",
                                emulator="<emulator>/usr/bin/qemu-system-x86_64</emulator>"))


def test_discard_on_cells_and_memory_devices_is_a_no_effect_warning() -> None:
    from tapvirt.conf.warnings import domain_warnings

    doc = """<domain type='qemu'><name>g</name>
<maxMemory slots='2' unit='GiB'>2</maxMemory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>
<cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB' discard='{d}'/></numa></cpu>
<devices><memory model='dimm' discard='{d}'><target><size unit='MiB'>128</size>
<node>0</node></target></memory></devices></domain>"""
    warned = domain_warnings(parse_domain(doc.format(d="yes")))
    assert [(w.code.code, w.subject) for w in warned] == [
        ("no-effect", "/domain/cpu/numa/cell[@id='0']/@discard"),
        ("no-effect", "/domain/devices/memory[1]/@discard"),
    ]
    assert domain_warnings(parse_domain(doc.format(d="no"))) == []
