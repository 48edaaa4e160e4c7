"""The typed, immutable domain definition: what tapvirt understands of libvirt XML.

Everything after parsing (checks, argv, lifecycle, the preparer) consumes these
types. They are frozen dataclasses with tuples for sequences, so a `Domain` can be
hashed, compared and shared freely. `tapvirt.conf.parse` builds them (and applies
libvirt's semantic rules); `tapvirt.conf.format` turns them back into canonical XML.

The `<domain>`-level types live here; each device family's types live in its module
under `tapvirt.conf.devices` and are re-exported here, so `from tapvirt.conf.model import
Disk` keeps working. Modes that exclude each other are one enum, not two optional fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tapvirt.conf.devices import Devices
from tapvirt.conf.devices.chardev import Chardev, ChardevKind, ChardevType
from tapvirt.conf.devices.disk import Disk, DiskBus, DiskDevice, DiskFormat, DiskType
from tapvirt.conf.devices.interface import (
    BridgeSource,
    DirectMode,
    DirectSource,
    Driver,
    DriverName,
    Interface,
    InterfaceType,
    LinkState,
    NicModel,
    Target,
)
from tapvirt.conf.domain.clock import Clock, ClockBasis, ClockOffset, TickPolicy, Timer, TimerName
from tapvirt.conf.domain.cpu import Cpu
from tapvirt.conf.domain.features import Features, Hyperv, HypervMode, IoapicDriver, Kvm
from tapvirt.conf.domain.idmap import IdMap
from tapvirt.conf.domain.memhotplug import MaxMemory
from tapvirt.conf.domain.memorybacking import MemoryBacking
from tapvirt.conf.domain.metadata import Metadata
from tapvirt.conf.domain.osboot import OsBoot
from tapvirt.conf.domain.pm import Pm
from tapvirt.conf.domain.resource import Resource
from tapvirt.conf.domain.seclabel import Seclabel
from tapvirt.conf.domain.sysinfo import Sysinfo
from tapvirt.conf.domain.tuning import CpuTune, NumaTune

__all__ = [
    "BootDev",
    "BridgeSource",
    "Chardev",
    "ChardevKind",
    "ChardevType",
    "Clock",
    "ClockBasis",
    "ClockOffset",
    "Devices",
    "DirectMode",
    "DirectSource",
    "Disk",
    "DiskBus",
    "DiskDevice",
    "DiskFormat",
    "DiskType",
    "Domain",
    "DomainType",
    "Driver",
    "DriverName",
    "Features",
    "Hyperv",
    "HypervMode",
    "Interface",
    "InterfaceType",
    "IoapicDriver",
    "Kvm",
    "LifecycleAction",
    "LinkState",
    "Metadata",
    "NicModel",
    "Os",
    "Pm",
    "Target",
    "TickPolicy",
    "Timer",
    "TimerName",
]


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
    firmware: str | None = None  # <os firmware='bios|efi'>
    boot_options: OsBoot = field(default_factory=OsBoot)  # loader, nvram, bootmenu, ...


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str  # lower-case canonical 8-4-4-4-12; generated if absent
    type: DomainType = DomainType.QEMU
    title: str | None = None
    description: str | None = None
    metadata: Metadata | None = None
    max_memory: MaxMemory | None = None  # <maxMemory slots>: memory hotplug
    memory_kib: int = 262144  # with NUMA cells: their sum plus the memory devices
    current_memory_kib: int | None = None
    memory_backing: MemoryBacking | None = None
    vcpus: int = 1  # the maximum
    vcpus_current: int | None = None  # <vcpu current=...>: online at boot, when fewer
    vcpu_cpuset: str | None = None  # <vcpu cpuset=...> as written (kept, not applied)
    vcpu_placement_auto: bool = False  # <vcpu placement='auto'>: numad's (kept, not applied)
    iothreads: int | None = None
    cputune: CpuTune | None = None
    numatune: NumaTune | None = None
    resource: Resource | None = None
    sysinfo: Sysinfo | None = None
    os: Os = field(default_factory=Os)
    features: Features = field(default_factory=Features)
    cpu: Cpu | None = None
    clock: Clock | None = None
    on_poweroff: LifecycleAction = LifecycleAction.DESTROY
    on_reboot: LifecycleAction = LifecycleAction.RESTART
    on_crash: LifecycleAction = LifecycleAction.DESTROY
    pm: Pm | None = None
    devices: Devices = field(default_factory=Devices)
    seclabels: tuple[Seclabel, ...] = ()
    idmap: IdMap | None = None  # kept, no effect for QEMU (conf.domain.idmap)
    # <domain id=N> as given: ignored like libvirt, not kept (only for the warning)
    ignored_id: int | None = field(default=None, compare=False)
