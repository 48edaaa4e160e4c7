"""Error codes of the definition layer (XML parsing and validation).

Where libvirt 9.0 has a message for the same mistake, the cause repeats it verbatim
so that users can search for it; see docs/domain-xml.md.
"""

from __future__ import annotations

from tapvirt.errors import define

_L = "conf"

XML_MALFORMED = define("xml-malformed", "the document is not well-formed XML", layer=_L)
XML_DOCTYPE = define(
    "xml-doctype",
    "the document has a DOCTYPE or entity declarations (refused: they can expand without bound)",
    layer=_L,
)
CRASH_ACTION_UNSUPPORTED = define(
    "crash-action-unsupported",
    "<on_crash>coredump-destroy or coredump-restart: libvirt's own core dump of a panicked guest",
    layer=_L,
)
NOT_A_DOMAIN = define("not-a-domain", "the root element is not <domain>", layer=_L)
UNSUPPORTED_ELEMENT = define(
    "unsupported-element",
    "an element outside the supported subset of libvirt's domain XML",
    layer=_L,
)
UNSUPPORTED_ATTRIBUTE = define(
    "unsupported-attribute",
    "an attribute outside the supported subset of libvirt's domain XML",
    layer=_L,
)
UNEXPECTED_TEXT = define(
    "unexpected-text", "text inside an element that holds no text in libvirt's schema", layer=_L
)
DUPLICATE_ELEMENT = define(
    "duplicate-element", "an element that may appear once appears more than once", layer=_L
)
MISSING_ELEMENT = define("missing-element", "a required element is absent", layer=_L)
MISSING_ATTRIBUTE = define("missing-attribute", "a required attribute is absent", layer=_L)
INVALID_VALUE = define(
    "invalid-value",
    "an attribute or element has a value outside its allowed set or range",
    layer=_L,
)
INVALID_NAME = define(
    "invalid-domain-name",
    "the domain name is not a safe file name ([A-Za-z0-9_.+-], 1-64)",
    layer=_L,
)
INVALID_UUID = define("invalid-uuid", "the uuid is not 32 hex digits (dashes allowed)", layer=_L)
INVALID_MEMORY = define(
    "invalid-memory", "a memory size or unit is malformed, zero or too large", layer=_L
)
INVALID_PATH = define("invalid-path", "a file path is not absolute or is malformed", layer=_L)
# A device name in the XML that is not a valid Linux interface name is the network
# layer's `invalid-name` (tapvirt.netcodes.INVALID_NAME): one code for one mistake.
UNSUPPORTED_MODEL = define(
    "unsupported-model", "the NIC model is not virtio, e1000, e1000e or rtl8139", layer=_L
)
MANAGED_NOT_ETHERNET = define(
    "managed-not-ethernet", "managed='no' on an interface whose type is not ethernet", layer=_L
)
UNMANAGED_NEEDS_DEV = define(
    "unmanaged-needs-dev", "managed='no' without the name of the precreated device", layer=_L
)
INVALID_MAC = define("invalid-mac", "a MAC address is not six hex octets", layer=_L)
MULTICAST_MAC = define("multicast-mac", "a guest MAC address is multicast", layer=_L)
QUEUES_OUT_OF_RANGE = define("queues-out-of-range", "<driver queues> is not in 1..256", layer=_L)
MULTIQUEUE_UNSUPPORTED = define(
    "multiqueue-unsupported",
    "more than one queue on an interface type or model that has no multiqueue",
    layer=_L,
)
MTU_OUT_OF_RANGE = define("mtu-out-of-range", "<mtu size> is not in 68..65521", layer=_L)
MTU_UNSUPPORTED = define(
    "mtu-unsupported",
    "<mtu> on an interface type that cannot set it (direct, user, socket types)", layer=_L
)
NOT_FOR_TYPE = define(
    "not-for-type",
    "an interface element that has no meaning for this interface type",
    layer=_L,
)
MISSING_SOURCE = define(
    "missing-source", "a bridge, direct or socket interface without its <source>",
    layer=_L
)
INVALID_ALIAS = define(
    "invalid-alias", "a user alias that does not start with 'ua-' or has bad characters", layer=_L
)
DUPLICATE_ALIAS = define("duplicate-alias", "two devices have the same alias", layer=_L)
DUPLICATE_BOOT_ORDER = define(
    "duplicate-boot-order", "two devices have the same <boot order>", layer=_L
)
BOOT_CONFLICT = define(
    "boot-conflict", "per-device <boot order> together with <os><boot dev>", layer=_L
)
DUPLICATE_TARGET = define(
    "duplicate-target", "two disks have the same target dev, or two chardevs the same port",
    layer=_L,
)
SCHEMA_INVALID = define(
    "schema-invalid",
    "the document fails tapvirt's RelaxNG subset of libvirt's schema",
    layer=_L,
)
UNSUPPORTED_VALUE = define(
    "unsupported-value",
    "a value libvirt's schema allows but that QEMU (or tapvirt) cannot run, e.g. a timer "
    "tick policy QEMU lacks (libvirt's 'unsupported configuration')",
    layer=_L,
)
NO_EFFECT = define(
    "no-effect",
    "an element that is valid and kept but has no effect for an unprivileged QEMU started "
    "by tapvirt (a warning: nothing is silently dropped)",
    layer=_L, warning=True,
)
SUBSTITUTED = define(
    "substituted",
    "an element tapvirt carries out differently from libvirt, with the same intent (a warning)",
    layer=_L, warning=True,
)
SECLABEL_UNSUPPORTED = define(
    "seclabel-unsupported",
    "a <seclabel> of a security driver (selinux, apparmor, dac) that tapvirt cannot apply",
    layer=_L,
)
