"""Hypothesis strategies: valid `Domain` models (within the supported subset and its rules)
and mutations of XML documents."""

from __future__ import annotations

import string
import uuid as uuidlib
from typing import Any

from hypothesis import strategies as st

from tapvirt.conf.addresses import disk_index
from tapvirt.conf.defaults import apply_defaults
from tapvirt.conf.devices.channel import SPICE_AGENT, Channel, ChannelType, Redirdev
from tapvirt.conf.devices.controller import (
    Controller,
    ControllerModel,
    ControllerType,
    ScsiModel,
    UsbModel,
    VirtioSerialModel,
    insert_controller,
)
from tapvirt.conf.devices.disk import (
    DetectZeroes,
    DiskCache,
    DiskDiscard,
    DiskIo,
    DiskType,
    HostTransport,
    NetHost,
    NetProtocol,
    NetSource,
    Tray,
)
from tapvirt.conf.devices.graphics import (
    SPICE_CHANNELS,
    SPICE_OPTIONS,
    Graphics,
    GraphicsType,
    Listen,
    ListenType,
    SharePolicy,
    Video,
    VideoModel,
)
from tapvirt.conf.devices.input import Input, InputBus, InputType
from tapvirt.conf.devices.interface import DEFAULT_MODEL
from tapvirt.conf.devices.misc import (
    BalloonModel,
    Memballoon,
    Panic,
    Rng,
    RngBackend,
    RngModel,
    Watchdog,
    WatchdogAction,
    WatchdogModel,
)
from tapvirt.conf.devices.netextras import GUEST_OFFLOADS, HOST_OFFLOADS, NetTuning, Rom, TxMode
from tapvirt.conf.devices.netsocket import SocketSource
from tapvirt.conf.devices.sound import Audio, AudioType, CodecType, Sound, SoundModel
from tapvirt.conf.devices.tpm import Tpm, TpmBackend, TpmModel, TpmVersion
from tapvirt.conf.domain.clock import (
    Catchup,
    Clock,
    ClockBasis,
    ClockOffset,
    TickPolicy,
    Timer,
    TimerName,
    TimerTrack,
    TscMode,
)
from tapvirt.conf.domain.features import (
    HYPERV_SWITCHES,
    Apic,
    Hyperv,
    HypervMode,
    HypervSpinlocks,
    HypervStimer,
    HypervVendorId,
    IoapicDriver,
    Kvm,
)
from tapvirt.conf.domain.metadata import Metadata
from tapvirt.conf.domain.pm import Pm
from tapvirt.conf.model import (
    BootDev,
    BridgeSource,
    Chardev,
    ChardevKind,
    ChardevType,
    Devices,
    DirectMode,
    DirectSource,
    Disk,
    DiskBus,
    DiskDevice,
    DiskFormat,
    Domain,
    DomainType,
    Driver,
    DriverName,
    Features,
    Interface,
    InterfaceType,
    LifecycleAction,
    LinkState,
    NicModel,
    Os,
    Target,
)
from tapvirt.conf.rules import ARCHES, RESERVED_PREFIXES

# Characters XML 1.0 can carry, minus the ones its parsers normalise (CR) or that make
# the test data unreadable (other controls); non-ASCII is included on purpose.
_TEXT = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"
)
_IFCHARS = string.ascii_letters + string.digits + "_.-"


# Strategies are built once: building them inside every draw costs most of the time.
_PATH = st.text(_TEXT, min_size=1, max_size=30).map(lambda s: "/" + s)
_OPT_PATH = st.none() | _PATH
_IFNAME = st.text(_IFCHARS, min_size=1, max_size=15).filter(
    lambda s: s not in (".", "..") and not s.startswith(RESERVED_PREFIXES)
)
_ALIAS_TAIL = st.text(_IFCHARS, min_size=1, max_size=12)
_TITLE = st.none() | st.text(_TEXT, min_size=1, max_size=20).filter(lambda s: "\n" not in s)
_DESCRIPTION = st.none() | st.text(_TEXT, max_size=40)
_CMDLINE = st.none() | st.text(_TEXT, max_size=30).filter(lambda s: "\n" not in s)
_MACHINE = st.none() | st.sampled_from(["pc", "q35", "pc-i440fx-7.2", "virt"])
_ARCH = st.none() | st.sampled_from(ARCHES)
_MTU = st.none() | st.integers(68, 65521)
_LINK = st.none() | st.sampled_from(LinkState)
_DRIVER_NAME = st.none() | st.sampled_from(DriverName)
_ACTION = st.sampled_from(LifecycleAction)
_ORDERS = st.none() | st.integers(1, 65535)


names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters + string.digits + "_"),
    st.text(string.ascii_letters + string.digits + "_.+-", max_size=63),
)
macs = st.integers(0, 2**48 - 1).map(
    lambda n: ":".join(f"{b:02x}" for b in (n & ~(1 << 40)).to_bytes(6, "big"))
)


_IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_PORT = st.integers(0, 65535)


@st.composite
def socket_sources(draw: st.DrawFn, itype: InterfaceType) -> SocketSource:
    """What libvirt's parser and schema take for mcast/udp/server/client (and tapvirt's
    rule that an mcast address is a multicast group)."""
    if itype is InterfaceType.MCAST:
        address: str | None = draw(st.tuples(st.integers(224, 239), *[st.integers(0, 255)] * 3)
                                   .map(lambda t: ".".join(map(str, t))))
    elif itype is InterfaceType.SERVER:
        address = draw(st.none() | _IPV4)
    else:
        address = draw(_IPV4)
    if itype is InterfaceType.UDP:
        return SocketSource(address, draw(_PORT), draw(_IPV4), draw(_PORT))
    return SocketSource(address, draw(_PORT))


@st.composite
def interfaces(draw: st.DrawFn, index: int) -> Interface:
    itype = draw(st.sampled_from(InterfaceType))
    model_given = draw(st.booleans())
    model = draw(st.sampled_from(NicModel)) if model_given else DEFAULT_MODEL
    target = None
    if not itype.hostless and draw(st.booleans()):
        managed_choices: list[bool | None] = [None, True]
        if itype is InterfaceType.ETHERNET:
            managed_choices.append(False)
        managed = draw(st.sampled_from(managed_choices))
        dev = draw(_IFNAME)
        if managed is False and draw(st.booleans()):
            dev = draw(st.sampled_from(RESERVED_PREFIXES)) + str(index)  # kept: unmanaged
        target = Target(dev, managed)
    source: BridgeSource | DirectSource | SocketSource | None = None
    if itype.socket:
        source = draw(socket_sources(itype))
    elif itype is InterfaceType.BRIDGE:
        source = BridgeSource(draw(_IFNAME))
    elif itype is InterfaceType.DIRECT:
        source = DirectSource(draw(_IFNAME), draw(st.sampled_from(DirectMode)))
    driver = None
    if draw(st.booleans()):
        name = draw(_DRIVER_NAME)
        queues = None
        if not itype.hostless and draw(st.booleans()):
            queues = draw(st.integers(1, 256)) if model is NicModel.VIRTIO else 1
        tuning = draw(net_tunings()) if model is NicModel.VIRTIO else None
        if name is not None or queues is not None or tuning:
            driver = Driver(name, queues, tuning or None)
    mtu = None
    if itype in (InterfaceType.ETHERNET, InterfaceType.BRIDGE):
        mtu = draw(_MTU)
    alias = f"net{index}"
    if draw(st.booleans()):
        alias = "ua-" + draw(_ALIAS_TAIL) + f"-n{index}"
    return Interface(
        type=itype, mac=draw(macs), model=model, model_given=model_given, target=target,
        source=source, driver=driver, mtu=mtu,
        link_state=draw(_LINK), alias=alias,
        script=draw(_PATH) if itype is InterfaceType.ETHERNET and draw(st.booleans()) else None,
        backend_tap=draw(_PATH)
        if itype in (InterfaceType.ETHERNET, InterfaceType.BRIDGE) and draw(st.booleans())
        else None,
        rom=draw(st.none() | roms),
        sndbuf=None if itype.hostless
        else draw(st.none() | st.integers(0, 2**32 - 1)),
        coalesce_rx_frames=draw(st.none() | st.integers(0, 2**32 - 1))
        if itype is InterfaceType.BRIDGE else None,
    )


def _disk_name(stem: str, idx: int) -> str:
    letters = ""
    n = idx + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    return stem + letters


_STEMS = {DiskBus.VIRTIO: "vd", DiskBus.SATA: "sd", DiskBus.SCSI: "sd", DiskBus.USB: "sd",
          DiskBus.IDE: "hd", DiskBus.FDC: "fd"}
_SERIAL = st.text(string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=20).filter(
    lambda s: s.strip() == s
)


_NET_HOSTS = st.one_of(
    st.builds(NetHost, st.just(HostTransport.TCP),
              name=st.from_regex(r"[a-zA-Z0-9.-]{1,20}", fullmatch=True)
              | st.ip_addresses().map(str),
              port=st.integers(1, 65535)),
    st.builds(NetHost, st.just(HostTransport.UNIX), socket=_PATH),
)
_NET_SOURCES = st.builds(NetSource, st.just(NetProtocol.NBD), _NET_HOSTS,
                         st.none() | st.from_regex(r"[ -~]{0,12}", fullmatch=True))


@st.composite
def disks(draw: st.DrawFn, q35: bool = False) -> tuple[Disk, ...]:
    """Disks in the order the parser keeps them (by bus, then target index)."""
    out: list[Disk] = []
    used: set[str] = set()
    # no usb disks: a random machine may have no USB (refused, as by libvirt)
    buses = [b for b in DiskBus if b is not DiskBus.USB and not (q35 and b is DiskBus.IDE)]
    for k in range(draw(st.integers(0, 3))):
        bus = draw(st.sampled_from(buses))
        idx = draw(st.integers(0, 3 if bus is DiskBus.FDC else 40))
        dev = _disk_name(_STEMS[bus], idx)
        if dev in used:
            continue
        used.add(dev)
        if bus is DiskBus.FDC:
            device = DiskDevice.FLOPPY
        elif bus in (DiskBus.VIRTIO, DiskBus.USB):
            device = DiskDevice.DISK
        else:
            device = draw(st.sampled_from([DiskDevice.DISK, DiskDevice.CDROM]))
        removable = None  # usb only
        dtype = draw(st.sampled_from(DiskType))
        network = draw(_NET_SOURCES) if dtype is DiskType.NETWORK else None
        out.append(Disk(
            source_file=None if network is not None else draw(_PATH)
            if device is DiskDevice.DISK or draw(st.booleans()) else None,
            target_dev=dev, target_bus=bus, format=draw(st.sampled_from(DiskFormat)),
            device=device, type=dtype, network=network,
            cache=draw(st.none() | st.sampled_from(DiskCache)),
            io=None if network is not None else draw(st.none() | st.sampled_from(DiskIo)),
            discard=draw(st.none() | st.sampled_from(DiskDiscard)),
            detect_zeroes=draw(st.none() | st.sampled_from(DetectZeroes)),
            readonly=device is DiskDevice.CDROM or draw(st.booleans()),
            shareable=draw(st.booleans()),
            tray=draw(st.none() | st.sampled_from(Tray)) if device is not DiskDevice.DISK
            else None,
            removable=removable,
            serial=draw(st.none() | _SERIAL),
            wwn=draw(st.none() | st.from_regex(r"[0-9a-f]{16}", fullmatch=True))
            if bus in (DiskBus.IDE, DiskBus.SATA, DiskBus.SCSI) else None,
            alias=f"ua-disk{k}" if draw(st.booleans()) else None,
        ))
    ordered: list[Disk] = []
    for d in out:  # libvirt's insertion rule (tapvirt.conf.devices.disk.sort_disks)
        at = len(ordered)
        for pos in range(len(ordered) - 1, -1, -1):
            if ordered[pos].target_bus is d.target_bus and (
                disk_index(ordered[pos].target_dev) > disk_index(d.target_dev)
            ):
                at = pos
        ordered.insert(at, d)
    return tuple(ordered)


@st.composite
def controllers(draw: st.DrawFn) -> tuple[Controller, ...]:
    """A few controllers a definition names itself (the machine's own are added by the
    post-parse step), each type's indexes unique, in the parser's order."""
    out: list[Controller] = []
    choices: tuple[tuple[ControllerType, list[ControllerModel]], ...] = (
        (ControllerType.USB, [UsbModel.QEMU_XHCI, UsbModel.NEC_XHCI, UsbModel.PIIX3_UHCI]),
        (ControllerType.SCSI, [ScsiModel.VIRTIO_SCSI, ScsiModel.LSILOGIC]),
        (ControllerType.VIRTIO_SERIAL, [VirtioSerialModel.VIRTIO]),
    )
    for ctype, models in choices:
        if draw(st.booleans()):
            model = draw(st.sampled_from(models))
            ports = draw(st.none() | st.integers(1, 15)) if ctype is ControllerType.USB and (
                model in (UsbModel.QEMU_XHCI, UsbModel.NEC_XHCI)) else None
            alias = "ua-" + str(ctype) if draw(st.booleans()) else None
            insert_controller(out, Controller(ctype, 0, model, ports=ports, alias=alias))
    return tuple(out)


_CHR_HOST = st.sampled_from(["127.0.0.1", "::1", "localhost", "192.0.2.7", "guest.example"])
_CHR_SERVICE = st.sampled_from(["0", "4555", "65535", "telnet"])


@st.composite
def _chardev_source(draw: st.DrawFn, port: int) -> Chardev:
    from tapvirt.conf.devices.chardev import TcpProtocol

    ctype = draw(st.sampled_from(ChardevType))
    paths = (ChardevType.FILE, ChardevType.UNIX, ChardevType.DEV, ChardevType.PIPE)
    path = draw(_PATH) if ctype in paths else None
    listen = draw(st.booleans()) if ctype in (ChardevType.UNIX, ChardevType.TCP) else True
    out = Chardev(ChardevKind.SERIAL, ctype, path, listen, port,
                  append=draw(_TRI) if ctype is ChardevType.FILE else None,
                  isa_target=draw(st.booleans()))
    if ctype is ChardevType.TCP:
        from dataclasses import replace

        out = replace(out, host=draw(_CHR_HOST), service=draw(_CHR_SERVICE),
                      protocol=draw(st.sampled_from(TcpProtocol)),
                      tls=draw(st.sampled_from([None, False])))
    if ctype is ChardevType.UDP:
        from dataclasses import replace

        bind = draw(st.booleans())
        out = replace(out, host=draw(st.none() | _CHR_HOST), service=draw(_CHR_SERVICE),
                      bind_host=draw(st.none() | _CHR_HOST) if bind else None,
                      bind_service=draw(_CHR_SERVICE) if bind else None)
    return out


@st.composite
def _host_audio(draw: st.DrawFn, a: Audio) -> Audio:
    """alsa/oss options: the device of each direction, OSS's own settings."""
    from dataclasses import replace

    from tapvirt.conf.devices.sound import AudioStream

    if a.type not in (AudioType.ALSA, AudioType.OSS):
        return a
    oss = a.type is AudioType.OSS
    dev = st.sampled_from(["/dev/dsp", "/dev/dsp1", "/dev/snd/x_y-1.2"]) if oss else (
        st.sampled_from(["default", "hw:0", "/dev/dsp0", "plug:a\\b"]))
    streams = [
        AudioStream(voices=draw(st.none() | st.integers(1, 8)), dev=draw(st.none() | dev),
                    buffer_count=draw(st.none() | st.integers(1, 64)) if oss else None,
                    try_poll=draw(_TRI) if oss else None) if draw(st.booleans()) else None
        for _ in range(2)]
    out = replace(a, input=streams[0], output=streams[1])
    if oss:
        out = replace(out, try_mmap=draw(_TRI), exclusive=draw(_TRI),
                      dsp_policy=draw(st.none() | st.integers(0, 10)))
    return out


@st.composite
def chardevs(draw: st.DrawFn) -> tuple[tuple[Chardev, ...], tuple[Chardev, ...]]:
    serials: list[Chardev] = []
    ports = draw(st.lists(st.integers(0, 3), unique=True, max_size=3))
    for port in ports:
        serials.append(draw(_chardev_source(port)))
    from dataclasses import replace

    if not serials and draw(st.booleans()):  # a serial console alone becomes serial 0
        serials.append(Chardev(ChardevKind.SERIAL, ChardevType.PTY, None, True, 0))
    # libvirt's console rules: console 0 describes serial 0; the others are virtio consoles
    consoles: list[Chardev] = []
    if serials:
        consoles.append(replace(serials[0], kind=ChardevKind.CONSOLE, port=0))
    for _ in range(draw(st.integers(0, 2))):  # libvirt numbers consoles by position
        ctype = draw(st.sampled_from([ChardevType.PTY, ChardevType.NULL]))
        consoles.append(Chardev(ChardevKind.CONSOLE, ctype, None, True, len(consoles),
                                virtio=True))
    return tuple(serials), tuple(consoles)


def _with_boot_orders(
    draw: st.DrawFn, disks_: tuple[Disk, ...], ifaces: tuple[Interface, ...]
) -> tuple[tuple[Disk, ...], tuple[Interface, ...]]:
    from dataclasses import replace

    n = len(disks_) + len(ifaces)
    orders = draw(st.lists(_ORDERS, min_size=n, max_size=n))
    seen: set[int] = set()
    clean: list[int | None] = []
    for o in orders:
        clean.append(o if o is not None and o not in seen else None)
        if o is not None:
            seen.add(o)
    d = tuple(replace(x, boot_order=o) for x, o in zip(disks_, clean, strict=False))
    i = tuple(replace(x, boot_order=o) for x, o in zip(ifaces, clean[len(disks_):], strict=True))
    return d, i


@st.composite
def domains(draw: st.DrawFn) -> Domain:
    ifaces_list: list[Interface] = []
    devs: set[str] = set()
    aliases: set[str] = set()
    for i in range(draw(st.integers(0, 4))):
        iface = draw(interfaces(i))
        if iface.dev is not None and iface.dev in devs:
            continue
        if iface.alias in aliases:
            continue
        if iface.dev is not None:
            devs.add(iface.dev)
        aliases.add(iface.alias or "")
        ifaces_list.append(iface)
    # automatic aliases are net0, net1, ... over the NICs without a user alias (libvirt's
    # next-free netN), whatever the position: renumber after skipping
    from dataclasses import replace

    auto = iter(range(len(ifaces_list)))
    ifaces = tuple(
        replace(x, alias=f"net{next(auto)}") if (x.alias or "").startswith("net") else x
        for x in ifaces_list
    )
    machine = draw(_MACHINE)
    disks_ = draw(disks(q35=machine == "q35"))
    boot_devs: tuple[BootDev, ...] = ()
    if draw(st.booleans()):
        disks_, ifaces = _with_boot_orders(draw, disks_, ifaces)
    else:
        boot_devs = tuple(draw(st.lists(st.sampled_from(BootDev), unique=True, max_size=4)))
    serials, consoles = draw(chardevs())
    more = draw(peripherals())
    memory = draw(st.integers(1, 2**40))
    dtype = draw(st.sampled_from(DomainType))
    dom = Domain(
        name=draw(names),
        uuid=str(uuidlib.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        type=dtype,
        title=draw(_TITLE),
        description=draw(_DESCRIPTION),
        memory_kib=memory,
        current_memory_kib=draw(st.none() | st.integers(1, memory)),
        vcpus=draw(st.integers(1, 255)),  # more need q35, an iommu with eim and KVM
        os=Os(
            arch=draw(_ARCH),
            machine=machine,
            kernel=draw(_OPT_PATH),
            initrd=draw(_OPT_PATH),
            cmdline=draw(_CMDLINE),
            boot=boot_devs,
        ),
        features=draw(features(kvm=dtype is DomainType.KVM)),
        metadata=draw(st.none() | metadatas()),
        clock=draw(st.none() | clocks()),
        on_poweroff=draw(_ACTION),
        on_reboot=draw(_ACTION),
        on_crash=draw(_ACTION),
        pm=draw(st.none() | pms()),
        devices=Devices(
            emulator=draw(_OPT_PATH), disks=disks_, controllers=draw(controllers()),
            interfaces=ifaces,
            serials=serials, consoles=consoles, **more,
        ),
    )
    # the implicit devices and names the post-parse step adds are part of a valid model
    return _without_extra_usb(dom)


def _without_extra_usb(dom: Domain) -> Domain:
    """apply_defaults; when the drawn USB devices do not fit the drawn USB controllers
    (PIIX3 has 2 ports, model='none' none: refused, as by libvirt), without them."""
    from dataclasses import replace

    from tapvirt.conf import addresses as A
    from tapvirt.conf.devices.input import InputBus
    from tapvirt.conf.devices.sound import SoundModel
    from tapvirt.errors import TapvirtError

    try:
        return apply_defaults(dom)
    except TapvirtError as e:
        if e.code not in (A.ADDRESS_EXHAUSTED, A.ADDRESS_UNUSABLE):
            raise
    d = dom.devices
    return apply_defaults(replace(dom, devices=replace(
        d, inputs=tuple(i for i in d.inputs if i.bus is not InputBus.USB),
        sounds=tuple(x for x in d.sounds if x.model is not SoundModel.USB), redirdevs=(),
    )))


# --- the devices around disks and NICs (h9dev's families) -------------------------------

_TRI = st.none() | st.booleans()
roms = st.one_of(
    st.just(Rom(enabled=False)),
    st.builds(Rom, st.none() | st.just(True), _TRI, _OPT_PATH),
)


@st.composite
def net_tunings(draw: st.DrawFn) -> NetTuning:
    def switches(names: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
        return tuple((n, v) for n in names if (v := draw(_TRI)) is not None)

    return NetTuning(
        txmode=draw(st.none() | st.sampled_from(TxMode)), ioeventfd=draw(_TRI),
        event_idx=draw(_TRI),
        rx_queue_size=draw(st.none() | st.sampled_from([256, 512, 1024])),
        tx_queue_size=draw(st.none() | st.sampled_from([256, 512, 1024])),
        host=switches(HOST_OFFLOADS), guest=switches(GUEST_OFFLOADS),
    )


_ADDRESSES = st.none() | st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "192.0.2.7"])
_PASSWD = st.none() | st.text(string.ascii_letters + string.digits + "&<'\" ", max_size=12)


@st.composite
def graphics_devices(draw: st.DrawFn) -> Graphics:
    gtype = draw(st.sampled_from(GraphicsType))
    kind = draw(st.sampled_from(ListenType))
    autoport, port = False, None
    if kind is ListenType.ADDRESS:
        listen = Listen(kind, address=draw(_ADDRESSES))
        autoport = draw(st.booleans())
        if not autoport:
            port = draw(st.integers(5900, 65535))
    elif kind is ListenType.SOCKET:
        listen = Listen(kind, socket=draw(_OPT_PATH))
    else:
        listen = Listen(kind)
    options: tuple[tuple[str, str], ...] = ()
    insecure: tuple[str, ...] = ()
    default_insecure = False
    if gtype is GraphicsType.SPICE:
        options = tuple((tag, draw(st.sampled_from(values)))
                        for tag, _attr, values, _opt in SPICE_OPTIONS if draw(st.booleans()))
        if kind is not ListenType.NONE:
            chosen = draw(st.sets(st.sampled_from(SPICE_CHANNELS), max_size=3))
            insecure = tuple(n for n in SPICE_CHANNELS if n in chosen)
            default_insecure = draw(st.booleans())
    return Graphics(
        gtype, autoport, port, listen, passwd=draw(_PASSWD),
        keymap=draw(st.none() | st.sampled_from(["en-us", "de", "fr-ch"])),
        share_policy=draw(st.none() | st.sampled_from(SharePolicy))
        if gtype is GraphicsType.VNC and kind is not ListenType.SOCKET else None,
        spice_options=options, spice_insecure_channels=insecure,
        spice_default_insecure=default_insecure,
    )


_POW2_KIB = st.sampled_from([1024, 8192, 16384, 32768, 65536])


@st.composite
def video_devices(draw: st.DrawFn, primary: bool) -> Video:
    models = list(VideoModel) if primary else [VideoModel.QXL, VideoModel.VIRTIO]
    model = draw(st.sampled_from([m for m in models if m is not VideoModel.NONE]))
    vram = ram = vram64 = vgamem = 0
    if model in (VideoModel.VGA, VideoModel.CIRRUS, VideoModel.VMVGA, VideoModel.BOCHS,
                 VideoModel.QXL):
        vram = draw(_POW2_KIB)
    if model is VideoModel.QXL:
        ram = draw(_POW2_KIB)
        vgamem = draw(st.sampled_from([8192, 16384]))
        vram64 = draw(st.sampled_from([0, 65536]))
    res = draw(st.none() | st.tuples(st.integers(1, 4096), st.integers(1, 4096)))
    return Video(model, vram, ram, vram64, vgamem, draw(st.integers(1, 16)), primary, res)


@st.composite
def peripherals(draw: st.DrawFn) -> dict[str, Any]:
    graphics = tuple(draw(st.lists(graphics_devices(), max_size=2)))
    spice = any(g.type is GraphicsType.SPICE for g in graphics)
    videos: tuple[Video, ...] = ()
    if draw(st.booleans()):
        if draw(st.booleans()):
            videos = (Video(VideoModel.NONE, heads=0, alias="video0"),)
        else:
            first = draw(video_devices(True))
            rest = draw(st.lists(video_devices(False), max_size=2))
            videos = tuple(
                v.__class__(**{**v.__dict__, "alias": f"video{n}"})
                for n, v in enumerate([first, *rest])
            )
    audios = tuple(
        draw(_host_audio(Audio(n + 1, t, draw(st.none() | st.integers(1, 10**6)),
                               draw(_PATH) if t is AudioType.FILE else None)))
        for n, t in enumerate(draw(st.lists(st.sampled_from(AudioType), max_size=2)))
    )
    ids = [a.id for a in audios]
    sounds = []
    for _ in range(draw(st.integers(0, 2))):
        model = draw(st.sampled_from(SoundModel))
        codecs = tuple(draw(st.lists(st.sampled_from(CodecType), max_size=3))
                       ) if model.has_codecs else ()
        sounds.append(Sound(model, codecs, draw(st.none() | st.sampled_from(ids))
                            if ids else None))
    inputs = []
    for _ in range(draw(st.integers(0, 3))):
        itype = draw(st.sampled_from(InputType))
        buses = [b for b in InputBus if not (b is InputBus.PS2 and itype is InputType.TABLET)]
        bus = draw(st.sampled_from(buses))
        inputs.append(Input(itype, bus, bus is InputBus.VIRTIO and draw(st.booleans())))
    channels = []
    for _ in range(draw(st.integers(0, 3))):
        ctypes = [ChannelType.UNIX, ChannelType.PTY] + ([ChannelType.SPICEVMC] if spice else [])
        ctype = draw(st.sampled_from(ctypes))
        name = draw(st.none() | st.sampled_from(["org.qemu.guest_agent.0", "org.example.x"]))
        if ctype is ChannelType.SPICEVMC:
            name = name or SPICE_AGENT
        path = draw(_OPT_PATH) if ctype is ChannelType.UNIX else None
        listen = draw(st.booleans()) if path is not None else True
        channels.append(Channel(ctype, name, path, listen))
    balloon = draw(st.none() | st.builds(
        lambda m, a, f, s: Memballoon(m, None, None, None, None) if m is BalloonModel.NONE
        else Memballoon(m, a, f, s),
        st.sampled_from(BalloonModel), _TRI, _TRI, st.none() | st.integers(1, 2**31 - 1)))
    rngs = []
    for _ in range(draw(st.integers(0, 2))):
        backend = draw(st.sampled_from(RngBackend))
        rate = draw(st.none() | st.integers(1, 2**32 - 1))
        rngs.append(Rng(draw(st.sampled_from(RngModel)), backend,
                        draw(_PATH) if backend is RngBackend.RANDOM else None, rate,
                        draw(st.none() | st.integers(1, 2**32 - 1)) if rate else None))
    tpm = None
    if draw(st.booleans()):
        if draw(st.booleans()):
            tpm = Tpm(draw(st.sampled_from(TpmModel)), TpmBackend.EXTERNAL, None,
                      socket=draw(_PATH))
        else:
            model = draw(st.sampled_from(TpmModel))
            version = TpmVersion.V2_0 if model is TpmModel.CRB else draw(
                st.sampled_from(TpmVersion))
            tpm = Tpm(model, TpmBackend.EMULATOR, version, draw(st.booleans()))
    return {
        "channels": tuple(channels), "inputs": tuple(inputs), "tpm": tpm,
        "graphics": graphics, "sounds": tuple(sounds), "audios": audios, "videos": videos,
        "redirdevs": tuple(Redirdev() for _ in range(draw(st.integers(0, 2)))) if spice else (),
        "watchdog": draw(st.none() | st.builds(Watchdog, st.sampled_from(WatchdogModel),
                                              st.sampled_from(WatchdogAction))),
        "memballoon": balloon, "rngs": tuple(rngs),
        "panics": tuple(draw(st.lists(st.builds(Panic, st.just(Panic().model),
                                                st.none() | st.integers(0, 0xFFFF)),
                                      max_size=1))),
    }


# --- domain-level elements (conf/domain/*) ----------------------------------------------

_ONOFF = st.none() | st.booleans()


@st.composite
def timers(draw: st.DrawFn, name: TimerName) -> Timer:
    present = draw(_ONOFF)
    if name is TimerName.RTC:
        policy = draw(st.none() | st.sampled_from([TickPolicy.DELAY, TickPolicy.CATCHUP]))
        track = draw(st.none() | st.sampled_from(
            [TimerTrack.GUEST, TimerTrack.WALL, TimerTrack.REALTIME]))
    elif name is TimerName.PIT:
        policy = draw(st.none() | st.sampled_from(
            [TickPolicy.DELAY, TickPolicy.CATCHUP, TickPolicy.DISCARD]))
        track = None
    else:
        policy, track = None, None
    catchup = None
    if policy is TickPolicy.CATCHUP and draw(st.booleans()):
        catchup = Catchup(draw(st.none() | st.integers(0, 2**32 - 1)),
                          draw(st.none() | st.integers(0, 2**32 - 1)), None)
    freq = mode = None
    if name is TimerName.TSC:
        freq = draw(st.none() | st.integers(1, 2**40))
        mode = draw(st.none() | st.sampled_from(TscMode))
    return Timer(name, present, policy, track, freq, mode, catchup)


@st.composite
def clocks(draw: st.DrawFn) -> Clock:
    offset = draw(st.sampled_from(
        [ClockOffset.UTC, ClockOffset.LOCALTIME, ClockOffset.VARIABLE, ClockOffset.ABSOLUTE]))
    adjustment = basis = start = None
    if offset in (ClockOffset.UTC, ClockOffset.LOCALTIME):
        adjustment = draw(st.none() | st.just("reset"))
    elif offset is ClockOffset.VARIABLE:
        adjustment = str(draw(st.integers(-(2**40), 2**40)))
        basis = draw(st.sampled_from(ClockBasis))
    else:
        start = draw(st.integers(0, 253402300799))
    names_ = draw(st.lists(st.sampled_from([
        TimerName.PIT, TimerName.RTC, TimerName.HPET, TimerName.TSC, TimerName.KVMCLOCK,
        TimerName.HYPERVCLOCK]), unique=True, max_size=6))
    return Clock(offset, adjustment, basis, start, tuple(draw(timers(n)) for n in names_))


@st.composite
def hypervs(draw: st.DrawFn, kvm: bool) -> Hyperv:
    from dataclasses import replace

    mode = draw(st.sampled_from(HypervMode))
    h = Hyperv(mode=mode)
    if mode is HypervMode.PASSTHROUGH:
        return h
    values: dict[str, Any] = {name: draw(_ONOFF) for name in HYPERV_SWITCHES}
    if not kvm and values["vpindex"]:
        values["vpindex"] = False
    h = replace(h, **values)
    if draw(st.booleans()):
        on = draw(st.booleans())
        h = replace(h, spinlocks=HypervSpinlocks(
            on, draw(st.integers(4095, 2**32 - 1)) if on else None))
    if draw(st.booleans()):
        h = replace(h, stimer=HypervStimer(draw(st.booleans()), draw(_ONOFF)))
    if draw(st.booleans()):
        on = draw(st.booleans())
        value = draw(st.text(string.ascii_letters + " ", min_size=1, max_size=12))
        h = replace(h, vendor_id=HypervVendorId(on, value if on or draw(st.booleans())
                                                else None))
    return h


@st.composite
def features(draw: st.DrawFn, kvm: bool) -> Features:
    apic = Apic(draw(_ONOFF)) if draw(st.booleans()) else None
    hyperv = draw(hypervs(kvm)) if draw(st.booleans()) else None
    kvm_f = Kvm(draw(_ONOFF), draw(_ONOFF), draw(_ONOFF), draw(_ONOFF)) if draw(
        st.booleans()) else None
    return Features(
        acpi=draw(st.booleans()), apic=apic, pae=draw(st.booleans()), hyperv=hyperv,
        kvm=kvm_f, pmu=draw(_ONOFF), vmport=draw(_ONOFF), smm=draw(_ONOFF),
        ioapic=draw(st.none() | st.sampled_from(IoapicDriver)),
    )


@st.composite
def pms(draw: st.DrawFn) -> Pm:
    return Pm(draw(_ONOFF), draw(_ONOFF))


@st.composite
def metadatas(draw: st.DrawFn) -> Metadata:
    n = draw(st.integers(0, 3))
    items = []
    for i in range(n):
        text = draw(st.text(string.ascii_letters + string.digits + " ", max_size=10))
        body = f">{text}</a{i}:item>" if text else "/>"
        items.append(f'<a{i}:item xmlns:a{i}="http://example.org/ns{i}"{body}')
    return Metadata(tuple(items))
