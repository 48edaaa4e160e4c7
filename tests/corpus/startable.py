"""Make a domain document startable on the test host, changing only what this host lacks.

Real-world documents name disk images, kernels, bridges and sockets of the machine they
were written on. `make_startable` rewrites exactly those, and nothing QEMU should judge:

* `<name>` becomes the given one and `<uuid>` is dropped (many documents are started at once);
* `<domain type='kvm'>` becomes `type='qemu'` (the test hosts have no KVM), and its
  `<cpu mode='host-passthrough'>` `mode='maximum'` (there is no host CPU to pass through),
  its `<iommu><driver eim='on'>` loses `eim` and a `<vcpu>` above 255 becomes 255 (QEMU
  allows extended interrupt mode, which more than 255 x86 vCPUs need, only with KVM);
* `<numatune>` nodesets and memory devices' `<source><nodemask>` naming host NUMA nodes
  this host does not let the user allocate from become the allowed nodes
  (`Mems_allowed_list`; the document's host had more nodes);
* `<memory>`/`<currentMemory>` shrink to 128 MiB unless NUMA cells, `<maxMemory>` or memory
  devices tie them to other sizes;
* every disk or cdrom/floppy with a source becomes a placeholder image of its format in
  the scratch directory (`qemu-img create`); `type='block'` becomes `type='file'`
  (there is no block device to give it);
* an nvdimm's `<source><path>` moves into the scratch directory (QEMU creates the file);
* an nbd network disk's server becomes a `qemu-nbd` of a placeholder image (an
  `NbdExport` the caller serves): a unix socket moves into the scratch directory, a TCP
  host becomes loopback of the test's own namespace (127.0.0.1, or ::1 kept) on a port
  of its own per disk, the export name is kept;
* `<kernel>`/`<initrd>` that do not exist here become the test guest's kernel and initrd;
  an `<emulator>` that does not exist becomes this host's QEMU for the arch;
* interfaces of type ethernet, bridge, direct and network become `type='ethernet'` on a
  tap precreated for the test user (`<target dev managed='no'/>`, multi_queue when
  `<driver queues>` > 1, the guest's `<mtu>` when above 1500), losing only `<source>`,
  `<script>`, `<downscript>`, `<backend>`;
  `type='user'` stays; the socket types (udp, server, client) keep their ports but their
  addresses become 127.0.0.1 (the addresses of the document's machine are not in the
  worker's namespace; a server without an address listens on every address of that
  namespace, which has only `lo`); an mcast group stays (the worker namespaces route
  224.0.0.0/4 to `lo`, tests.corpus.start); other types are left as they are. QEMU runs in
  the worker's private namespace: no socket interface reaches beyond it;
* chardev and `<log>` files, unix sockets and pipes move into the scratch directory (a
  unix or tcp client socket becomes a listening one: there is no peer to connect to; a
  pipe's FIFO is made); tcp/udp chardevs use 127.0.0.1 instead of another machine's
  address; a `type='dev'` serial device becomes /dev/null (the test user may open no
  serial port of this host);
* VNC/SPICE `socket=` paths move into the scratch directory, listen addresses of another
  machine become 127.0.0.1;
* `<nvram>` moves into the scratch directory (tapvirt must create it, as libvirt does); an
  OVMF `<loader>` that does not exist here becomes Debian's OVMF_CODE(.secboot).fd, with
  OVMF_VARS.fd as the `<nvram>` template (libvirt's tests name it in qemu.conf); a
  writable pflash BIOS of another machine becomes a blank flash image of the user's;
* empty placeholder kernels (virt-install's) become the test guest's too;
* `<audio type='oss'>` plays into /dev/null (QEMU's OSS backend needs its /dev/dsp);
* `<driver name='vhost'>` on interfaces goes (vhost-net needs KVM; no KVM here).

Pure: returns the new text and what the caller must create (taps, images).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

_TAP_TYPES = ("ethernet", "bridge", "direct", "network")
_SOCKET_TYPES = ("udp", "server", "client")  # mcast keeps its group
_DROP_FROM_TAP = ("source", "script", "downscript", "backend", "target")
_CHARDEVS = ("serial", "parallel", "console", "channel")
_QEMU = {"i686": "/usr/bin/qemu-system-i386", "x86_64": "/usr/bin/qemu-system-x86_64"}
SMALL_MIB = 128
_OVMF = "/usr/share/OVMF/OVMF_CODE.fd"  # Debian's ovmf (2 MiB; its vars: OVMF_VARS.fd)
_OVMF_SECURE = "/usr/share/OVMF/OVMF_CODE.secboot.fd"
_OVMF_VARS = "/usr/share/OVMF/OVMF_VARS.fd"


@dataclass(frozen=True)
class Tap:
    name: str
    multi_queue: bool
    mtu: int | None = None  # a guest <mtu> above the tap's default 1500 needs it


@dataclass(frozen=True)
class Image:
    path: Path
    fmt: str  # qemu-img format (raw, qcow2, ...)
    size: str = "64M"


@dataclass(frozen=True)
class NbdExport:
    """A qemu-nbd to run (in the guest's network namespace) before the guest starts."""

    image: Image
    export: str | None  # -x NAME; None: the default (empty) export name
    socket: Path | None = None  # -k PATH, or TCP on host:port
    host: str | None = None
    port: int | None = None

    def argv(self, pid_file: Path) -> list[str]:
        where = (["-k", str(self.socket)] if self.socket is not None
                 else ["-b", str(self.host), "-p", str(self.port)])
        name = ["-x", self.export] if self.export is not None else []
        return ["qemu-nbd", "--fork", "--persistent", "--pid-file", str(pid_file),
                "-f", "raw", *name, *where, str(self.image.path)]


NBD_BASE_PORT = 10810  # + the disk's position: one qemu-nbd per disk, per namespace


@dataclass
class Plan:
    xml: str
    taps: list[Tap] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    fifos: list[Path] = field(default_factory=list)  # FIFOs of pipe chardevs (mkfifo)
    nbd: list[NbdExport] = field(default_factory=list)


def _exists(path: str | None) -> bool:
    return bool(path) and os.path.exists(str(path))


def _has_content(path: str | None) -> bool:
    """A real file (virt-install's corpus names empty placeholders for kernels)."""
    return _exists(path) and os.path.getsize(str(path)) > 0


def _set_small_memory(root: etree._Element) -> None:
    if (root.find("cpu/numa/cell") is not None or root.find("maxMemory") is not None
            or root.find("devices/memory") is not None):
        return
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None:
            el.text = str(SMALL_MIB)
            el.set("unit", "MiB")


def _host_numa_nodes(root: etree._Element) -> None:
    from tapvirt.conf.domain.numa import format_bitmap
    from tapvirt.qemu.hostnuma import allowed_nodes

    have = format_bitmap(tuple(sorted(allowed_nodes())))
    for el in root.iterfind("devices/memory/source/nodemask"):
        el.text = have
    nt = root.find("numatune")
    if nt is None:
        return
    for el in nt:
        if el.get("nodeset") is not None:
            el.set("nodeset", have)


def _disks(root: etree._Element, scratch: Path, name: str, plan: Plan) -> None:
    for n, disk in enumerate(root.iterfind("devices/disk")):
        source = disk.find("source")
        kind = disk.get("type", "file")
        if source is not None and kind == "network" and source.get("protocol") == "nbd":
            _nbd_disk(disk, source, scratch / f"{name}-disk{n}", n, plan)
            continue
        if source is None or kind not in ("file", "block"):
            continue
        attr = "file" if kind == "file" else "dev"
        if not source.get(attr):
            continue
        driver = disk.find("driver")
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        device = disk.get("device", "disk")
        ext = "iso" if device == "cdrom" else "img"
        path = scratch / f"{name}-disk{n}.{ext}"
        if kind == "block":
            disk.set("type", "file")
            del source.attrib["dev"]
        source.set("file", str(path))
        size = "1440K" if device == "floppy" else "64M"
        plan.images.append(Image(path, fmt, size))


def _nbd_disk(disk: etree._Element, source: etree._Element, stem: Path, n: int,
              plan: Plan) -> None:
    driver = disk.find("driver")
    fmt = (driver.get("type") if driver is not None else None) or "raw"
    image = Image(stem.with_suffix(".img"), fmt)
    plan.images.append(image)
    host = source.find("host")
    if host is None:
        return
    if host.get("transport") == "unix":
        sock = stem.with_suffix(".nbd")
        host.set("socket", str(sock))
        plan.nbd.append(NbdExport(image, source.get("name"), socket=sock))
        return
    address = "::1" if host.get("name") == "::1" else "127.0.0.1"
    host.set("name", address)
    host.set("port", str(NBD_BASE_PORT + n))
    plan.nbd.append(NbdExport(image, source.get("name"), host=address,
                              port=NBD_BASE_PORT + n))


def _interfaces(root: etree._Element, tap_prefix: str, plan: Plan) -> None:
    for n, iface in enumerate(root.iterfind("devices/interface")):
        if iface.get("type") in _SOCKET_TYPES:
            for el in [*iface.findall("source"), *iface.findall("source/local")]:
                if el.get("address") is not None:
                    el.set("address", "127.0.0.1")
            continue
        if iface.get("type") not in _TAP_TYPES:
            continue
        iface.set("type", "ethernet")
        for tag in _DROP_FROM_TAP:
            for el in iface.findall(tag):
                iface.remove(el)
        driver = iface.find("driver")
        queues = int(driver.get("queues", "1")) if driver is not None else 1
        mtu_el = iface.find("mtu")
        mtu = int(mtu_el.get("size", "0")) if mtu_el is not None else 0
        tap = Tap(f"{tap_prefix}{n}"[:15], queues > 1, mtu if mtu > 1500 else None)
        target = etree.Element("target", dev=tap.name, managed="no")
        mac = iface.find("mac")
        # keep libvirt's child order: target right after mac/source
        iface.insert(list(iface).index(mac) + 1 if mac is not None else 0, target)
        plan.taps.append(tap)


def _chardevs(root: etree._Element, scratch: Path, name: str, plan: Plan) -> None:
    moved: dict[str, str] = {}  # one new path per old one: <console> may repeat <serial>'s
    for tag in _CHARDEVS:
        for dev in root.iterfind(f"devices/{tag}"):
            kind = dev.get("type")
            for el in [*dev.findall("source"), *dev.findall("log")]:
                if kind in ("tcp", "udp") and el.tag == "source":
                    _network_chardev(kind, el)
                    continue
                attr = "file" if el.tag == "log" else "path"
                old = el.get(attr)
                if not old:
                    continue
                if kind == "dev" and el.tag == "source":
                    el.set(attr, "/dev/null")  # no serial device the test user may open
                    continue
                suffix = {"unix": "sock", "pipe": "fifo"}.get(kind or "", "log")
                if el.tag == "log":
                    suffix = "log"
                new = moved.setdefault(old, str(scratch / f"{name}-c{len(moved)}.{suffix}"))
                el.set(attr, new)
                if kind == "pipe" and el.tag == "source" and Path(new) not in plan.fifos:
                    plan.fifos.append(Path(new))
                if kind == "unix" and el.tag == "source" and el.get("mode") != "bind":
                    el.set("mode", "bind")


def _network_chardev(kind: str, source: etree._Element) -> None:
    """tcp/udp chardevs: on loopback (the worker's namespace has no other address), and a
    tcp client becomes a listener (there is no peer to connect to)."""
    host = source.get("host")
    if host not in (None, "", "127.0.0.1", "::1", "localhost"):
        source.set("host", "127.0.0.1")
    if kind == "tcp" and source.get("mode") != "bind":
        source.set("mode", "bind")


def _oss_devices(root: etree._Element) -> None:
    """QEMU's OSS backend does not start without its /dev/dsp: /dev/null stands in for
    the sound devices this host lacks (QEMU opens it, its ioctls fail, the guest plays
    nowhere, as on a host without a card)."""
    for audio in root.iterfind("devices/audio[@type='oss']"):
        for tag in ("input", "output"):
            el = audio.find(tag)
            if el is None:
                el = etree.SubElement(audio, tag)
            el.set("dev", "/dev/null")


def _graphics_sockets(root: etree._Element, scratch: Path, name: str) -> None:
    """VNC/SPICE unix sockets named in the document (another user's file may be there)."""
    for n, el in enumerate([*root.iterfind("devices/graphics"),
                            *root.iterfind("devices/graphics/listen")]):
        if el.get("socket"):
            el.set("socket", str(scratch / f"{name}-g{n}.sock"))
        # another machine's address (libvirt's tests listen on 2001:1:2:3:...): loopback
        if el.get("listen") not in (None, "127.0.0.1", "::1", "0.0.0.0", "::"):
            el.set("listen", "127.0.0.1")
        if el.tag == "listen" and el.get("address") not in (None, "127.0.0.1", "::1",
                                                             "0.0.0.0", "::"):
            el.set("address", "127.0.0.1")


def make_startable(text: str, *, name: str, scratch: Path, tap_prefix: str,
                   kernel: str, initrd: str) -> Plan:
    parser = etree.XMLParser(resolve_entities=False, remove_comments=False)
    root = etree.fromstring(text.encode(), parser)
    plan = Plan("")
    name_el = root.find("name")
    if name_el is not None:
        name_el.text = name
    uuid = root.find("uuid")
    if uuid is not None:
        root.remove(uuid)
    if root.get("type") == "kvm":  # no KVM on the test hosts: TCG
        root.set("type", "qemu")
        cpu = root.find("cpu")
        if cpu is not None and cpu.get("mode") == "host-passthrough":
            cpu.set("mode", "maximum")  # TCG's counterpart: all QEMU's emulator can do
        for driver in root.iterfind("devices/iommu/driver"):
            if "eim" in driver.attrib:  # "eim=on requires accel=kvm" (QEMU 7.2)
                del driver.attrib["eim"]
        vcpu = root.find("vcpu")
        if (vcpu is not None and root.find("cpu/topology") is None
                and (vcpu.text or "").strip().isdigit() and int(vcpu.text or 0) > 255):
            vcpu.text = "255"  # no x2APIC under TCG: "requires kernel irqchip and X2APIC"
    _set_small_memory(root)
    _host_numa_nodes(root)
    os_el = root.find("os")
    if os_el is not None:
        for tag, replacement in (("kernel", kernel), ("initrd", initrd)):
            el = os_el.find(tag)
            if el is not None and not _has_content(el.text):
                el.text = replacement
        loader = os_el.find("loader")
        if (loader is not None and loader.text and not _exists(loader.text)
                and "OVMF" in loader.text):
            # another distribution's (or a made-up) path of the same firmware
            secure = "secboot" in loader.text
            loader.text = _OVMF_SECURE if secure else _OVMF
        if (loader is not None and loader.text and not _exists(loader.text)
                and loader.get("type") == "pflash" and loader.get("readonly") != "yes"
                and "OVMF" not in loader.text):
            # a writable BIOS flash of another machine (libvirt's firmware-manual-bios-rw):
            # a flash image of the user's own (the guest only has to start paused)
            flash = scratch / f"{name}-bios.fd"
            plan.images.append(Image(flash, "raw", "256K"))
            loader.text = str(flash)
        nvram = os_el.find("nvram")
        if nvram is not None and nvram.text:
            nvram.text = str(scratch / f"{name}_VARS.fd")
        if (loader is not None and loader.text in (_OVMF, _OVMF_SECURE)
                and loader.get("type") == "pflash" and loader.get("readonly") == "yes"
                and loader.get("stateless") != "yes"):  # a stateless one has no NVRAM
            # libvirt's tests name the template in qemu.conf (nvram = [...]); tapvirt only
            # finds the 4 MiB ones through the descriptors: name the 2 MiB one's here
            if nvram is None:
                nvram = etree.SubElement(os_el, "nvram")
                nvram.text = str(scratch / f"{name}_VARS.fd")
            if nvram.get("template") is None:
                nvram.set("template", _OVMF_VARS)
    arch_el = root.find("os/type")
    arch = arch_el.get("arch", "x86_64") if arch_el is not None else "x86_64"
    emulator = root.find("devices/emulator")
    if emulator is not None and not _exists(emulator.text) and arch in _QEMU:
        emulator.text = _QEMU[arch]
    for driver in root.iterfind("devices/interface/driver"):
        if driver.get("name") == "vhost":  # needs KVM, which the test hosts do not have
            del driver.attrib["name"]
    for n, path in enumerate(root.iterfind("devices/memory/source/path")):
        path.text = str(scratch / f"{name}-nvdimm{n}.img")
    _disks(root, scratch, name, plan)
    _interfaces(root, tap_prefix, plan)
    _chardevs(root, scratch, name, plan)
    _graphics_sockets(root, scratch, name)
    _oss_devices(root)
    plan.xml = etree.tostring(root, encoding="unicode") + "\n"
    return plan
