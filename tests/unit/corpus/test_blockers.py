"""tests.corpus.blockers: every refusal of a document, with line numbers that stay true."""

from __future__ import annotations

from pathlib import Path

from tests.corpus.blockers import blockers

DOC = """<domain type='qemu'>
  <name>guest</name>
  <memory unit='MiB'>64</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <tv-unknown-a>
    <child/>
  </tv-unknown-a>
  <devices>
    <tv-unknown-b/>
    <hostdev mode='subsystem' type='usb'>
      <source><vendor id='0x1234'/><product id='0xbeef'/></source>
    </hostdev>
    <serial type='pty' tv-unknown-c='1'/>
  </devices>
</domain>
"""


def test_every_refusal_is_found_until_the_document_is_accepted(tmp_path: Path) -> None:
    doc = tmp_path / "d.xml"
    doc.write_text(DOC)
    found = blockers(doc)
    assert found.complete
    assert found.keys == (
        # the named refusals come first (checked before anything else), then in order
        "hostdev-unprivileged /domain/devices/hostdev/@type",
        "unsupported-element /domain/tv-unknown-a",
        "unsupported-element /domain/devices/tv-unknown-b",
        "unsupported-attribute /domain/devices/serial/@tv-unknown-c",
    )


def test_a_document_that_parses_has_no_blockers(tmp_path: Path) -> None:
    doc = tmp_path / "d.xml"
    doc.write_text(DOC.replace("tv-unknown-a", "description").replace("<child/>", "")
                   .replace("<tv-unknown-b/>", "").replace(" tv-unknown-c='1'", "")
                   .split("<hostdev")[0] + "</devices>\n</domain>\n")
    assert blockers(doc).keys == () and blockers(doc).complete
