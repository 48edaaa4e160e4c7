# ruff: noqa: E501, S106 -- libvirt's expected lines are quoted verbatim; the passwords are test data
"""The device objects of the memballoon, rng, watchdog, panic, input, graphics, video,
sound, channel, redirdev, tpm and interface-extras families against the lines libvirt 9.0
writes for QEMU 7.2 (tests/qemuxml2argvdata/NAME.x86_64-latest.args, or NAME.args in
key=value form turned into JSON; the case is named in each test). Address properties
(bus/addr/port), which the address module adds, are left out of both sides."""

from __future__ import annotations

import json
from typing import Any

from tapvirt.conf.devices.channel import Channel, ChannelType, Redirdev
from tapvirt.conf.devices.graphics import (
    Graphics,
    GraphicsType,
    Listen,
    ListenType,
    SharePolicy,
    Video,
    VideoModel,
)
from tapvirt.conf.devices.input import Input, InputBus, InputType
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
from tapvirt.conf.devices.netextras import NetTuning, Rom, TxMode
from tapvirt.conf.devices.sound import Audio, AudioType, CodecType, Sound, SoundModel
from tapvirt.conf.devices.tpm import Tpm, TpmBackend, TpmModel, TpmVersion
from tapvirt.qemu.argv import channel as argv_channel
from tapvirt.qemu.argv import graphics as argv_graphics
from tapvirt.qemu.argv import misc as argv_misc
from tapvirt.qemu.argv import netextras as argv_netextras
from tapvirt.qemu.argv import sound as argv_sound

RUN = "/run/user/1000/tapvirt/guest"


def _libvirt(line: str) -> dict[str, Any]:
    """A libvirt `-device '{...}'` line without its address properties."""
    obj = json.loads(line.split(" ", 1)[1].strip("'"))
    for key in ("bus", "addr", "port"):
        if key != "port" or obj.get("driver", "").startswith("usb"):
            obj.pop(key, None)
    return dict(obj)


def test_memballoon_matches_libvirt() -> None:
    # virtio-options-memballoon-freepage-reporting / balloon-device-deflate (deflate-on-oom=on)
    dev = argv_misc.memballoon_device(
        Memballoon(BalloonModel.VIRTIO, free_page_reporting=True, alias="balloon0"))
    assert dev == _libvirt(
        """-device '{"driver":"virtio-balloon-pci","id":"balloon0","free-page-reporting":true,"bus":"pci.0","addr":"0x2"}'""")
    dev = argv_misc.memballoon_device(Memballoon(BalloonModel.VIRTIO, autodeflate=True))
    assert dev == {"driver": "virtio-balloon-pci", "id": "balloon0", "deflate-on-oom": True}
    assert argv_misc.memballoon_device(Memballoon(BalloonModel.NONE)) is None
    transitional = Memballoon(BalloonModel.VIRTIO_TRANSITIONAL)
    assert argv_misc.memballoon_device(transitional) == _libvirt(
        """-device '{"driver":"virtio-balloon-pci-transitional","id":"balloon0","bus":"pci.2","addr":"0x7"}'""")


def test_memballoon_stats_period_is_set_by_qmp_not_on_the_argv() -> None:
    b = Memballoon(BalloonModel.VIRTIO, stats_period=10)
    assert "period" not in json.dumps(argv_misc.memballoon_device(b))
    assert argv_misc.memballoon_qmp(b) == [{"execute": "qom-set", "arguments": {
        "path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval",
        "value": 10}}]
    assert argv_misc.memballoon_qmp(Memballoon(BalloonModel.VIRTIO)) == []


def test_rng_matches_libvirt() -> None:
    # virtio-rng-default / virtio-rng-multiple: rng-random with a file, rate -> max-bytes
    r = Rng(RngModel.VIRTIO, RngBackend.RANDOM, "/dev/urandom", 123, 1234)
    assert argv_misc.rng_object(r, "rng0") == json.loads(
        '{"qom-type":"rng-random","id":"objrng0","filename":"/dev/urandom"}')
    assert argv_misc.rng_device(r, "rng0") == _libvirt(
        """-device '{"driver":"virtio-rng-pci","rng":"objrng0","id":"rng0","max-bytes":123,"period":1234,"bus":"pci.9","addr":"0x0"}'""")
    builtin = Rng(RngModel.VIRTIO_NON_TRANSITIONAL, RngBackend.BUILTIN, None)
    assert argv_misc.rng_object(builtin, "rng0") == {"qom-type": "rng-builtin", "id": "objrng0"}
    assert argv_misc.rng_device(builtin, "rng0")["driver"] == "virtio-rng-pci-non-transitional"
    # only bytes: libvirt fills in QEMU's default period of a second
    assert argv_misc.rng_device(Rng(rate_bytes=4096), "rng1")["period"] == 1000


def test_watchdog_matches_libvirt() -> None:
    # watchdog-device (i6300esb on PCI), watchdog (ib700, -watchdog-action poweroff)
    esb = Watchdog(WatchdogModel.I6300ESB)
    assert argv_misc.watchdog_device(esb) == _libvirt(
        """-device '{"driver":"i6300esb","id":"watchdog0","bus":"pci.0","addr":"0x3"}'""")
    ib = Watchdog(WatchdogModel.IB700, WatchdogAction.POWEROFF)
    assert argv_misc.watchdog_device(ib) == {"driver": "ib700", "id": "watchdog0"}
    assert argv_misc.watchdog_action(ib) == ["-watchdog-action", "poweroff"]
    assert argv_misc.watchdog_is_pci(esb) and not argv_misc.watchdog_is_pci(ib)


def test_panic_matches_libvirt() -> None:
    # panic: <address type='isa' iobase='0x505'/> -> "ioport":1285; panic-no-address
    assert argv_misc.panic_device(Panic(iobase=0x505)) == {"driver": "pvpanic", "ioport": 1285}
    assert argv_misc.panic_device(Panic()) == {"driver": "pvpanic"}


def test_input_matches_libvirt() -> None:
    # input-usbtablet: usb-tablet input0 on usb.0 port 1; virtio-input: virtio-*-pci
    tablet = argv_graphics.input_device(Input(InputType.TABLET, InputBus.USB), "input0")
    assert tablet == _libvirt(
        """-device '{"driver":"usb-tablet","id":"input0","bus":"usb.0","port":"1"}'""")
    kbd = argv_graphics.input_device(Input(InputType.KEYBOARD, InputBus.VIRTIO), "input2")
    assert kbd == _libvirt(
        """-device '{"driver":"virtio-keyboard-pci","id":"input2","bus":"pci.14","addr":"0x0"}'""")
    assert argv_graphics.input_device(Input(InputType.MOUSE, InputBus.PS2), "input1") is None
    assert argv_graphics.input_device(Input(InputType.KEYBOARD, InputBus.USB), "input3") == {
        "driver": "usb-kbd", "id": "input3"}


def test_vnc_matches_libvirt() -> None:
    # graphics-vnc: port 5903 on an IPv6 address -> '[...]:3', audiodev of the audio backend
    fixed = Graphics(GraphicsType.VNC, autoport=False, port=5903,
                     listen=Listen(ListenType.ADDRESS, "2001:1:2:3:4:5:1234:1234"))
    assert argv_graphics.graphics_argv(fixed, runtime_dir=RUN, audio_id=1) == [
        "-vnc", "[2001:1:2:3:4:5:1234:1234]:3,audiodev=audio1"]
    # graphics-vnc-socket / -auto-socket / -none
    sock = Graphics(GraphicsType.VNC, False, None, Listen(ListenType.SOCKET, socket="/tmp/vnc.sock"))
    assert argv_graphics.graphics_argv(sock, runtime_dir=RUN, audio_id=1) == [
        "-vnc", "vnc=unix:/tmp/vnc.sock,audiodev=audio1"]
    auto_sock = Graphics(GraphicsType.VNC, False, None, Listen(ListenType.SOCKET))
    assert argv_graphics.graphics_argv(auto_sock, runtime_dir=RUN, audio_id=1) == [
        "-vnc", f"vnc=unix:{RUN}/vnc.sock,audiodev=audio1"]
    none = Graphics(GraphicsType.VNC, False, None, Listen(ListenType.NONE))
    assert argv_graphics.graphics_argv(none, runtime_dir=RUN, audio_id=1) == [
        "-vnc", "none,audiodev=audio1"]
    # graphics-vnc-policy: share=allow-exclusive
    share = Graphics(GraphicsType.VNC, False, 65530,
                     Listen(ListenType.ADDRESS, "::"), share_policy=SharePolicy.ALLOW_EXCLUSIVE)
    assert argv_graphics.graphics_argv(share, runtime_dir=RUN, audio_id=1) == [
        "-vnc", "[::]:59630,share=allow-exclusive,audiodev=audio1"]


def test_vnc_autoport_lets_qemu_search_and_keeps_the_password_off_the_argv() -> None:
    g = Graphics(GraphicsType.VNC, passwd="s3cret", keymap="de",
                 listen=Listen(ListenType.ADDRESS, "127.0.0.1"))
    argv = argv_graphics.graphics_argv(g, runtime_dir=RUN, audio_id=1)
    assert argv == ["-vnc", "127.0.0.1:0,password=on,audiodev=audio1", "-k", "de"]
    assert "s3cret" not in " ".join(argv)
    assert argv_graphics.graphics_qmp(g) == [
        {"execute": "set_password", "arguments": {"protocol": "vnc", "password": "s3cret"}},
        {"execute": "expire_password", "arguments": {"protocol": "vnc", "time": "never"}},
    ]
    assert argv_graphics.graphics_qmp(Graphics(GraphicsType.VNC)) == []


def test_spice_matches_libvirt() -> None:
    # graphics-spice-socket / graphics-spice-no-args, plus disable-ticketing=on that the
    # test suite's qemu.conf (spice_password set) suppresses
    sock = Graphics(GraphicsType.SPICE, False, None, Listen(ListenType.SOCKET, socket="/tmp/spice.sock"))
    assert argv_graphics.graphics_argv(sock, runtime_dir=RUN, audio_id=1) == [
        "-spice", "unix,addr=/tmp/spice.sock,disable-ticketing=on,seamless-migration=on"]
    none = Graphics(GraphicsType.SPICE, False, None, Listen(ListenType.NONE), passwd="x")
    assert argv_graphics.graphics_argv(none, runtime_dir=RUN, audio_id=1) == [
        "-spice", "port=0,seamless-migration=on"]
    # graphics-spice (without its TLS parts): options in libvirt's order
    g = Graphics(
        GraphicsType.SPICE, False, 5903, Listen(ListenType.ADDRESS, "127.0.0.1"), passwd="pw",
        spice_options=(("image", "auto_glz"), ("jpeg", "auto"), ("zlib", "auto"),
                       ("playback", "on"), ("streaming", "filter"), ("clipboard", "no"),
                       ("filetransfer", "no")),
        spice_insecure_channels=("inputs",),
    )
    assert argv_graphics.graphics_argv(g, runtime_dir=RUN, audio_id=1) == [
        "-spice", "port=5903,addr=127.0.0.1,plaintext-channel=inputs,image-compression=auto_glz,"
        "jpeg-wan-compression=auto,zlib-glz-wan-compression=auto,playback-compression=on,"
        "streaming-video=filter,disable-copy-paste=on,disable-agent-file-xfer=on,"
        "seamless-migration=on"]
    auto = Graphics(GraphicsType.SPICE, spice_options=(("mouse", "client"),),
                    listen=Listen(ListenType.ADDRESS, "127.0.0.1"))
    assert argv_graphics.graphics_argv(auto, runtime_dir=RUN, audio_id=1, port=5912) == [
        "-spice", "port=5912,addr=127.0.0.1,agent-mouse=on,disable-ticketing=on,"
        "seamless-migration=on"]


def test_a_display_without_listen_address_is_a_private_unix_socket() -> None:
    # libvirt with vnc_auto_unix_socket / spice_auto_unix_socket; a fixed port stays TCP
    vnc, spice = Graphics(GraphicsType.VNC), Graphics(GraphicsType.SPICE)
    assert argv_graphics.graphics_argv(vnc, runtime_dir=RUN, audio_id=None) == [
        "-vnc", f"vnc=unix:{RUN}/vnc.sock"]
    assert argv_graphics.graphics_argv(spice, runtime_dir=RUN, audio_id=None) == [
        "-spice", f"unix,addr={RUN}/spice.sock,disable-ticketing=on,seamless-migration=on"]
    assert argv_graphics.graphics_socket(vnc, RUN) == f"{RUN}/vnc.sock"
    assert not argv_graphics.is_tcp(spice, RUN)
    fixed = Graphics(GraphicsType.VNC, autoport=False, port=5907)
    assert argv_graphics.graphics_argv(fixed, runtime_dir=RUN, audio_id=None) == [
        "-vnc", "127.0.0.1:7"]
    assert argv_graphics.graphics_socket(fixed, RUN) is None


def test_video_matches_libvirt() -> None:
    # graphics-spice: qxl-vga primary, qxl secondary
    qxl = Video(VideoModel.QXL, vram=32768, ram=65536, vgamem=8192, heads=1, primary=True,
                alias="video0")
    assert argv_graphics.video_device(qxl) == _libvirt(
        """-device '{"driver":"qxl-vga","id":"video0","max_outputs":1,"ram_size":67108864,"vram_size":33554432,"vram64_size_mb":0,"vgamem_mb":8,"bus":"pci.0","addr":"0x2"}'""")
    second = Video(VideoModel.QXL, vram=32768, ram=65536, vgamem=8192, alias="video1")
    assert argv_graphics.video_device(second) == _libvirt(
        """-device '{"driver":"qxl","id":"video1","max_outputs":1,"ram_size":67108864,"vram_size":33554432,"vram64_size_mb":0,"vgamem_mb":8,"bus":"pci.0","addr":"0x4"}'""")
    cirrus = Video(VideoModel.CIRRUS, vram=16384, primary=True, alias="video0")
    assert argv_graphics.video_device(cirrus) == _libvirt(
        """-device '{"driver":"cirrus-vga","id":"video0","bus":"pci.0","addr":"0x2"}'""")
    vga = Video(VideoModel.VGA, vram=16384, primary=True, alias="video0")
    assert argv_graphics.video_device(vga) == _libvirt(
        """-device '{"driver":"VGA","id":"video0","vgamem_mb":16,"bus":"pci.0","addr":"0x2"}'""")
    virtio = Video(VideoModel.VIRTIO, primary=True, alias="video0")
    assert argv_graphics.video_device(virtio) == _libvirt(
        """-device '{"driver":"virtio-vga","id":"video0","max_outputs":1,"bus":"pcie.0","addr":"0x1"}'""")
    bochs = Video(VideoModel.BOCHS, vram=16384, primary=True, alias="video0")
    assert argv_graphics.video_device(bochs) == _libvirt(
        """-device '{"driver":"bochs-display","id":"video0","vgamem":16777216,"bus":"pci.0","addr":"0x2"}'""")
    ramfb = Video(VideoModel.RAMFB, primary=True, alias="video0")
    assert argv_graphics.video_device(ramfb) == {"driver": "ramfb", "id": "video0"}
    gpu = Video(VideoModel.VIRTIO, heads=2, alias="video1")
    assert argv_graphics.video_device(gpu) == {
        "driver": "virtio-gpu-pci", "id": "video1", "max_outputs": 2}
    assert argv_graphics.video_device(Video(VideoModel.NONE, heads=0)) is None


def test_sound_matches_libvirt() -> None:
    # sound-device (key=value in 9.0's .args, JSON here): ich6 with codecs, ac97, es1370
    audios = (Audio(1, AudioType.NONE),)
    hda = Sound(SoundModel.ICH6, (CodecType.MICRO, CodecType.DUPLEX, CodecType.OUTPUT))
    got = argv_sound.sound_devices(hda, "sound5", argv_sound.resolve_audio_id(hda, audios))
    assert got == [
        {"driver": "intel-hda", "id": "sound5"},
        {"driver": "hda-micro", "id": "sound5-codec0", "bus": "sound5.0", "cad": 0,
         "audiodev": "audio1"},
        {"driver": "hda-duplex", "id": "sound5-codec1", "bus": "sound5.0", "cad": 1,
         "audiodev": "audio1"},
        {"driver": "hda-output", "id": "sound5-codec2", "bus": "sound5.0", "cad": 2,
         "audiodev": "audio1"},
    ]
    ich9 = argv_sound.sound_devices(Sound(SoundModel.ICH9), "sound0", 1)
    assert ich9 == [
        _libvirt("""-device '{"driver":"ich9-intel-hda","id":"sound0","bus":"pcie.0","addr":"0x1b"}'"""),
        _libvirt("""-device '{"driver":"hda-duplex","id":"sound0-codec0","bus":"sound0.0","cad":0,"audiodev":"audio1"}'""")
        | {"bus": "sound0.0"},
    ]
    ac97 = argv_sound.sound_devices(Sound(SoundModel.AC97), "sound0", 1)
    assert ac97 == [_libvirt(
        """-device '{"driver":"AC97","id":"sound0","audiodev":"audio1","bus":"pci.0","addr":"0x3"}'""")]
    assert argv_sound.audiodev(Audio(1)) == {"id": "audio1", "driver": "none"}
    assert argv_sound.audiodev(Audio(2, AudioType.FILE, 50, "/tmp/a.wav")) == {
        "id": "audio2", "driver": "wav", "timer-period": 50, "path": "/tmp/a.wav"}


def test_channels_match_libvirt() -> None:
    # channel-virtio-unix (libvirt passes a listening fd; tapvirt lets QEMU bind the path)
    agent = Channel(ChannelType.UNIX, "org.qemu.guest_agent.0", alias="channel0")
    assert argv_channel.channel_chardev(agent, "channel0", RUN) == (
        f"socket,id=charchannel0,path={RUN}/org.qemu.guest_agent.0.sock,server=on,wait=off")
    dev = argv_channel.channel_device(agent, "channel0", (0, 0, 1))
    assert dev == json.loads(
        '{"driver":"virtserialport","bus":"virtio-serial0.0","nr":1,"chardev":"charchannel0",'
        '"id":"channel0","name":"org.qemu.guest_agent.0"}')
    # channel-spicevmc
    vmc = Channel(ChannelType.SPICEVMC, "com.redhat.spice.0")
    assert argv_channel.channel_chardev(vmc, "channel0", RUN) == (
        "spicevmc,id=charchannel0,name=vdagent")
    connect = Channel(ChannelType.UNIX, "x", "/tmp/s,ock", listen=False)
    assert argv_channel.channel_chardev(connect, "channel1", RUN) == (
        "socket,id=charchannel1,path=/tmp/s,,ock")
    # graphics-spice-usb-redir
    chardev, redir = argv_channel.redirdev_argv(Redirdev("redir1").alias or "")
    assert chardev == "spicevmc,id=charredir1,name=usbredir"
    assert redir == _libvirt(
        """-device '{"driver":"usb-redir","chardev":"charredir1","id":"redir1","bus":"usb.0","port":"4"}'""")


def test_tpm_matches_libvirt() -> None:
    # tpm-external and tpm-emulator-tpm2-enc (socket path of libvirt's own swtpm)
    ext = Tpm(TpmModel.TIS, TpmBackend.EXTERNAL, None, socket="/tmp/path.sock")
    assert argv_channel.tpm_argv(ext, RUN) == [
        "-chardev", "socket,id=chrtpm,path=/tmp/path.sock",
        "-tpmdev", "emulator,id=tpm-tpm0,chardev=chrtpm"]
    assert argv_channel.tpm_device(ext) == _libvirt(
        """-device '{"driver":"tpm-tis","tpmdev":"tpm-tpm0","id":"tpm0"}'""")
    crb = Tpm(TpmModel.CRB, TpmBackend.EMULATOR, TpmVersion.V2_0)
    assert argv_channel.tpm_argv(crb, RUN)[1] == f"socket,id=chrtpm,path={RUN}/swtpm.sock"
    assert argv_channel.tpm_device(crb) == _libvirt(
        """-device '{"driver":"tpm-crb","tpmdev":"tpm-tpm0","id":"tpm0"}'""")


def test_interface_extras_match_libvirt() -> None:
    # net-virtio-disable-offloads: the switches in libvirt's order
    off = NetTuning(
        host=tuple((n, False) for n in ("csum", "gso", "tso4", "tso6", "ecn", "ufo", "mrg_rxbuf")),
        guest=tuple((n, False) for n in ("csum", "tso4", "tso6", "ecn", "ufo")),
    )
    props = argv_netextras.tuning_props_before_mq(off)
    assert ",".join(f"{k}={'on' if v else 'off'}" for k, v in props.items()) == (
        "csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,mrg_rxbuf=off,"
        "guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off")
    # net-virtio-device (txmode iothread -> tx=bh), net-virtio-rxtxqueuesize
    t = NetTuning(txmode=TxMode.IOTHREAD, rx_queue_size=512, tx_queue_size=1024)
    assert argv_netextras.tuning_props_before_mq(t) == {"tx": "bh"}
    assert argv_netextras.tuning_props_after_mq(t) == {"rx_queue_size": 512,
                                                       "tx_queue_size": 1024}
    # pci-rom / pci-rom-disabled: rombar=1, romfile=..., romfile= (empty)
    assert argv_netextras.rom_props(Rom(bar=True)) == {"rombar": 1}
    assert argv_netextras.rom_props(Rom(file="/etc/fake/bootrom.bin")) == {
        "romfile": "/etc/fake/bootrom.bin"}
    assert argv_netextras.rom_props(Rom(enabled=False)) == {"romfile": ""}
    assert argv_netextras.rom_props(None) == {}


def test_virtio_options_match_libvirt() -> None:
    # virtio-options-{memballoon,rng,input}-{ats,packed}: the options right after "driver"
    from tapvirt.conf.devices.virtio import VirtioOptions

    ats = VirtioOptions(ats=True)
    assert argv_misc.memballoon_device(Memballoon(BalloonModel.VIRTIO, virtio=ats)) == _libvirt(
        """-device '{"driver":"virtio-balloon-pci","ats":true,"id":"balloon0","bus":"pci.0","addr":"0x2"}'""")
    rng = Rng(RngModel.VIRTIO, RngBackend.RANDOM, "/dev/random",
              virtio=VirtioOptions(packed=False))
    assert argv_misc.rng_device(rng, "rng1") == _libvirt(
        """-device '{"driver":"virtio-rng-pci","packed":false,"rng":"objrng1","id":"rng1","bus":"pci.0","addr":"0x3"}'""")
    mouse = Input(InputType.MOUSE, InputBus.VIRTIO, virtio=VirtioOptions(iommu=True))
    assert argv_graphics.input_device(mouse, "input0") == _libvirt(
        """-device '{"driver":"virtio-mouse-pci","iommu_platform":true,"id":"input0","bus":"pci.0","addr":"0x2"}'""")
    every = VirtioOptions(True, True, True, True)  # virtio-options: libvirt's key order
    assert list(argv_misc.memballoon_device(Memballoon(virtio=every)) or {}) == [
        "driver", "iommu_platform", "ats", "packed", "page-per-vq", "id"]


def test_socket_netdevs_match_libvirt() -> None:
    from tapvirt.conf.devices.interface import Interface, InterfaceType
    from tapvirt.conf.devices.netsocket import SocketSource
    from tapvirt.qemu.argv import NetBackend, netdev, socket_options

    def ours(itype: InterfaceType, src: SocketSource, alias: str) -> dict[str, Any]:
        iface = Interface(itype, "52:54:00:8c:b9:05", source=src, alias=alias)
        return netdev(NetBackend(alias, "socket", socket=socket_options(iface)))

    # net-vhostuser.x86_64-latest.args (a server without an address), user-aliases
    assert ours(InterfaceType.SERVER, SocketSource(None, 2015), "net2") == json.loads(
        '{"type":"socket","listen":":2015","id":"hostnet2"}')
    assert ours(InterfaceType.CLIENT, SocketSource("127.0.0.1", 1234),
                "ua-AndAlsoClientMode") == json.loads(
        '{"type":"socket","connect":"127.0.0.1:1234","id":"hostua-AndAlsoClientMode"}')
    # net-mcast.args, net-udp.args (key=value form: -netdev socket,mcast=...,id=hostnet0)
    assert ours(InterfaceType.MCAST, SocketSource("192.0.0.1", 5558), "net0") == {
        "type": "socket", "mcast": "192.0.0.1:5558", "id": "hostnet0"}
    assert ours(InterfaceType.UDP, SocketSource("192.168.10.1", 5555, "192.168.10.1", 5556),
                "net0") == {"type": "socket", "udp": "192.168.10.1:5555",
                            "localaddr": "192.168.10.1:5556", "id": "hostnet0"}
