"""Error codes of tapvirt-prep (policy decisions and privileged device creation).

Exit codes of `tapvirt-prep` follow the code's family (see `exit_code`): scripts can
tell a policy refusal from a device that is in the way from any other failure.
"""

from __future__ import annotations

from tapvirt.errors import USAGE, ErrorCode, define

_L = "prep"

POLICY_DENIED = define("policy-denied", "the policy does not allow this request", layer=_L)
POLICY_DENY_RULE = define(
    "policy-deny-rule", "a deny rule of the policy refuses this request", layer=_L
)
POLICY_QUOTA = define(
    "policy-quota", "the request exceeds the user's device or queue quota", layer=_L
)
POLICY_INVALID = define(
    "policy-invalid", "the policy file is not valid TOML or has unknown keys/values", layer=_L
)
POLICY_MISSING = define(
    "policy-missing", "there is no policy file, so everything is denied", layer=_L
)
OVERRIDE_REFUSED = define(
    "override-refused",
    "an administrator-only option (--policy, --log-file, --requester...) was used under sudo",
    layer=_L,
)
REQUESTER_INVALID = define(
    "requester-invalid",
    "SUDO_UID, SUDO_USER, PKEXEC_UID or DOAS_USER is malformed, unknown or contradicts another",
    layer=_L,
)
NOT_ROOT = define("not-root", "tapvirt-prep must run as root (e.g. through sudo)", layer=_L)
UNKNOWN_USER = define("unknown-user", "a user or group name does not exist", layer=_L)
NETNS_MISSING = define(
    "netns-missing", "the network namespace named by --netns does not exist", layer=_L
)
DEVICE_FOREIGN = define(
    "device-foreign",
    "the device exists but tapvirt-prep did not create it: it is never changed or deleted",
    layer=_L,
)
DEVICE_MISMATCH = define(
    "device-mismatch",
    "a device tapvirt-prep created exists but differs from the request (listed field by field)",
    layer=_L,
)
DEVICE_IN_USE = define(
    "device-in-use", "delete: the tap is attached (a guest runs on it); --force deletes anyway",
    layer=_L,
)
NOT_PREPARED = define(
    "not-prepared", "delete: no device of that name exists in the namespace", layer=_L
)
NODE_UNSAFE = define(
    "node-unsafe",
    "a device node or its directory is a symlink, not a char device, or writable by others",
    layer=_L,
)
NODE_DIR_UNUSABLE = define(
    "node-dir-unusable",
    "the directory for private device nodes is on a nodev filesystem or cannot be made",
    layer=_L,
)
LOG_UNWRITABLE = define(
    "log-unwritable", "the decision log file cannot be written, so nothing is done", layer=_L
)
DEVICE_RACED = define(
    "device-raced",
    "another process attached a queue to a tap while it was being created: it was deleted",
    layer=_L,
)
FILE_NOT_REGULAR = define(
    "file-not-regular",
    "a file named for tapvirt-prep is a FIFO, device, socket or directory, not a regular file",
    layer=_L,
)
FILE_TOO_LARGE = define(
    "file-too-large", "a file named for tapvirt-prep is larger than its limit (1 MiB)", layer=_L
)
BAD_REQUEST = define(
    "bad-request", "an option value is invalid (queues, MAC, MTU, mode...)", layer=_L
)

_EXIT = {
    POLICY_DENIED.code: 3,
    POLICY_DENY_RULE.code: 3,
    POLICY_QUOTA.code: 3,
    POLICY_MISSING.code: 3,
    OVERRIDE_REFUSED.code: 3,
    REQUESTER_INVALID.code: 3,
    DEVICE_FOREIGN.code: 4,
    DEVICE_MISMATCH.code: 4,
    DEVICE_IN_USE.code: 4,
    USAGE.code: 2,
}


def exit_code(code: ErrorCode) -> int:
    """0 ok, 1 other errors, 2 usage, 3 refused by policy, 4 a device is in the way."""
    return _EXIT.get(code.code, 1)
