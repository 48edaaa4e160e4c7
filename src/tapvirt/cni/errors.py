"""Error codes of tapvirt-cni: the CNI spec's numeric codes, and tapvirt's own (100+).

A CNI error is one JSON object on stdout, `{"cniVersion", "code", "msg", "details"}`,
and a non-zero exit (CNI spec 1.1.0 §"Error"). `code` is a number: 1-99 are the spec's
(1 incompatible version, 2 unsupported field, 4 invalid environment, 6 decode, 7 invalid
network config, 11 try again later, 50/51 STATUS), 8 is libcni's "invalid netns", and
100+ are this plugin's own, each tied to a tapvirt error code (docs/errors.md, layer
`cni`) that also appears in `msg` so a user can look it up. `details` (a string, as in
the reference implementation's Go type) carries the cause and the exact fix.
"""

from __future__ import annotations

from tapvirt.errors import ErrorCode, TapvirtError, define

_L = "cni"

# -- the spec's codes -------------------------------------------------------------------
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
INVALID_ENV = 4
IO_FAILURE = 5
DECODE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8  # libcni's ErrInvalidNetNS
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS: cannot serve ADD
INTERNAL_ERROR = 999  # libcni's ErrInternal: a bug

# -- tapvirt codes for every failure a user (or a runtime) can cause --------------------
CNI_VERSION = define(
    "cni-version", "CNI 1: the cniVersion is not one tapvirt-cni speaks (0.4.0 to 1.1.0), "
    "or the verb needs a newer one (GC, STATUS: 1.1.0)", layer=_L)
CNI_UNSUPPORTED = define(
    "cni-unsupported", "CNI 2: a configuration key tapvirt-cni cannot honour (ipam, "
    "selinuxContext on an SELinux node)", layer=_L)
CNI_ENV = define(
    "cni-env", "CNI 4: a CNI_* environment variable is missing, too long or malformed",
    layer=_L)
CNI_DECODE = define(
    "cni-decode", "CNI 6: stdin is not one JSON object (or is too large or too deep)",
    layer=_L)
CNI_CONFIG = define(
    "cni-config", "CNI 7: the network configuration has a wrong key value or type",
    layer=_L)
CNI_NETNS = define(
    "cni-netns", "CNI 8: CNI_NETNS is not a network namespace, or is the plugin's own",
    layer=_L)
CNI_BUSY = define(
    "cni-busy", "CNI 11: another tapvirt-cni or tapvirt-prep run held the lock too long",
    layer=_L)
CNI_NOT_AVAILABLE = define(
    "cni-not-available", "CNI 50: STATUS: the tun clone device cannot be opened", layer=_L)
CNI_EXISTS = define(
    "cni-exists", "CNI 100: ADD: an interface named CNI_IFNAME already exists in the pod",
    layer=_L)
CNI_POLICY = define(
    "cni-policy", "CNI 101: the tapvirt-prep policy named by `policy` refuses the request",
    layer=_L)
CNI_CHECK_FAILED = define(
    "cni-check-failed", "CNI 102: CHECK: the device differs from what ADD made (listed)",
    layer=_L)
CNI_HOST = define(
    "cni-host", "CNI 103: the kernel refused an operation (errno in details)", layer=_L)
CNI_LOWER_MISSING = define(
    "cni-lower-missing", "CNI 104: the `bridge` or `macvtap.link` device is missing in the "
    "pod's namespace", layer=_L)
CNI_NODE = define(
    "cni-node", "CNI 105: the macvtap's char-device node cannot be made safely in nodeDir",
    layer=_L)
CNI_STATE = define(
    "cni-state", "CNI 106: the attachment records in stateDir cannot be read or written",
    layer=_L)
CNI_INTERNAL = define("cni-internal", "CNI 999: a bug in tapvirt-cni", layer=_L)

_NUMBERS: dict[str, int] = {
    CNI_VERSION.code: INCOMPATIBLE_VERSION,
    CNI_UNSUPPORTED.code: UNSUPPORTED_FIELD,
    CNI_ENV.code: INVALID_ENV,
    CNI_DECODE.code: DECODE,
    CNI_CONFIG.code: INVALID_CONFIG,
    CNI_NETNS.code: INVALID_NETNS,
    CNI_BUSY.code: TRY_AGAIN_LATER,
    CNI_NOT_AVAILABLE.code: NOT_AVAILABLE,
    CNI_EXISTS.code: 100,
    CNI_POLICY.code: 101,
    CNI_CHECK_FAILED.code: 102,
    CNI_HOST.code: 103,
    CNI_LOWER_MISSING.code: 104,
    CNI_NODE.code: 105,
    CNI_STATE.code: 106,
    CNI_INTERNAL.code: INTERNAL_ERROR,
}

# Codes of the prep core (tapvirt-prep's verbs, host/admin.py) and what they are in CNI.
_FROM_PREP: dict[str, int] = {
    "policy-denied": 101, "policy-deny-rule": 101, "policy-quota": 101,
    "policy-invalid": 101, "policy-missing": 101, "unknown-user": INVALID_CONFIG,
    "device-exists": 100, "device-foreign": 100, "device-mismatch": 100,
    "host-error": 103, "bridge-missing": 104, "source-dev-missing": 104,
    "node-unsafe": 105, "node-dir-unusable": 105, "log-unwritable": IO_FAILURE,
    "invalid-name": INVALID_CONFIG, "bad-request": INVALID_CONFIG,
    "mac-conflict": INVALID_CONFIG, "device-raced": TRY_AGAIN_LATER,
}


def cni_number(code: ErrorCode) -> int:
    """The CNI error code a tapvirt error is reported with."""
    return _NUMBERS.get(code.code) or _FROM_PREP.get(code.code) or INTERNAL_ERROR


def error_object(err: TapvirtError, cni_version: str) -> dict[str, object]:
    """The spec's error object; `msg` names the tapvirt code, `details` says why and how
    to fix it."""
    details = err.cause + (f"; fix: {err.fix}" if err.fix else "")
    return {"cniVersion": cni_version, "code": cni_number(err.code),
            "msg": f"tapvirt-cni [{err.code.code}] {err.subject}", "details": details}
