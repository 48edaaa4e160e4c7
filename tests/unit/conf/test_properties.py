"""Property tests.

* random valid models survive format -> parse unchanged, and their XML is valid for
  libvirt's own schema (xmllint with /usr/share/libvirt/schemas/domain.rng, which is what
  virt-xml-validate runs);
* FUZZ_EXAMPLES (10,000 by default) generated and mutated documents never raise anything
  but TapvirtError; every one that is accepted formats to a fixed point and is valid for
  libvirt's schema too. The bases are the golden corpora plus real-world-shaped documents
  (tests/data/fuzz: what virt-install, libvirt's tests and refusals look like); one
  mutation grafts an element of those (a <clock>, a <controller>, a <hostdev>...) into
  another document, so every element family is reached behind documents that otherwise
  parse.

Drawing a rich random model costs ~0.3 s, so the fuzz does not draw one per document:
FUZZ_GENERATED (100 by default, TAPVIRT_FUZZ_GENERATED) random valid models are drawn
once, formatted, and join the bases that the 10,000 mutated documents start from.

TAPVIRT_FUZZ_EXAMPLES scales the fuzz run (e.g. 100000 for a long soak); the documents
are the same on every run unless TAPVIRT_FUZZ_RANDOM=1 (explore: do that in soaks);
TAPVIRT_FUZZ_CORPUS=DIR adds DIR/*.xml as bases and donors (e.g. the virt-install outputs
of tests/corpus/virtinstall.py).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from lxml import etree

from tapvirt.conf.format import format_domain
from tapvirt.conf.model import Domain
from tapvirt.conf.parse import parse_document, parse_domain
from tapvirt.errors import TapvirtError
from tests.unit.conf.corpus import DATA, INVALID, XML2XML, in_libvirt_order
from tests.unit.conf.strategies import domains

FUZZ_EXAMPLES = int(os.environ.get("TAPVIRT_FUZZ_EXAMPLES", "10000"))
FUZZ_GENERATED = int(os.environ.get("TAPVIRT_FUZZ_GENERATED", "100"))
# The suite's run is reproducible (the same documents every time, so a red CI run is a
# regression, not luck); TAPVIRT_FUZZ_RANDOM=1 explores new ones (a soak).
FUZZ_RANDOM = os.environ.get("TAPVIRT_FUZZ_RANDOM") == "1"
LIBVIRT_RNG = Path("/usr/share/libvirt/schemas/domain.rng")
XMLLINT = shutil.which("xmllint")


def libvirt_rejects(docs: list[str], tmp: Path) -> list[str]:
    """The messages of libvirt's schema for those of `docs` it rejects (one xmllint run)."""
    assert XMLLINT is not None
    files = []
    for i, text in enumerate(docs):
        f = tmp / f"doc{i:05d}.xml"
        f.write_text(text, encoding="utf-8")
        files.append(str(f))
    bad: list[str] = []
    for start in range(0, len(files), 500):  # keep argv short
        proc = subprocess.run(
            [XMLLINT, "--noout", "--relaxng", str(LIBVIRT_RNG), *files[start:start + 500]],
            capture_output=True, text=True, check=False,
        )
        for ln in proc.stderr.splitlines():
            if ln.endswith(" fails to validate"):
                name = ln[: -len(" fails to validate")]
                why = [x for x in proc.stderr.splitlines() if x.startswith(name + ":")]
                bad.append(f"{why}\n{Path(name).read_text(encoding='utf-8')}")
        if proc.returncode not in (0, 3):
            bad.append(f"xmllint exit {proc.returncode}: {proc.stderr[-500:]}")
    return bad


needs_libvirt_schema = pytest.mark.skipif(
    XMLLINT is None or not LIBVIRT_RNG.exists(),
    reason="needs xmllint (libxml2-utils) and libvirt's schemas (libvirt-clients)",
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains())
def test_valid_models_survive_format_and_parse(dom: Domain) -> None:
    text = format_domain(dom)
    again = parse_domain(text, rand=random.Random(0))
    assert again == dom
    assert format_domain(again) == text


@needs_libvirt_schema
def test_generated_documents_are_valid_for_libvirt(tmp_path: Path) -> None:
    docs: list[str] = []

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(domains())
    def collect(dom: Domain) -> None:
        docs.append(format_domain(dom))

    collect()
    assert len(docs) >= 100
    assert libvirt_rejects(docs, tmp_path) == []


# --- fuzzing ----------------------------------------------------------------------------

_VALUES = [
    "", " ", "0", "1", "2", "-1", "-5", "+5", " 5", "0x10", "1e3", "67", "68", "1500", "65521",
    "65522", "256", "257", "4294967296", "99999999999999999999999999", "yes", "no", "maybe",
    "virtio", "VirtIO", "e1000", "e1000e", "rtl8139", "pcnet", "vnet0", "macvtap1", "macvlan2",
    "mytap0", "averyveryverylongname", "a/b", ".", "52:54:00:11:22:33", "52:54:00:AB:cd:EF",
    "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "52:54:00:11:22", "/abs/path", "relative/path",
    "ua-x", "ua-", "net0", "net1", "virtio-disk0", "hvm", "xen", "x86_64", "z80", "KiB", "GiB",
    "b", "bytes", "KB", "tib", "pib", "bridge", "direct", "ethernet", "user", "network", "vepa",
    "passthrough", "up", "down", "qemu", "vhost", "kvm", "raw", "qcow2", "disk", "cdrom", "vda",
    "sda", "hda", "vdaa", "sata", "scsi", "pty", "file", "unix", "null", "tcp", "bind",
    "connect", "serial", "static", "destroy", "restart", "preserve", "rename-restart", "hd",
    "network", "hostdev", "vdpa", "pci", "usb", "scsi", "mdev", "spice", "vnc", "q35",
    "pc-q35-7.2", "pc-i440fx-7.2", "qemu-xhci", "piix3-uhci", "pcie-root", "pcie-root-port",
    "pci-root", "virtio-scsi", "virtio-serial", "ide", "fdc", "none", "utc", "localtime",
    "variable", "catchup", "delay", "merge", "host-passthrough", "host-model", "maximum",
    "custom", "on", "off", "spicevmc", "sev", "efi", "bios", "pflash", "rom", "qxl", "cirrus",
    "vga", "bochs", "ich9", "ich6", "tpm-crb", "tpm-tis", "emulator", "passthrough", "tablet",
    "mouse", "keyboard", "ps2", "i6300esb", "isa", "openvswitch", "802.1Qbh",
    "clean-traffic", "0x0000", "0x1f", "0x7", "0-3", "1,3-5", "^2", "-1", "5900",
    "org.qemu.guest_agent.0", "com.redhat.spice.0", "/dev/urandom", "random", "egd",
    "a" * 100, "\u00e9t\u00e9", "\u202e", "x\ny", "&amp;", "<", "4dea22b3-1d52-d8f3",
    "4DEA22B31D52D8F32516782E98AB3FA0", "9" * 5000, "/", "/a\rb", "/a\tb",
]
_TAGS = [
    "domain", "name", "uuid", "title", "description", "memory", "currentMemory", "vcpu", "os",
    "type", "kernel", "initrd", "cmdline", "boot", "features", "acpi", "apic", "on_poweroff",
    "on_reboot", "on_crash", "devices", "emulator", "disk", "driver", "source", "target",
    "readonly", "alias", "interface", "mac", "model", "mtu", "link", "script", "backend",
    "serial", "console", "address", "metadata", "bandwidth", "ip",
    # the elements of issue 9 (real-world documents)
    "clock", "timer", "cpu", "topology", "feature", "pm", "suspend-to-mem", "controller",
    "memballoon", "stats", "input", "graphics", "listen", "image", "video", "channel", "rng",
    "sound", "audio", "redirdev", "watchdog", "panic", "tpm", "vsock", "cid", "hostdev",
    "filterref", "vlan", "tag", "virtualport", "launchSecurity", "seclabel", "numatune",
    "memoryBacking", "hugepages", "loader", "nvram", "smbios", "sysinfo", "entry", "iothreads",
    "cputune", "resource", "partition", "rom", "tune", "sndbuf", "coalesce", "hyperv", "kvm",
    "vmport", "smm", "pae", "ioapic", "bootmenu", "route", "host", "guest", "vendor",
    "product",
]
_ATTRS = [
    "type", "dev", "managed", "address", "bridge", "mode", "name", "queues", "size", "state",
    "order", "path", "tap", "arch", "machine", "unit", "device", "bus", "file", "port",
    "placement", "current", "vhost", "{urn:x}foo",
    "model", "index", "ports", "offset", "tickpolicy", "present", "enabled", "autoport",
    "listen", "bar", "filter", "id", "policy", "slot", "domain", "function", "controller",
    "target", "secure", "readonly", "cpuset", "firmware", "match", "check", "fallback",
    "discard", "cache", "io", "detect_zeroes", "period", "action", "network", "cores",
    "sockets", "threads", "vram", "heads", "tlsPort", "relabel", "nodeset",
]
_RAW = ["<", ">", "&", "'", '"', "]]>", "&#0;", "&#x1;", "<!DOCTYPE x>", "\x00", "\x07",
        "<a>", "</devices>", "\ufeff", "\U0001f600", "&lt;", "<![CDATA[x]]>", "<?pi x?>"]


def _real_world_shaped() -> list[Path]:
    paths = sorted((DATA / "fuzz").glob("*.xml"))
    extra = os.environ.get("TAPVIRT_FUZZ_CORPUS")
    if extra:
        paths += sorted(Path(extra).glob("*.xml"))
    return paths


def _bases() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(XML2XML.glob("*.xml"))]
    texts += [p.read_text(encoding="utf-8") for p in sorted(INVALID.glob("*.xml"))]
    texts += [p.read_text(encoding="utf-8") for p in _real_world_shaped()]
    return texts


_BASES = _bases()
_PARSER = etree.XMLParser(remove_comments=True, remove_pis=True, resolve_entities=False)


def _donors() -> list[tuple[str, etree._Element]]:
    """(parent path, element) for every child of <domain>, <os>, <features>, <devices>
    and <interface> in the real-world-shaped documents: what the graft mutation inserts."""
    out: list[tuple[str, etree._Element]] = []
    for path in _real_world_shaped():
        root = etree.parse(str(path), _PARSER).getroot()
        for parent in ("", "os", "features", "devices", "devices/interface"):
            holders = [root] if not parent else root.findall(parent)
            out += [(parent, el) for h in holders for el in h if isinstance(el.tag, str)]
    return out


_DONORS = _donors()
_MUTATION = st.tuples(
    st.integers(0, 8), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000)
)


def _mutate(root: etree._Element, op: int, a: int, b: int, c: int) -> str | None:
    """Apply one tree mutation; return raw text instead when the op edits characters."""
    elems = [e for e in root.iter() if isinstance(e.tag, str)]
    el = elems[a % len(elems)]
    parent = el.getparent()
    if op == 0 and parent is not None:  # drop an element
        parent.remove(el)
    elif op == 1 and parent is not None:  # duplicate it
        from copy import deepcopy

        parent.append(deepcopy(el))
    elif op == 2:  # move it under another element
        target = elems[b % len(elems)]
        if parent is not None and target is not el and el not in list(target.iterancestors()):
            parent.remove(el)
            target.append(el)
    elif op == 3:  # rename it
        el.tag = _TAGS[b % len(_TAGS)]
    elif op == 4:  # set an attribute
        el.set(_ATTRS[b % len(_ATTRS)], _VALUES[c % len(_VALUES)])
    elif op == 5:  # delete an attribute
        keys = list(el.attrib)
        if keys:
            del el.attrib[keys[b % len(keys)]]
    elif op == 6:  # replace the text
        el.text = _VALUES[b % len(_VALUES)]
    elif op == 8:  # graft a real-world element where it belongs (or under this element)
        from copy import deepcopy

        where, donor = _DONORS[b % len(_DONORS)]
        holder = root if not where else root.find(where)
        (holder if holder is not None and c % 4 else el).append(deepcopy(donor))
    else:  # edit characters of the serialised document
        text = etree.tostring(root, encoding="unicode")
        pos = b % (len(text) + 1)
        cut = c % 4
        return text[:pos] + _RAW[c % len(_RAW)] + text[pos + cut:]
    return None


def _generated_documents(count: int) -> list[str]:
    """`count` random valid models, formatted (drawn once for the whole fuzz run)."""
    out: list[str] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              derandomize=not FUZZ_RANDOM,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(domains())
    def draw(domain: Domain) -> None:
        out.append(format_domain(domain))

    draw()
    return out


@needs_libvirt_schema
def test_fuzzed_documents_raise_only_tapvirt_errors(tmp_path: Path) -> None:
    bases = _BASES + _generated_documents(FUZZ_GENERATED)
    assert len(bases) > len(_BASES)
    accepted: list[str] = []
    counts = {"examples": 0, "accepted": 0}

    @settings(
        max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=not FUZZ_RANDOM,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.integers(0, len(bases) - 1),
        st.lists(_MUTATION, min_size=1, max_size=4),
    )
    def fuzz(base: int, mutations: list[tuple[int, int, int, int]]) -> None:
        text = bases[base]
        for op, a, b, c in mutations:
            try:
                root = etree.fromstring(text.encode("utf-8"), _PARSER)
            except (etree.XMLSyntaxError, ValueError):
                break  # already broken by a character edit: keep it
            raw = _mutate(root, op, a, b, c)
            text = raw if raw is not None else etree.tostring(root, encoding="unicode")
        counts["examples"] += 1
        try:
            parsed = parse_document(text, source="fuzz", rand=random.Random(0))
        except TapvirtError as err:
            assert err.code.code and err.fix and err.subject
            # the RelaxNG safety net never has to catch what the precise checks missed
            assert err.code.code != "schema-invalid", err.render()
            return
        counts["accepted"] += 1
        canonical = format_domain(parsed.domain)
        assert parse_domain(canonical) == parsed.domain
        assert format_domain(parse_domain(canonical)) == canonical
        accepted.append(in_libvirt_order(text))

    fuzz()
    print(f"fuzz: {counts['examples']} documents, {counts['accepted']} accepted")
    assert counts["examples"] >= FUZZ_EXAMPLES
    assert counts["accepted"] > 0
    # every document tapvirt accepted is also valid for libvirt
    rejected = libvirt_rejects(accepted, tmp_path)
    print("\n\n".join(rejected))
    assert rejected == []
