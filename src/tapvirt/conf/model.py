"""The typed, immutable domain definition: what tapvirt understands of libvirt XML.

Everything after parsing (checks, argv, lifecycle, the preparer) consumes these
types. They are frozen dataclasses with tuples for sequences, so a `Domain` can be
hashed, compared and shared freely. `tapvirt.conf.parse` builds them (and applies
libvirt's semantic rules); `tapvirt.conf.format` turns them back into canonical XML.

Modes that exclude each other are one enum, not two optional fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class DomainType(StrEnum):
    QEMU = "qemu"  # TCG
    KVM = "kvm"


class LifecycleAction(StrEnum):
    DESTROY = "destroy"
    RESTART = "restart"
    PRESERVE = "preserve"
    RENAME_RESTART = "rename-restart"


class BootDev(StrEnum):
    HD = "hd"
    CDROM = "cdrom"
    NETWORK = "network"
    FD = "fd"


@dataclass(frozen=True)
class Os:
    type: str = "hvm"
    arch: str | None = None  # e.g. x86_64
    machine: str | None = None  # e.g. pc, q35, pc-i440fx-7.2
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot: tuple[BootDev, ...] = ()


@dataclass(frozen=True)
class Features:
    acpi: bool = False


class DiskBus(StrEnum):
    VIRTIO = "virtio"
    SATA = "sata"
    SCSI = "scsi"


class DiskFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


class DiskDevice(StrEnum):
    DISK = "disk"
    CDROM = "cdrom"


@dataclass(frozen=True)
class Disk:
    source_file: str
    target_dev: str  # vda, sda, ...
    target_bus: DiskBus
    format: DiskFormat = DiskFormat.RAW
    device: DiskDevice = DiskDevice.DISK
    readonly: bool = False
    boot_order: int | None = None
    alias: str | None = None  # assigned stably at parse: virtio-disk0, sata0-0-0, ...


class ChardevKind(StrEnum):
    SERIAL = "serial"
    CONSOLE = "console"


class ChardevType(StrEnum):
    PTY = "pty"
    FILE = "file"
    UNIX = "unix"
    NULL = "null"


@dataclass(frozen=True)
class Chardev:
    kind: ChardevKind
    type: ChardevType
    path: str | None = None  # file and unix only
    unix_listen: bool = True  # unix: <source mode='bind'> (True) or 'connect'
    port: int = 0  # <target port='N'/>


class InterfaceType(StrEnum):
    ETHERNET = "ethernet"  # a tap: managed (tapvirt creates it) or precreated (managed='no')
    USER = "user"  # QEMU user-mode networking (slirp)
    BRIDGE = "bridge"  # a tap on a bridge: created by tapvirt, or by qemu-bridge-helper
    DIRECT = "direct"  # a macvtap that tapvirt creates on <source dev>


class NicModel(StrEnum):
    VIRTIO = "virtio"
    E1000 = "e1000"
    E1000E = "e1000e"
    RTL8139 = "rtl8139"

    @property
    def vnet_hdr(self) -> bool:
        """Whether QEMU's device model can use a virtio-net header on the tap fd."""
        return self in (NicModel.VIRTIO, NicModel.E1000E)


class DirectMode(StrEnum):
    VEPA = "vepa"
    BRIDGE = "bridge"
    PRIVATE = "private"
    PASSTHROUGH = "passthrough"


class DriverName(StrEnum):
    QEMU = "qemu"
    VHOST = "vhost"


class LinkState(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Target:
    """`<target dev='...' managed='...'/>`. `managed` is a tristate: None when absent."""

    dev: str
    managed: bool | None = None

    @property
    def unmanaged(self) -> bool:
        return self.managed is False


@dataclass(frozen=True)
class BridgeSource:
    bridge: str


@dataclass(frozen=True)
class DirectSource:
    dev: str
    mode: DirectMode = DirectMode.VEPA


@dataclass(frozen=True)
class Driver:
    name: DriverName | None = None
    queues: int | None = None  # 1..256 when given


@dataclass(frozen=True)
class Interface:
    type: InterfaceType
    mac: str  # lower-case aa:bb:cc:dd:ee:ff, unicast; generated 52:54:00:xx:xx:xx if absent
    model: NicModel = NicModel.VIRTIO
    # False: <model> was absent and the parser filled in the default, rtl8139 like libvirt on
    # x86 (tapvirt.conf.rules.DEFAULT_MODEL); the canonical XML then omits <model>
    model_given: bool = True
    target: Target | None = None
    source: BridgeSource | DirectSource | None = None
    driver: Driver | None = None
    mtu: int | None = None  # 68..65521
    link_state: LinkState | None = None
    alias: str | None = None  # net0, net1, ... assigned stably, or user 'ua-...'
    boot_order: int | None = None
    script: str | None = None
    backend_tap: str | None = None  # <backend tap='/path'/>: the tun clone device to open

    @property
    def queues(self) -> int:
        """The number of queues (= fds) this interface needs: at least 1."""
        if self.driver is None or self.driver.queues is None:
            return 1
        return max(1, self.driver.queues)

    @property
    def unmanaged(self) -> bool:
        return self.target is not None and self.target.unmanaged

    @property
    def dev(self) -> str | None:
        return self.target.dev if self.target is not None else None


@dataclass(frozen=True)
class Devices:
    emulator: str | None = None
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    serials: tuple[Chardev, ...] = ()
    consoles: tuple[Chardev, ...] = ()


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str  # lower-case canonical 8-4-4-4-12; generated if absent
    type: DomainType = DomainType.QEMU
    title: str | None = None
    description: str | None = None
    memory_kib: int = 262144
    current_memory_kib: int | None = None
    vcpus: int = 1
    os: Os = field(default_factory=Os)
    features: Features = field(default_factory=Features)
    on_poweroff: LifecycleAction = LifecycleAction.DESTROY
    on_reboot: LifecycleAction = LifecycleAction.RESTART
    on_crash: LifecycleAction = LifecycleAction.DESTROY
    devices: Devices = field(default_factory=Devices)
