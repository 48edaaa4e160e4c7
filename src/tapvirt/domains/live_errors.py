"""Error codes of the verbs that operate running guests (hotplug, link state, statistics,
pause, reboot, edit) and of the supervisor's control channel."""

from __future__ import annotations

from tapvirt.errors import define

_L = "live"

SUPERVISOR_GONE = define(
    "supervisor-gone",
    "the running guest has no supervisor to record a change (it was killed)", layer=_L,
)
CONTROL_FAILED = define(
    "control-failed",
    "the supervisor's control socket cannot be reached or gave no answer", layer=_L,
)
DEVICE_NOT_FOUND = define(
    "device-not-found",
    "no device of the guest matches the given interface, MAC, alias or disk target", layer=_L,
)
DEVICE_AMBIGUOUS = define(
    "device-ambiguous", "more than one device of the guest matches (give the MAC)", layer=_L,
)
DEVICE_DUPLICATE = define(
    "device-duplicate",
    "the guest already has a device with that MAC, alias, host device or target", layer=_L,
)
DEVICE_FILE_INVALID = define(
    "device-file-invalid",
    "the device XML is not one <interface>, <disk> or <memory> element tapvirt understands",
    layer=_L,
)
HOTPLUG_UNSUPPORTED = define(
    "hotplug-unsupported",
    "this kind of device or change cannot be applied to a running guest", layer=_L,
)
HOTPLUG_FAILED = define(
    "hotplug-failed", "QEMU refused to add or remove the device (its reason is shown)",
    layer=_L,
)
HOTPLUG_REFUSED = define(
    "hotplug-refused",
    "the guest did not release the device in time (it ignores or refuses the unplug)",
    layer=_L,
)
HOTPLUG_NEEDS_PRIVILEGE = define(
    "hotplug-needs-privilege",
    "hot-plugging a managed device needs the privileges of starting one (CAP_NET_ADMIN)",
    layer=_L,
)
NO_PCI_SLOT = define(
    "no-pci-slot", "no free hotpluggable PCI slot (q35 needs a free pcie-root-port)",
    layer=_L,
)
NO_GUEST_AGENT = define(
    "no-guest-agent", "the guest has no guest agent channel to ask", layer=_L,
)
AGENT_UNRESPONSIVE = define(
    "agent-unresponsive", "the guest agent did not answer in time (not installed, not "
    "started, the guest paused)", layer=_L,
)
AGENT_ERROR = define(
    "agent-error", "the guest agent refused or failed a command", layer=_L,
)
NO_BALLOON = define(
    "no-balloon", "the guest has no memory balloon device: only rss can be reported", layer=_L,
    warning=True,
)
STATS_UNAVAILABLE = define(
    "stats-unavailable", "the host device's counters cannot be read", layer=_L,
)
EDIT_FAILED = define(
    "edit-failed",
    "the edited definition is invalid or the editor failed: nothing was changed", layer=_L,
)
MONITOR_UNSUPPORTED = define(
    "monitor-command-used",
    "a raw QEMU monitor command was sent: tapvirt's view of the guest may be wrong now",
    layer=_L, warning=True,
)
