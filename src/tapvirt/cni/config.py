"""What a CNI runtime hands tapvirt-cni: `CNI_*` variables and one JSON object on stdin.

Everything is bounded and checked before use (the plugin runs as root on input a pod's
definition can influence): stdin at most 1 MiB and 32 levels deep, every CNI_* value
limited in length and syntax, every key of the configuration typed. The configuration
keys are the upstream `tap` plugin's (containernetworking/plugins, plugins/main/tap),
unchanged, so that `"type": "tap"` can become `"type": "tapvirt-cni"`; plus `queues`,
`macvtap`, `policy`, `nodeDir` and `stateDir`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tapvirt.cni.errors import (
    CNI_CONFIG,
    CNI_DECODE,
    CNI_ENV,
    CNI_UNSUPPORTED,
    CNI_VERSION,
)
from tapvirt.errors import TapvirtError

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
MAX_STDIN = 1 << 20
MAX_DEPTH = 32
MAX_VAR = 4096  # any CNI_* value
MAX_ARGS = 64  # K=V pairs in CNI_ARGS
MAX_ATTACHMENTS = 65536  # cni.dev/valid-attachments entries
DEFAULT_NODE_DIR = "/dev/tapvirt-cni"  # devtmpfs: device nodes there can be opened
DEFAULT_STATE_DIR = "/var/lib/tapvirt-cni"
MACVTAP_MODES = ("bridge", "vepa", "private", "passthru")

# containernetworking/cni pkg/utils: container IDs and network names
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_VERSION = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}")

# Keys of the spec and of the conventions that need no action from an interface plugin;
# anything else unknown is accepted with a warning on stderr (never silently).
_PASSIVE = {"cniVersion", "cniVersions", "name", "type", "capabilities", "runtimeConfig",
            "args", "prevResult", "dns", "ipMasq", "disableCheck", "disableGC"}
_OWN = {"multiQueue", "mtu", "mac", "owner", "group", "bridge", "selinuxContext", "queues",
        "macvtap", "policy", "nodeDir", "stateDir", "device"}


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _env_error(var: str, cause: str, fix: str) -> TapvirtError:
    return TapvirtError(CNI_ENV, var, cause, fix)


@dataclass(frozen=True)
class Env:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: str = ""


def _bounded(env: Mapping[str, str], var: str) -> str:
    value = env.get(var, "")
    if len(value) > MAX_VAR or "\0" in value:
        raise _env_error(var, f"longer than {MAX_VAR} characters or contains NUL",
                         f"set {var} as the CNI spec describes")
    return value


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: 'K=V;K=V' (deprecated but what podman and the CRI runtimes send)."""
    out: dict[str, str] = {}
    if not text:
        return out
    pairs = text.split(";")
    if len(pairs) > MAX_ARGS:
        raise _env_error("CNI_ARGS", f"more than {MAX_ARGS} K=V pairs",
                         "send fewer arguments")
    for pair in pairs:
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _env_error("CNI_ARGS", f"{pair!r} is not K=V",
                             "separate K=V pairs with ';', e.g. IgnoreUnknown=1;MAC=...")
        out[key] = value
    return out


def parse_env(env: Mapping[str, str]) -> Env:
    """The CNI_* variables; which are required depends on the verb (spec §"Parameters")."""
    command = _bounded(env, "CNI_COMMAND")
    if command not in VERBS:
        raise _env_error("CNI_COMMAND", f"{command!r} is not one of {', '.join(VERBS)}",
                         "set CNI_COMMAND to ADD, DEL, CHECK, VERSION, GC or STATUS")
    if command in ("VERSION", "GC", "STATUS"):
        return Env(command, path=_bounded(env, "CNI_PATH"))
    cid = _bounded(env, "CNI_CONTAINERID")
    netns = _bounded(env, "CNI_NETNS")
    ifname = _bounded(env, "CNI_IFNAME")
    missing = [v for v, val in (("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname)) if not val]
    if command in ("ADD", "CHECK") and not netns:
        missing.append("CNI_NETNS")
    if missing:
        raise _env_error(", ".join(missing), f"required for {command} but not set",
                         f"set {', '.join(missing)} (CNI spec 1.1.0, Parameters)")
    if not _ID.fullmatch(cid):
        raise _env_error("CNI_CONTAINERID", f"{cid[:80]!r} is not a container ID",
                         "use letters, digits, '_', '.', '-', starting with a letter or "
                         "digit, at most 255 characters")
    from tapvirt.prep.names import check_ifname

    try:
        check_ifname(ifname, what="CNI_IFNAME")
    except TapvirtError as err:
        raise _env_error("CNI_IFNAME", err.cause, err.fix) from None
    if netns and not netns.startswith("/"):
        raise _env_error("CNI_NETNS", f"{netns[:80]!r} is not an absolute path",
                         "give a namespace path such as /run/netns/NAME or /proc/PID/ns/net")
    return Env(command, cid, netns, ifname, parse_cni_args(_bounded(env, "CNI_ARGS")),
               _bounded(env, "CNI_PATH"))


# ---------------------------------------------------------------- stdin
def _depth(obj: Any, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise TapvirtError(CNI_DECODE, "stdin", f"nested deeper than {MAX_DEPTH} levels",
                           "send a flat CNI network configuration")
    if isinstance(obj, dict):
        for v in obj.values():
            _depth(v, level + 1)
    elif isinstance(obj, list):
        for v in obj:
            _depth(v, level + 1)


def decode(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_STDIN:
        raise TapvirtError(CNI_DECODE, "stdin", f"more than {MAX_STDIN} bytes",
                           "send one CNI network configuration")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TapvirtError(CNI_DECODE, "stdin", f"not valid JSON: {str(exc)[:200]}",
                           "send one JSON object (the plugin's configuration)") from None
    if not isinstance(data, dict):
        raise TapvirtError(CNI_DECODE, "stdin", f"a JSON {type(data).__name__}, not an object",
                           "send one JSON object (the plugin's configuration)")
    _depth(data)
    return data


def check_version(data: Mapping[str, Any], *, minimum: str = "0.4.0") -> str:
    version = data.get("cniVersion")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise TapvirtError(CNI_VERSION, f"cniVersion {str(version)[:40]!r}",
                           "missing or not a version number",
                           f"set cniVersion to one of {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise TapvirtError(CNI_VERSION, f"cniVersion {version}",
                           f"tapvirt-cni speaks {', '.join(SUPPORTED_VERSIONS)}",
                           "set cniVersion to 1.1.0 (or 1.0.0, 0.4.0 for older runtimes)")
    if version_tuple(version) < version_tuple(minimum):
        raise TapvirtError(CNI_VERSION, f"cniVersion {version}",
                           f"this verb needs cniVersion {minimum} or newer",
                           f"set cniVersion to {minimum}")
    return version


@dataclass(frozen=True)
class Macvtap:
    link: str
    mode: str = "bridge"


@dataclass(frozen=True)
class NetConf:
    """One plugin configuration as tapvirt-cni uses it."""

    cni_version: str
    name: str
    owner: int | None = None
    group: int | None = None
    multi_queue: bool = False
    queues: int = 1
    mtu: int | None = None
    mac: str | None = None  # already chosen by priority: runtimeConfig, args, CNI_ARGS, mac
    bridge: str | None = None
    device: str | None = None  # the device's name when not CNI_IFNAME
    macvtap: Macvtap | None = None
    selinux_context: str | None = None
    policy: str | None = None
    node_dir: str = DEFAULT_NODE_DIR
    state_dir: str = DEFAULT_STATE_DIR
    prev_result: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "macvtap" if self.macvtap is not None else "tap"


def _bad(key: str, value: Any, cause: str, fix: str) -> TapvirtError:
    return TapvirtError(CNI_CONFIG, f"{key} {json.dumps(value)[:80]}", cause, fix)


def _uint32(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32 - 1:
        raise _bad(key, value, "must be a number from 0 to 4294967294 (a uid or gid)",
                   f'e.g. "{key}": 107')
    return value


def _string(data: Mapping[str, Any], key: str, limit: int = 4096) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise _bad(key, value, f"must be a string of at most {limit} characters",
                   f"give {key} as a JSON string")
    return value


def _abs_path(data: Mapping[str, Any], key: str, default: str) -> str:
    value = _string(data, key, 1024)
    if value is None:
        return default
    parts = value.split("/")
    if not value.startswith("/") or ".." in parts or "." in parts:
        raise _bad(key, value, "must be an absolute path without '.' or '..' components",
                   f'e.g. "{key}": "{default}"')
    return value.rstrip("/") or "/"


def normalize_mac(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        raise _bad(where, value, "not a MAC address aa:bb:cc:dd:ee:ff",
                   "give six hex bytes separated by ':'")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise _bad(where, value, "a multicast MAC cannot be an interface address",
                   "clear the lowest bit of the first byte, e.g. 52:54:00:12:34:56")
    return mac


def _choose_mac(data: Mapping[str, Any], env: Env) -> str | None:
    """MAC priority as in the upstream tap plugin and CONVENTIONS.md: runtimeConfig.mac
    (capability "mac"), then args.cni.mac (Multus), then CNI_ARGS MAC= (podman), then the
    configuration's own `mac`."""
    rc = data.get("runtimeConfig")
    if isinstance(rc, dict) and rc.get("mac"):
        return normalize_mac(rc["mac"], "runtimeConfig.mac")
    args = data.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni, dict) and cni.get("mac"):
        return normalize_mac(cni["mac"], "args.cni.mac")
    if env.args.get("MAC"):
        return normalize_mac(env.args["MAC"], "CNI_ARGS MAC")
    if data.get("mac"):
        return normalize_mac(data["mac"], "mac")
    return None


def _selinux_enabled() -> bool:
    try:
        with open("/sys/fs/selinux/enforce", encoding="ascii") as f:
            return f.read(8).strip() in ("0", "1")
    except OSError:
        return False


def parse_netconf(data: dict[str, Any], env: Env, version: str) -> NetConf:
    from tapvirt.prep.names import check_ifname

    warnings: list[str] = []
    name = data.get("name")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        raise _bad("name", name, "the network name is missing or not a valid name",
                   "name the network with letters, digits, '_', '.', '-'")
    if "ipam" in data:
        raise TapvirtError(
            CNI_UNSUPPORTED, "ipam", "tapvirt-cni makes a device for a VM; the guest owns "
            "its address, so an address on the host side of the tap is not supported",
            "remove ipam (give the guest its address inside the VM)")
    for key in sorted(set(data) - _PASSIVE - _OWN):
        if not key.startswith("cni.dev/"):
            warnings.append(f"configuration key {json.dumps(key[:64])} is unknown to "
                            "tapvirt-cni and has no effect")
    for key in ("ipMasq",):
        if data.get(key):
            warnings.append(f"{key} has no effect on a tap or macvtap")
    owner, group = _uint32(data, "owner"), _uint32(data, "group")
    if owner is None and group is None:
        raise _bad("owner", None, "neither owner nor group is set: only root could "
                   "attach to the device", 'set "owner" (and "group") to the launcher\'s '
                   'uid, e.g. "owner": 107, "group": 107')
    mq = data.get("multiQueue", False)
    if not isinstance(mq, bool):
        raise _bad("multiQueue", mq, "must be true or false", '"multiQueue": true')
    # multiQueue alone: a multi-queue device; counted as 2 queues by a policy's max_queues
    queues = data.get("queues", 2 if mq else 1)
    if not isinstance(queues, int) or isinstance(queues, bool) or not 1 <= queues <= 256:
        raise _bad("queues", queues, "must be a number from 1 to 256",
                   'e.g. "queues": 4 (the guest\'s <driver queues>)')
    if "queues" in data and "multiQueue" in data and mq != (queues > 1):
        raise _bad("multiQueue", mq, f"contradicts queues {queues} (a multi-queue device "
                   "is exactly one with queues > 1)", "leave out one of the two")
    multi_queue = mq or queues > 1
    mtu = data.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)
                            or not 68 <= mtu <= 65521):
        raise _bad("mtu", mtu, "must be a number from 68 to 65521", '"mtu": 1500')
    if mtu == 0:
        mtu = None
    bridge = _string(data, "bridge", 64)
    if bridge:
        check_ifname(bridge, what="bridge")
    else:
        bridge = None
    device = _string(data, "device", 64)
    if device is not None:
        check_ifname(device, what="device")
    macvtap: Macvtap | None = None
    if "macvtap" in data:
        m = data["macvtap"]
        if not isinstance(m, dict) or not isinstance(m.get("link"), str) or (
                set(m) - {"link", "mode"}):
            raise _bad("macvtap", m, 'must be {"link": DEV, "mode": MODE}',
                       '"macvtap": {"link": "eth0", "mode": "bridge"}')
        check_ifname(m["link"], what="macvtap.link")
        mode = m.get("mode", "bridge")
        if mode not in MACVTAP_MODES:
            raise _bad("macvtap.mode", mode, f"must be one of {', '.join(MACVTAP_MODES)}",
                       '"mode": "bridge"')
        macvtap = Macvtap(m["link"], mode)
        if bridge is not None:
            raise _bad("bridge", bridge, "a macvtap sits on its link, it cannot be enslaved",
                       "leave out bridge, or macvtap to make a tap on the bridge")
    selinux = _string(data, "selinuxContext", 256)
    if selinux:
        if _selinux_enabled():
            raise TapvirtError(
                CNI_UNSUPPORTED, f"selinuxContext {selinux!r}",
                "creating the device under another SELinux label is not implemented",
                "use the upstream tap plugin on SELinux nodes, or remove selinuxContext")
        warnings.append("selinuxContext has no effect: SELinux is not enabled on this node")
    policy = _string(data, "policy", 1024)
    if policy is not None:
        policy = _abs_path(data, "policy", "/etc/tapvirt/prep.toml")
        if owner is None:
            raise _bad("policy", policy, "a policy is applied to the pod's uid, but owner "
                       "is not set", '"owner": 107')
    prev = data.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("prevResult", prev, "must be an object (a CNI result)",
                   "pass the previous plugin's result unchanged")
    return NetConf(
        cni_version=version, name=name, owner=owner, group=group, multi_queue=multi_queue,
        queues=queues, mtu=mtu, mac=_choose_mac(data, env), bridge=bridge, device=device,
        macvtap=macvtap, selinux_context=selinux or None, policy=policy,
        node_dir=_abs_path(data, "nodeDir", DEFAULT_NODE_DIR),
        state_dir=_abs_path(data, "stateDir", DEFAULT_STATE_DIR),
        prev_result=prev, raw=data, warnings=tuple(warnings))


def pod_key(env: Env) -> str:
    """The node directory of a pod: <namespace>_<name> from the Kubernetes CNI_ARGS when
    the runtime sends them (so a pod can mount its own directory with subPathExpr), else
    the container ID."""
    ns, name = env.args.get("K8S_POD_NAMESPACE", ""), env.args.get("K8S_POD_NAME", "")
    if name and _K8S_NAME.fullmatch(name) and (not ns or _K8S_NAME.fullmatch(ns)):
        return f"{ns}_{name}" if ns else name
    return env.container_id


def valid_attachments(data: Mapping[str, Any]) -> set[tuple[str, str]]:
    raw = data.get("cni.dev/valid-attachments", data.get("cni.dev/attachments", []))
    if not isinstance(raw, list) or len(raw) > MAX_ATTACHMENTS:
        raise _bad("cni.dev/valid-attachments", "...", "must be a list of "
                   '{"containerID", "ifname"} objects', "pass the runtime's attachments")
    out: set[tuple[str, str]] = set()
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) or \
                not isinstance(item.get("ifname"), str):
            raise _bad("cni.dev/valid-attachments", item, 'each entry must be '
                       '{"containerID": ID, "ifname": NAME}', "pass the runtime's attachments")
        out.add((item["containerID"], item["ifname"]))
    return out
