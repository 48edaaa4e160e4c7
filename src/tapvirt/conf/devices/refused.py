"""What cannot work for an unprivileged QEMU, refused by name, each with its own code.

libvirt does these things with root on the host side or with its own drivers (a network
driver making taps, VFIO, tc, ebtables, Open vSwitch, host addresses, storage pools, AMD
SEV). tapvirt's unprivileged side has none of it, so a document asking for them is
refused before anything else is looked at, naming the element, why it cannot work, and
what to do instead — usually a step for the privileged side (tapvirt-prep or root's
`ip`/`tc`/`ovs-vsctl`) plus the element to use.
Nothing here is silently dropped: dropping bandwidth limits or a packet filter would run
the guest with less isolation than its owner asked for.

`refuse_unprivileged` runs on the raw document first, so these named refusals win over
the generic `unsupported-element` of the family parsers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

__all__ = ["refuse_unprivileged"]

_L = "conf"

INTERFACE_NETWORK = define(
    "interface-network",
    "<interface type='network'>: a libvirt virtual network needs libvirt's privileged "
    "network driver", layer=_L)
INTERFACE_HOSTDEV = define(
    "interface-hostdev",
    "<interface type='hostdev'>: VFIO assignment of a host NIC needs root", layer=_L)
HOSTDEV = define(
    "hostdev-unprivileged",
    "<hostdev>: passing a host PCI/USB/SCSI/mediated device through needs root (VFIO, "
    "device nodes)", layer=_L)
INTERFACE_BANDWIDTH = define(
    "interface-bandwidth",
    "<bandwidth> on an interface: traffic shaping with tc on the host device needs root",
    layer=_L)
INTERFACE_FILTERREF = define(
    "interface-filterref",
    "<filterref> on an interface: libvirt's nwfilter rules (ebtables/iptables) need root",
    layer=_L)
INTERFACE_VLAN = define(
    "interface-vlan",
    "<vlan> on an interface: VLAN tagging of the host port (Open vSwitch, bridge VLAN "
    "filtering) needs root", layer=_L)
INTERFACE_VIRTUALPORT = define(
    "interface-virtualport",
    "<virtualport> on an interface: Open vSwitch or 802.1Qbg/Qbh port setup needs root",
    layer=_L)
INTERFACE_HOST_ADDRESS = define(
    "interface-host-address",
    "<source><ip>/<route> on an ethernet interface: host-side addresses and routes need "
    "root", layer=_L)
DISK_NVME = define(
    "disk-nvme", "<disk type='nvme'>: QEMU's userspace NVMe driver needs VFIO (root)",
    layer=_L)
DISK_VOLUME = define(
    "disk-volume",
    "<disk type='volume'>: a storage pool volume needs libvirt's storage driver", layer=_L)
DISK_NETWORK = define(
    "disk-network",
    "<disk type='network'> of a protocol other than nbd (or nbd over TLS): tapvirt does "
    "not build those network block devices", layer=_L)
LAUNCH_SECURITY = define(
    "launch-security",
    "<launchSecurity>: AMD SEV/SEV-SNP or IBM PV memory encryption needs KVM and host "
    "firmware support", layer=_L)

_PREP_TAP = ("as root, have the privileged side make a tap for this user{bridge}: "
             "tapvirt-prep tap TAP --user USER{bridge_opt}{mac}; then use <interface "
             "type='ethernet'> with <target dev='TAP' managed='no'/>")


def _mac(iface: etree._Element) -> str:
    mac = iface.find("mac")
    address = mac.get("address") if mac is not None else None
    return f" --guest-mac {address[:17]}" if address else ""


def _prep_tap(iface: etree._Element, bridge: str | None) -> str:
    return _PREP_TAP.format(
        bridge=f" on bridge {bridge}" if bridge else "",
        bridge_opt=f" --bridge {bridge}" if bridge else "",
        mac=_mac(iface),
    )


def _interface(r: Reader, el: etree._Element) -> None:
    itype = el.get("type")
    source = el.find("source")
    if itype == "network":
        net = (source.get("network") if source is not None else None) or "?"
        shown = net[:40]
        bridge = "virbr0" if net == "default" else f"the bridge of network '{shown}'"
        raise r.fail(
            INTERFACE_NETWORK, el,
            f"<interface type='network'> (network '{shown}') needs libvirt's network driver, "
            "a privileged daemon that creates the tap and enslaves it to the network's "
            "bridge; tapvirt runs unprivileged and has no network driver",
            _prep_tap(el, bridge) + f" (or type='bridge' with <source bridge='{bridge}'/> "
            "if qemu-bridge-helper allows it)",
            attr="type",
        )
    if itype == "hostdev":
        raise r.fail(
            INTERFACE_HOSTDEV, el,
            "<interface type='hostdev'> assigns a host NIC (an SR-IOV VF) to the guest with "
            "VFIO: unbinding it from its driver, /dev/vfio access and locked memory need root",
            "use a macvtap on that VF instead: as root, tapvirt-prep macvtap NAME --user USER "
            f"--link VF{_mac(el).replace('--guest-mac', '--mac') or ' --mac MAC'}; then "
            "<interface type='ethernet'> with <target dev='NAME' managed='no'/>",
            attr="type",
        )
    dev = "the tap"
    target = el.find("target")
    if target is not None and target.get("dev"):
        dev = str(target.get("dev"))[:15]
    for child in el:
        tag = child.tag
        if tag == "bandwidth":
            raise r.fail(
                INTERFACE_BANDWIDTH, child,
                "Network bandwidth tuning is not available in session mode (libvirt's "
                "message): limits are tc qdiscs on the host device, which need CAP_NET_ADMIN",
                f"remove <bandwidth> and have root shape the traffic of {dev}, e.g. tc qdisc "
                f"add dev {dev} root tbf rate 10mbit burst 32kbit latency 400ms",
            )
        if tag == "filterref":
            name = str(child.get("filter") or "?")[:40]
            raise r.fail(
                INTERFACE_FILTERREF, child,
                f"network filter '{name}' is a set of ebtables/iptables rules libvirt "
                "installs on the host for the interface; only root can install them",
                f"remove <filterref> and have root filter the traffic of {dev} (e.g. "
                "nftables rules in the bridge family on its port); running without the "
                "filter silently would give the guest less isolation than asked for",
            )
        if tag == "vlan":
            tags = [str(t.get("id"))[:5] for t in child.iterfind("tag")] or ["N"]
            raise r.fail(
                INTERFACE_VLAN, child,
                "VLAN tags are applied on the host side of the interface (an Open vSwitch "
                "port or bridge VLAN filtering), which needs root",
                f"remove <vlan> and have root put {dev} in the VLAN, e.g. on a bridge with "
                f"vlan_filtering 1: bridge vlan add dev {dev} vid {tags[0]} pvid untagged",
            )
        if tag == "virtualport":
            kind = str(child.get("type") or "openvswitch")[:40]
            raise r.fail(
                INTERFACE_VIRTUALPORT, child,
                f"<virtualport type='{kind}'> makes libvirt configure the host switch port "
                "(Open vSwitch, 802.1Qbg/Qbh port profiles), which needs root",
                f"remove <virtualport> and have root attach {dev} to the switch, e.g. "
                f"ovs-vsctl add-port BRIDGE {dev}; then use <interface type='ethernet'> "
                f"with <target dev='{dev}' managed='no'/>",
            )
    if itype == "ethernet" and source is not None:
        for child in source:
            if child.tag in ("ip", "route"):
                what = "address" if child.tag == "ip" else "route"
                raise r.fail(
                    INTERFACE_HOST_ADDRESS, child,
                    f"a host-side {what} (<source><{child.tag}>) is added to the host "
                    "device when the guest starts, which needs CAP_NET_ADMIN",
                    f"remove it from <source> and have root configure {dev}, e.g. ip addr "
                    f"add ADDR/PREFIX dev {dev} (or ip route add NET via GW dev {dev})",
                )


def _hostdev(r: Reader, el: etree._Element) -> None:
    kind = str(el.get("type") or el.get("mode") or "?")[:20]
    fixes = {
        "usb": "to give the guest a USB device, redirect it from a SPICE or usbredir client "
               "instead: <redirdev bus='usb' type='spicevmc'/> or type='tcp'",
        "scsi": "use the SCSI device's block device as a disk instead: <disk type='block' "
                "device='lun'> (the user needs access to it)",
        "pci": "there is no unprivileged PCI passthrough; for a NIC, use a macvtap on it "
               "made by the privileged side (tapvirt-prep macvtap)",
    }
    raise r.fail(
        HOSTDEV, el,
        f"<hostdev type='{kind}'> passes a host device to the guest (VFIO, raw device "
        "nodes, locked memory): an unprivileged QEMU cannot take a device from the host",
        fixes.get(kind, "remove the <hostdev>") + "; or run this guest with libvirt as root",
        attr="type" if el.get("type") else None,
    )


def _disk(r: Reader, el: etree._Element) -> None:
    if el.get("type") == "volume":
        source = el.find("source")
        pool = str(source.get("pool") if source is not None else None)[:40]
        volume = str(source.get("volume") if source is not None else None)[:40]
        raise r.fail(
            DISK_VOLUME, el,
            f"<disk type='volume'> (volume '{volume}' of pool '{pool}') is resolved by "
            "libvirt's storage driver, which tapvirt does not have",
            f"name the volume's file or block device directly: virsh vol-path --pool {pool} "
            f"{volume} prints it; use <disk type='file'><source file='PATH'/> (or "
            "type='block' with <source dev='PATH'/>)",
            attr="type",
        )
    if el.get("type") == "network":
        _network_disk(r, el)
    if el.get("type") == "nvme":
        raise r.fail(
            DISK_NVME, el,
            "<disk type='nvme'> uses QEMU's userspace NVMe driver, which takes the whole PCI "
            "device with VFIO: that needs root",
            "use the namespace's block device instead: <disk type='block'><source "
            "dev='/dev/nvme0n1'/> (the user needs access to it)",
            attr="type",
        )


# QEMU 7.2 dropped these block drivers (sheepdog in 6.0, vxhs in 5.1): no workaround
_GONE = ("sheepdog", "vxhs")
# QEMU's drivers for these are modules of Debian's qemu-block-extra package (block-curl,
# block-iscsi, block-rbd, block-gluster, block-nfs, block-ssh); tapvirt does not build them
_EXTRA = {"http": "curl", "https": "curl", "ftp": "curl", "ftps": "curl", "tftp": "curl",
          "iscsi": "iscsi", "rbd": "rbd", "gluster": "gluster", "nfs": "nfs", "ssh": "ssh"}


def _network_disk(r: Reader, el: etree._Element) -> None:
    source = el.find("source")
    if source is None or source.get("protocol") is None:
        return  # the disk family says what is missing
    proto = str(source.get("protocol"))[:20]
    if proto in _GONE:
        raise r.fail(
            DISK_NETWORK, el,
            f"<disk type='network'> with protocol '{proto}': QEMU 7.2 has no {proto} block "
            "driver any more", "copy the image to a file or block device the user can read "
            "and use <disk type='file'> (or 'block')", attr="type",
        )
    if proto == "nbd":
        if source.get("tls") == "yes":
            raise r.fail(
                DISK_NETWORK, source,
                "NBD over TLS needs x509 certificates that libvirt takes from its "
                "privileged configuration (qemu.conf nbd_tls_x509_cert_dir); tapvirt has "
                "no place for them yet",
                "reach the server without TLS (tls='no', e.g. over a unix socket or an SSH "
                "tunnel to one: <host transport='unix' socket='/PATH'/>)", attr="tls",
            )
        return  # the disk family builds nbd
    module = _EXTRA.get(proto)
    where = (f"QEMU's {proto} driver is the block-{module} module of Debian's "
             "qemu-block-extra package, which tapvirt does not drive") if module else (
             f"QEMU 7.2 has no '{proto}' block driver tapvirt knows")
    raise r.fail(
        DISK_NETWORK, el,
        f"<disk type='network'> (protocol '{proto}'): tapvirt builds network disks of "
        f"protocol nbd only; {where}",
        "let QEMU reach the server through a local qcow2 overlay: qemu-img create -f qcow2 "
        "-b 'URL' -F raw OVERLAY.qcow2 (needs qemu-block-extra for URLs other than "
        "nbd://), then <disk type='file'><driver name='qemu' type='qcow2'/><source "
        "file='OVERLAY.qcow2'/>; or serve the image with qemu-nbd and use protocol='nbd'; "
        "or copy it locally (qemu-img convert)",
        attr="type",
    )


_DEVICES = {"interface": _interface, "hostdev": _hostdev, "disk": _disk}


def refuse_unprivileged(r: Reader, root: etree._Element) -> None:
    """Raise the named refusal for the first element that cannot work unprivileged."""
    for el in root:
        if el.tag == "launchSecurity":
            kind = str(el.get("type") or "?")[:20]
            raise r.fail(
                LAUNCH_SECURITY, el,
                f"<launchSecurity type='{kind}'> encrypts guest memory with AMD SEV or IBM "
                "PV, which needs KVM and the host's firmware support; tapvirt runs guests "
                "under TCG as an unprivileged user",
                "remove <launchSecurity> (the guest then runs without memory encryption), "
                "or run it with libvirt on a SEV host",
            )
        if el.tag == "devices":
            for dev in el:
                check = _DEVICES.get(dev.tag) if isinstance(dev.tag, str) else None
                if check is not None:
                    check(r, dev)
