"""Error codes of the network seam: checking, opening and creating host devices.

They are raised by `tapvirt.host` (kernel errno mapped at open time) and by
`tapvirt.qemu.checks` (read-only pre-flight), so they live in one module both import.
"""

from __future__ import annotations

from tapvirt.errors import define

_L = "network"

ADDRESS_NOT_LOCAL = define(
    "address-not-local",
    "a server or udp socket interface names an address this host does not have",
    layer=_L,
)
DEVICE_MISSING = define("device-missing", "the named host device does not exist", layer=_L)
DEVICE_WRONG_KIND = define(
    "device-wrong-kind",
    "the device is not a tap or macvtap (a bridge, veth, TUN-mode tun, ...)",
    layer=_L,
)
DEVICE_FOREIGN_OWNER = define(
    "device-foreign-owner", "the tap is owned by another uid and not by our group", layer=_L
)
QUEUES_MISMATCH = define(
    "queues-mismatch",
    "the tap's multi_queue flag does not match <driver queues>",
    layer=_L,
)
DEVICE_BUSY = define(
    "device-busy", "a single-queue tap is already attached by another process", layer=_L
)
DEVICE_DOWN = define(
    "device-down",
    "the device is administratively down: the guest's traffic would fail with EIO",
    layer=_L,
    warning=True,
)
MAC_MISMATCH = define(
    "mac-mismatch", "a macvtap's MAC differs from the guest MAC (traffic is dropped)", layer=_L
)
MAC_CONFLICT = define(
    "mac-conflict", "a tap carries the guest's own MAC (the kernel drops looped frames)", layer=_L
)
MTU_TOO_LARGE = define("mtu-too-large", "the guest <mtu> is above the device MTU", layer=_L)
TUN_NODE_INACCESSIBLE = define(
    "tun-node-inaccessible", "the tun clone device cannot be opened read-write", layer=_L
)
MACVTAP_NODE_MISSING = define(
    "macvtap-node-missing", "the macvtap's /dev/tap<ifindex> node does not exist", layer=_L
)
MACVTAP_NODE_FOREIGN = define(
    "macvtap-node-foreign",
    "the macvtap node has the wrong owner or belongs to another device",
    layer=_L,
)
MANAGED_NEEDS_PRIVILEGE = define(
    "managed-needs-privilege",
    "creating a device (managed tap, bridge port, macvtap) needs CAP_NET_ADMIN",
    layer=_L,
)
INVALID_NAME = define(
    "invalid-name", "a device name is not a valid Linux interface name", layer=_L
)
DEVICE_EXISTS = define(
    "device-exists", "a managed device would be created under a name that exists", layer=_L
)
BRIDGE_MISSING = define("bridge-missing", "the bridge named in <source> does not exist", layer=_L)
BRIDGE_HELPER_FAILED = define(
    "bridge-helper-failed", "qemu-bridge-helper could not give us a tap on the bridge", layer=_L
)
SOURCE_DEV_MISSING = define(
    "source-dev-missing", "the link a macvtap should sit on does not exist", layer=_L
)
VHOST_UNAVAILABLE = define(
    "vhost-unavailable", "<driver name='vhost'> was asked for but /dev/vhost-net cannot be opened",
    layer=_L,
)
HOST_ERROR = define(
    "host-error", "the kernel refused an operation for a reason tapvirt does not know", layer=_L
)
