"""<numatune> pre-flight: nodes outside the user's Mems_allowed_list are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapvirt.conf.parse import parse_domain
from tapvirt.errors import TapvirtError
from tapvirt.qemu.hostnuma import allowed_nodes, check_numatune

XML = """<domain type='qemu'><name>g</name><memory unit='MiB'>64</memory>
<numatune><memory mode='strict' nodeset='{}'/></numatune>
<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"""


def test_allowed_nodes_reads_mems_allowed_list(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nMems_allowed_list:\t0-2,5\n")
    assert allowed_nodes(str(status)) == {0, 1, 2, 5}


def test_this_hosts_nodes_are_allowed() -> None:
    nodes = allowed_nodes()
    assert nodes
    check_numatune(parse_domain(XML.format(",".join(map(str, sorted(nodes))))))


DIMM = """<domain type='qemu'><name>g</name>
<maxMemory slots='2' unit='GiB'>2</maxMemory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>
<cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/></numa></cpu>
<devices><memory model='dimm'><source><nodemask>{}</nodemask></source>
<target><size unit='MiB'>128</size><node>0</node></target></memory></devices></domain>"""


@pytest.mark.parametrize(("doc", "subject", "fix"), [
    (XML, "<numatune>", "nodeset= within 0"),
    (DIMM, "<memory model='dimm'> dimm0", "<nodemask> within 0"),
])
def test_unavailable_node_is_refused_by_name(doc: str, subject: str, fix: str) -> None:
    with pytest.raises(TapvirtError) as info:
        check_numatune(parse_domain(doc.format("0-3")), allowed={0})
    assert info.value.code.code == "numa-node-unavailable"
    assert subject in info.value.subject
    assert "NUMA node 1 is unavailable" in info.value.message
    assert fix in info.value.fix
    check_numatune(parse_domain(doc.format("0")), allowed={0})
