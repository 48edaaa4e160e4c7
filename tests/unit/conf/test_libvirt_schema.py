"""Every document of the corpus that tapvirt accepts is valid for libvirt (virt-xml-validate),
and tapvirt's own RelaxNG subset is in force."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from tapvirt.conf import schema
from tapvirt.conf.parse import parse_domain_file
from tapvirt.errors import TapvirtError
from tests.unit.conf.corpus import XML2XML, in_libvirt_order, seeded

VALIDATE = shutil.which("virt-xml-validate")
ACCEPTED = sorted(XML2XML.glob("*.xml"))  # inputs and their canonical outputs


@pytest.mark.skipif(
    VALIDATE is None or shutil.which("xmllint") is None,
    reason="needs virt-xml-validate (libvirt-clients) and xmllint (libxml2-utils)",
)
@pytest.mark.parametrize("doc", ACCEPTED, ids=lambda p: p.name)
def test_accepted_corpus_documents_are_valid_for_libvirt(doc: Path) -> None:
    parse_domain_file(doc, rand=seeded())  # accepted by tapvirt ...
    assert VALIDATE is not None
    proc = subprocess.run(
        [VALIDATE, str(doc), "domain"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr  # ... and by libvirt's schema


def test_the_subset_grammar_rejects_what_it_does_not_describe() -> None:
    root = etree.fromstring(
        b"<domain type='qemu'>\n<name>x</name>\n<memory>1</memory>\n"
        b"<os><type>hvm</type></os>\n<devices><interface type='user'>"
        b"<bandwidth/></interface></devices></domain>"
    )
    with pytest.raises(TapvirtError) as info:
        schema.check(root, "t.xml")
    assert info.value.code.code == "schema-invalid"
    assert info.value.line == 5


def test_the_subset_grammar_accepts_the_whole_corpus() -> None:
    parser = etree.XMLParser(remove_comments=True)
    for doc in ACCEPTED:
        schema.check(etree.parse(str(doc), parser).getroot(), str(doc))


@pytest.mark.skipif(VALIDATE is None or shutil.which("xmllint") is None,
                    reason="needs virt-xml-validate and xmllint")
def test_any_child_order_is_accepted_as_libvirt_parses_it(tmp_path: Path) -> None:
    """libxml2 (virt-xml-validate) rejects this order although libvirt's grammar allows it
    (nested <interleave>s) and libvirt's parser takes it; tapvirt takes it too."""
    odd = (
        "<domain type='qemu'><os><boot dev='hd'/><cmdline>c</cmdline><type>hvm</type>"
        "<boot dev='cdrom'/></os><name>a</name><currentMemory>512</currentMemory>"
        "<uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid><memory>1024</memory></domain>"
    )
    dom = parse_domain_file(_write(tmp_path / "odd.xml", odd))
    assert dom.os.boot and dom.current_memory_kib == 512

    def validates(text: str, name: str) -> bool:
        assert VALIDATE is not None
        proc = subprocess.run([VALIDATE, str(_write(tmp_path / name, text)), "domain"],
                              capture_output=True, text=True, check=False)
        return proc.returncode == 0

    assert not validates(odd, "as-is.xml")  # the libxml2 limitation, documented
    assert validates(in_libvirt_order(odd), "reordered.xml")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
