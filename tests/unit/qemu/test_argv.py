"""The pure argv builder: libvirt 9.0's network arguments, the whole command, fd numbering."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

from tapvirt.conf.model import (
    BootDev,
    Chardev,
    ChardevKind,
    ChardevType,
    Devices,
    Disk,
    DiskBus,
    DiskDevice,
    Domain,
    DomainType,
    Features,
    LifecycleAction,
    LinkState,
    NicModel,
    Os,
)
from tapvirt.conf.parse import parse_domain
from tapvirt.qemu.argv import (
    NetBackend,
    build_argv,
    fd_layout,
    link_state_commands,
    netdev,
    nic_device,
    remap_actions,
)
from tests.unit.qemu.helpers import UUID, domain, tap, user

DATA = Path(__file__).resolve().parents[2] / "data" / "xml2argv"


def _net(argv: list[str]) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        if (a in ("-netdev", "-device") and '"netdev"' in argv[i + 1]) or a == "-netdev":
            out.append(f"{a} {argv[i + 1]}")
    return out


def test_oracle_01_single_tap() -> None:
    dom = domain(tap())
    argv = build_argv(dom, [NetBackend("net0", "tap", (17,))], qmp_socket="/q")
    # libvirt 9.0 + QEMU 7.2 (oracle sample 01), minus the PCI address tapvirt leaves to QEMU
    assert _net(argv) == [
        '-netdev {"type":"tap","fd":"3","id":"hostnet0"}',
        '-device {"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0",'
        '"mac":"52:54:00:11:11:11"}',
    ]


def test_oracle_03_multiqueue_mtu_link_down() -> None:
    dom = domain(tap(queues=4, mtu=9000, link_state=LinkState.DOWN))
    argv = build_argv(dom, [NetBackend("net0", "tap", (20, 21, 22, 23), (), 9000)],
                      qmp_socket="/q")
    assert _net(argv) == [
        '-netdev {"type":"tap","fds":"3:4:5:6","id":"hostnet0"}',
        '-device {"driver":"virtio-net-pci","mq":true,"vectors":10,"host_mtu":9000,'
        '"netdev":"hostnet0","id":"net0","mac":"52:54:00:11:11:11"}',
    ]
    assert link_state_commands(dom) == [
        {"execute": "set_link", "arguments": {"name": "net0", "up": False}}]


def test_oracle_09b_user_and_models() -> None:
    dom = domain(user(), tap("t1", "52:54:00:22:22:22", model=NicModel.E1000),
                 tap("t2", "52:54:00:33:33:33", model=NicModel.RTL8139),
                 tap("t3", "52:54:00:44:44:44", model=NicModel.E1000E, boot_order=2))
    backends = [NetBackend("net0", "user"), NetBackend("net1", "tap", (9,)),
                NetBackend("net2", "tap", (8,)), NetBackend("net3", "tap", (7,), (), 1400)]
    net = _net(build_argv(dom, backends, qmp_socket="/q"))
    assert net[0] == '-netdev {"type":"user","id":"hostnet0"}'
    assert '"driver":"e1000","netdev":"hostnet1"' in net[3]
    assert net[4] == '-netdev {"type":"tap","fd":"4","id":"hostnet2"}'
    assert '"driver":"rtl8139"' in net[5]
    # host_mtu is virtio-only; bootindex goes on any model
    assert json.loads(net[7].split(" ", 1)[1]) == {
        "driver": "e1000e", "netdev": "hostnet3", "id": "net3", "mac": "52:54:00:44:44:44",
        "bootindex": 2}


def test_whole_command_line() -> None:
    dom = Domain(
        "demo,1", UUID, type=DomainType.KVM, memory_kib=131072, vcpus=2,
        os=Os(machine="q35", kernel="/k", initrd="/i", cmdline="console=ttyS0 ip=x"),
        features=Features(acpi=True), on_reboot=LifecycleAction.DESTROY,
        devices=Devices(
            disks=(Disk("/d.qcow2", "vda", DiskBus.VIRTIO, alias="virtio-disk0",
                        readonly=True),
                   Disk("/cd.iso", "sdb", DiskBus.SATA, device=DiskDevice.CDROM,
                        boot_order=1)),
            serials=(Chardev(ChardevKind.SERIAL, ChardevType.FILE, "/log,x"),),
            consoles=(Chardev(ChardevKind.CONSOLE, ChardevType.PTY),)),
    )
    argv = build_argv(dom, [], qmp_socket="/run/q.sock")
    text = " ".join(argv)
    assert argv[:4] == ["qemu-system-x86_64", "-name", "guest=demo,,1", "-S"]
    for piece in ("-machine q35,usb=off ", "-accel kvm", "-m size=131072k",
                  "-smp 2,sockets=2,cores=1,threads=1", f"-uuid {UUID}",
                  "-no-user-config -nodefaults -display none",
                  "-chardev socket,id=charmonitor,path=/run/q.sock,server=on,wait=off "
                  "-mon chardev=charmonitor,id=monitor,mode=control",
                  "-no-reboot", "-kernel /k -initrd /i", "-chardev file,id=charserial0,"
                  "path=/log,,x", '"driver":"isa-serial","chardev":"charserial0"',
                  '"node-name":"virtio-disk0-format","read-only":true',
                  '{"driver":"ide-cd","bus":"ide.1","drive":"disk1-format","id":"disk1",'
                  '"bootindex":1}'):
        assert piece in text, piece
    assert argv[argv.index("-append") + 1] == "console=ttyS0 ip=x"
    assert "acpi=off" not in text and "-boot" not in argv
    assert text.count("isa-serial") == 1  # the console is serial0, not a second device


def test_defaults_tcg_acpi_off_boot_order() -> None:
    dom = replace(domain(user(), user()), os=Os(boot=(BootDev.NETWORK, BootDev.HD)))
    argv = build_argv(dom, [NetBackend("net0", "user"), NetBackend("net1", "user")],
                      qmp_socket="/q")
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-machine") + 1] == "pc,usb=off,acpi=off"
    # libvirt's way: <os><boot> becomes per-device bootindex (the first NIC here), never
    # -boot order= (the PC BIOS holds only three devices in its own order)
    assert "-boot" not in argv
    nics = [json.loads(a) for a in argv if a.startswith('{"driver":"e1000"')
            or a.startswith('{"driver":"virtio-net')]
    assert [n.get("bootindex") for n in nics] == [1, None]


def test_fd_numbers_are_deterministic_or_the_launchers() -> None:
    backends = [NetBackend("net0", "tap", (40, 41), (50, 51)), NetBackend("net1", "user"),
                NetBackend("net2", "tap", (12,))]
    assert fd_layout(backends) == [(40, 3), (41, 4), (50, 5), (51, 6), (12, 7)]
    assert fd_layout(backends, None) == [(40, 40), (41, 41), (50, 50), (51, 51), (12, 12)]
    dom = domain(tap(queues=2), user(), tap("t2", "52:54:00:11:11:12"))
    argv = build_argv(dom, backends, qmp_socket="/q", fd_base=None)
    assert '{"type":"tap","fds":"40:41","vhost":true,"vhostfds":"50:51","id":"hostnet0"}' in argv


def test_remap_actions_give_the_child_the_planned_numbers() -> None:
    # Real spawn: parent fds that collide with the targets are moved safely.
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        pairs = [(w2, 3), (w1, 4)]
        child = os.posix_spawn(
            "/bin/sh", ["sh", "-c", "echo two >&3; echo one >&4"], dict(os.environ),
            file_actions=remap_actions(pairs))
        os.close(w1)
        os.close(w2)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(r1, 100) == b"one\n" and os.read(r2, 100) == b"two\n"
    finally:
        for fd in (r1, r2, w1, w2):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_qemu_accepts_the_command_line(tmp_path: object) -> None:
    # QEMU parses our argv (user NIC, every model, serial, disks) up to the paused state.
    dom = replace(domain(user(), user("52:54:00:99:99:02", model=NicModel.E1000),
                         user("52:54:00:99:99:03", model=NicModel.E1000E),
                         user("52:54:00:99:99:04", model=NicModel.RTL8139)),
                  memory_kib=65536)
    backends = [NetBackend(f"net{i}", "user") for i in range(4)]
    argv = build_argv(dom, backends, qmp_socket=f"{tmp_path}/q.sock")
    argv[argv.index("-mon"):argv.index("-mon") + 2] = []
    argv[argv.index("-chardev"):argv.index("-chardev") + 2] = ["-qmp", "stdio"]
    proc = subprocess.run(argv, input='{"execute":"qmp_capabilities"}\n'
                          '{"execute":"query-status"}\n{"execute":"quit"}\n',
                          capture_output=True, text=True, timeout=60, check=False)
    assert '"status": "prelaunch"' in proc.stdout, proc.stderr


def test_qemu_accepts_a_full_domain(tmp_path: Path) -> None:
    """Disks on every bus (incl. a second AHCI controller), serials and console: QEMU parses
    the whole command line up to the paused state and has every disk."""
    for name in ("root.qcow2",):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / name), "1M"],
                       check=True)
    for name in ("install,1.iso", "seven.raw", "data.raw"):
        (tmp_path / name).write_bytes(b"\0" * 65536)
    xml = (DATA / "full-domain.xml").read_text()
    xml = xml.replace("/img/", f"{tmp_path}/").replace("/var/cache/tapvirt-guest/",
                                                        f"{tmp_path}/")
    xml = xml.replace("/run/user/1000/tapvirt/full-domain/", f"{tmp_path}/")
    xml = xml.replace("/run/user/1000/", f"{tmp_path}/")
    dom = parse_domain(xml)
    # no NIC (no tap here) and no kernel (a fake one would stop QEMU before QMP answers)
    dom = replace(dom, devices=replace(dom.devices, interfaces=()),
                  os=replace(dom.os, kernel=None, initrd=None, cmdline=None))
    argv = build_argv(dom, [], qmp_socket=str(tmp_path / "q.sock"))
    i = argv.index("-mon")
    argv[i - 2:i + 2] = ["-qmp", "stdio"]
    proc = subprocess.run(argv, input='{"execute":"qmp_capabilities"}\n'
                          '{"execute":"query-block"}\n{"execute":"quit"}\n',
                          capture_output=True, text=True, timeout=60, check=False)
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    blocks = next(r["return"] for r in replies if isinstance(r.get("return"), list))
    # virtio-blk reports its backend path: /machine/peripheral/ALIAS/virtio-backend
    qdevs = {b["qdev"].removeprefix("/machine/peripheral/").split("/")[0] for b in blocks}
    # the SCSI disk sits on the implicit controller, lsilogic as with libvirt: scsi0-0-1
    assert qdevs == {"virtio-disk0", "sata0-0-0", "sata1-0-1", "scsi0-0-1"}, proc.stderr


def test_hotplug_objects_match_libvirt_sample_13() -> None:
    # libvirt's QMP on hotplug of an unmanaged 2-queue tap (oracle sample 13), minus the
    # PCI address: the same builders serve netdev_add/device_add with getfd names.
    spec = NetBackend("net1", "tap", (7, 8))
    assert netdev(spec, {7: "tapfd-net10", 8: "tapfd-net11"}) == {
        "type": "tap", "fds": "tapfd-net10:tapfd-net11", "id": "hostnet1"}
    iface = tap(queues=2, mac="52:54:00:13:13:02")
    assert nic_device(iface, "net1", spec) == {
        "driver": "virtio-net-pci", "mq": True, "vectors": 6, "netdev": "hostnet1",
        "id": "net1", "mac": "52:54:00:13:13:02"}


def test_root_bus_keeps_the_machines_name_whatever_its_alias() -> None:
    # libvirt's user-aliases2: QEMU has no bus 'ua-...'; the root is always pcie.0 / pci.0
    dom = parse_domain(
        "<domain type='qemu'><name>g</name><memory unit='MiB'>64</memory><os>"
        "<type arch='x86_64' machine='q35'>hvm</type></os><devices>"
        "<controller type='pci' index='0' model='pcie-root'><alias name='ua-Root'/>"
        "</controller><interface type='user'><model type='virtio'/></interface>"
        "</devices></domain>")
    argv = build_argv(dom, [NetBackend("net0", "user")], qmp_socket="/q")
    buses = {json.loads(a).get("bus") for a in argv if a.startswith('{"driver"')}
    assert "ua-Root" not in buses and "pcie.0" in buses
