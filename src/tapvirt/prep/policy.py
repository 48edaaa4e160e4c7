"""The deny-by-default policy of tapvirt-prep: loading the TOML file and deciding requests.

A request is allowed only when no `[[deny]]` rule matches it and some `[[allow]]` rule
matches it completely; the quotas of that allow rule then apply. Root (not through sudo)
may act for anyone and is not subject to the policy. See docs/prep.md for the format.
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import stat
import tomllib
from dataclasses import dataclass, field
from typing import Any

from tapvirt.errors import TapvirtError
from tapvirt.prep.errors import (
    POLICY_DENIED,
    POLICY_DENY_RULE,
    POLICY_INVALID,
    POLICY_MISSING,
    POLICY_QUOTA,
    UNKNOWN_USER,
)

DEFAULT_POLICY = "/etc/tapvirt/prep.toml"
# /run is usually mounted nodev; devtmpfs always allows device nodes.
DEFAULT_NODE_DIR = "/dev/tapvirt-prep"
DEFAULT_MAX_DEVICES = 8
DEFAULT_MAX_QUEUES = 8
KINDS = ("tap", "macvtap")
MACVTAP_MODES = ("bridge", "vepa", "private", "passthru")
# passthru hands the whole lower link to one guest: only when a rule says so.
DEFAULT_MODES = ("bridge", "vepa", "private")
HOST_NS = ""  # the namespace entry meaning "no --netns: the namespace tapvirt-prep runs in"


# ---------------------------------------------------------------- who is asking
@dataclass(frozen=True)
class Principal:
    """A user as the policy sees it: uid, name and every group it is a member of."""

    uid: int
    name: str
    gids: frozenset[int]
    group_names: frozenset[str]

    @classmethod
    def from_uid(cls, uid: int) -> Principal:
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, str(uid), frozenset(), frozenset())
        return cls._from_pw(pw)

    @classmethod
    def from_name(cls, name: str, *, what: str = "--user") -> Principal:
        if name.isdigit():
            return cls.from_uid(int(name))
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise TapvirtError(
                UNKNOWN_USER, f"{what} {name!r}", "no such user",
                "give an existing user name or a numeric uid",
            ) from None
        return cls._from_pw(pw)

    @classmethod
    def _from_pw(cls, pw: pwd.struct_passwd) -> Principal:
        gids = frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
        names = set()
        for gid in gids:
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return cls(pw.pw_uid, pw.pw_name, gids, frozenset(names))

    def matches(self, users: tuple[str, ...], groups: tuple[str, ...]) -> bool:
        if "*" in users or self.name in users or str(self.uid) in users:
            return True
        return any(g in self.group_names or g in {str(x) for x in self.gids} for g in groups)


@dataclass(frozen=True)
class Requester:
    """Who asks, and how we know: 'root', 'sudo' (SUDO_UID) or 'service' (--requester)."""

    principal: Principal
    via: str

    @property
    def is_root(self) -> bool:
        return self.via == "root"


# ---------------------------------------------------------------- what is asked
@dataclass(frozen=True)
class Request:
    kind: str  # "tap" | "macvtap"
    name: str
    owner: Principal  # the user who will own the device (or its node)
    group: tuple[int, str] | None = None  # (gid, name) of --group
    bridge: str | None = None
    link: str | None = None
    mode: str | None = None  # macvtap mode
    queues: int = 1
    netns: str | None = None

    def describe(self) -> str:
        parts = [f"{self.kind} {self.name}", f"user={self.owner.name}"]
        if self.group:
            parts.append(f"group={self.group[1]}")
        if self.bridge:
            parts.append(f"bridge={self.bridge}")
        if self.link:
            parts.append(f"link={self.link}")
        if self.mode:
            parts.append(f"mode={self.mode}")
        parts.append(f"queues={self.queues}")
        parts.append(f"netns={self.netns or '-'}")
        return " ".join(parts)


# ---------------------------------------------------------------- the policy
@dataclass(frozen=True)
class Rule:
    label: str  # 'allow[0]' or 'allow[0] "lab"'
    effect: str  # "allow" | "deny"
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = None
    names: tuple[str, ...] | None = None
    bridges: tuple[str, ...] | None = None
    links: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    netns: tuple[str, ...] | None = None
    act_for: tuple[str, ...] = ()
    device_groups: tuple[str, ...] = ()
    max_devices: int = DEFAULT_MAX_DEVICES
    max_queues: int = DEFAULT_MAX_QUEUES


@dataclass(frozen=True)
class Settings:
    node_dir: str = DEFAULT_NODE_DIR
    log_file: str | None = None


@dataclass(frozen=True)
class Policy:
    source: str
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    settings: Settings = field(default_factory=Settings)
    missing: bool = False  # no file: deny everything, say why


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # the rule that decided ('root', 'allow[0] "lab"', 'deny[1]', 'default')
    reason: str
    max_devices: int | None = None


_RULE_LISTS = ("users", "groups", "kinds", "names", "bridges", "links", "modes", "netns",
               "act_for", "device_groups")
_MATCH_KEYS = ("users", "groups", "kinds", "names", "bridges", "links", "modes", "netns")
_RULE_INTS = ("max_devices", "max_queues")
_SETTINGS_KEYS = ("node_dir", "log_file")


def _invalid(source: str, where: str, cause: str) -> TapvirtError:
    return TapvirtError(POLICY_INVALID, f"policy {source}: {where}", cause,
                        f"correct {where} in {source} (see docs/prep.md for the format)")


def _str_list(source: str, where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        raise _invalid(source, where, "must be a list of strings (or numeric ids)")
    return tuple(str(v) for v in value)


def _rule(source: str, effect: str, index: int, table: Any) -> Rule:
    where = f"[[{effect}]] #{index}"
    if not isinstance(table, dict):
        raise _invalid(source, where, "must be a table")
    name = table.get("name")
    label = f"{effect}[{index}]" + (f' "{name}"' if isinstance(name, str) else "")
    kw: dict[str, Any] = {}
    for key, value in table.items():
        if key == "name":
            if not isinstance(value, str):
                raise _invalid(source, f"{where}.name", "must be a string")
        elif key in _RULE_LISTS:
            kw[key] = _str_list(source, f"{where}.{key}", value)
            if not kw[key] and key in _MATCH_KEYS:
                # an empty list would read as "nothing" to some and as "no restriction"
                # to others (it did allow anything in an allow rule): refuse it
                raise _invalid(source, f"{where}.{key}",
                               "is an empty list, which is ambiguous: leave the key out "
                               "(see its default) or name what it should match")
        elif key in _RULE_INTS and effect == "allow":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _invalid(source, f"{where}.{key}", "must be a non-negative integer")
            kw[key] = value
        else:
            raise _invalid(source, f"{where}.{key}", f"unknown key in a {effect} rule")
    for key, allowed in (("kinds", KINDS), ("modes", MACVTAP_MODES)):
        bad = [v for v in kw.get(key, ()) if v not in allowed]
        if bad:
            raise _invalid(source, f"{where}.{key}", f"unknown value(s) {bad}; use {allowed}")
    if effect == "allow" and not (kw.get("users") or kw.get("groups")):
        raise _invalid(source, where, "an allow rule must name users or groups ('*' for all)")
    if effect == "deny" and not any(k in kw for k in _RULE_LISTS):
        raise _invalid(source, where, "a deny rule must say what it denies")
    return Rule(label=label, effect=effect, **kw)


def parse_policy(text: str, *, source: str) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(source, "syntax", str(exc)) from None
    except RecursionError:
        # tomllib recurses per nesting level: a file of deeply nested arrays or inline
        # tables exhausts the stack (no valid policy nests more than two levels)
        raise _invalid(source, "syntax", "arrays or tables nested too deeply") from None
    unknown = set(data) - {"allow", "deny", "settings"}
    if unknown:
        raise _invalid(source, ", ".join(sorted(unknown)), "unknown top-level key(s)")
    rules: dict[str, list[Rule]] = {"allow": [], "deny": []}
    for effect in ("allow", "deny"):
        tables = data.get(effect, [])
        if not isinstance(tables, list):
            raise _invalid(source, effect, f"must be an array of tables: [[{effect}]]")
        rules[effect] = [_rule(source, effect, i, t) for i, t in enumerate(tables)]
    settings_data = data.get("settings", {})
    if not isinstance(settings_data, dict):
        raise _invalid(source, "[settings]", "must be a table")
    for key, value in settings_data.items():
        if key not in _SETTINGS_KEYS:
            raise _invalid(source, f"[settings].{key}", "unknown setting")
        if not isinstance(value, str) or not value.startswith("/"):
            raise _invalid(source, f"[settings].{key}", "must be an absolute path")
    settings = Settings(**settings_data)
    return Policy(source, tuple(rules["allow"]), tuple(rules["deny"]), settings)


def load_policy(path: str) -> Policy:
    """Read the policy; a missing file is a policy that denies everything.

    Like sudoers, a policy someone else could have written decides nothing: the file
    must be root's and not writable by group or others, and so must every directory on
    its (resolved) path, where a sticky one like /tmp is fine (nobody but root can
    replace root's entry there). It is read bounded: a regular file of at most 1 MiB."""
    from tapvirt.prep.files import POLICY_LIMIT, read_regular

    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return Policy(path, missing=True)
    except OSError as exc:
        raise _invalid(path, "file", f"cannot be read: {exc}") from None
    bad_dir = _untrusted_dir(real)
    if bad_dir is not None:
        where, dst = bad_dir
        raise TapvirtError(
            POLICY_INVALID, f"policy {path}",
            f"is in directory {where}, owned by uid {dst.st_uid} with mode "
            f"{dst.st_mode & 0o7777:o}: whoever can write there can replace the policy",
            f"keep the policy in a directory owned by root and not writable by group or "
            f"others: chown root: {where} && chmod go-w {where}",
        )
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise TapvirtError(
            POLICY_INVALID, f"policy {path}",
            f"is owned by uid {st.st_uid} with mode {st.st_mode & 0o7777:o}: only a file "
            "owned by root and not writable by group or others is trusted",
            f"chown root: {path} && chmod go-w {path}",
        )
    try:
        text = read_regular(real, limit=POLICY_LIMIT, what="policy").decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(path, "file", f"cannot be read: {exc}") from None
    return parse_policy(text, source=path)


def _untrusted_dir(real: str) -> tuple[str, os.stat_result] | None:
    """The first directory above `real` (a resolved path) that is not root's or is
    writable by group or others without the sticky bit; None if all are trusted."""
    parts = real.split("/")[1:-1]
    for i in range(len(parts) + 1):
        directory = "/" + "/".join(parts[:i])
        dst = os.lstat(directory)
        writable = dst.st_mode & 0o022 and not dst.st_mode & stat.S_ISVTX
        if dst.st_uid != 0 or writable:
            return directory, dst
    return None


# ---------------------------------------------------------------- deciding
def _any(patterns: tuple[str, ...], value: str, requester: Principal) -> bool:
    return any(fnmatch.fnmatchcase(value, p.replace("{user}", requester.name))
               for p in patterns)


def _deny_matches(rule: Rule, req: Request, who: Principal) -> bool:
    checks: list[bool] = []
    if rule.users or rule.groups:
        checks.append(who.matches(rule.users, rule.groups))
    if rule.kinds is not None:
        checks.append(req.kind in rule.kinds)
    if rule.names is not None:
        checks.append(_any(rule.names, req.name, who))
    if rule.bridges is not None:
        checks.append(req.bridge is not None and _any(rule.bridges, req.bridge, who))
    if rule.links is not None:
        checks.append(req.link is not None and _any(rule.links, req.link, who))
    if rule.modes is not None:
        checks.append(req.mode is not None and req.mode in rule.modes)
    if rule.netns is not None:
        checks.append(_any(rule.netns, req.netns or HOST_NS, who))
    return all(checks)


def _allow_mismatch(rule: Rule, req: Request, who: Principal) -> str | None:
    """Why this allow rule does not cover the request (None: it does)."""
    if req.kind not in (rule.kinds or KINDS):
        return f"kind {req.kind} is not in kinds {list(rule.kinds or KINDS)}"
    if not _any(rule.names or ("*",), req.name, who):
        return f"name {req.name} matches none of names {list(rule.names or ())}"
    act_users = tuple(a for a in rule.act_for if not a.startswith("@"))
    act_groups = tuple(a[1:] for a in rule.act_for if a.startswith("@"))
    if req.owner.uid != who.uid and not req.owner.matches(act_users, act_groups):
        return f"{who.name} may not create devices for {req.owner.name} (act_for)"
    if req.group is not None:
        gid, gname = req.group
        if gid not in who.gids and not {gname, str(gid), "*"} & set(rule.device_groups):
            return f"group {gname} is not a group of {who.name} nor in device_groups"
    if req.kind == "tap" and req.bridge is not None and not _any(
        rule.bridges or (), req.bridge, who
    ):
        return f"bridge {req.bridge} is not in bridges {list(rule.bridges or ())}"
    if req.kind == "macvtap":
        if req.link is None or not _any(rule.links or (), req.link, who):
            return f"link {req.link} is not in links {list(rule.links or ())}"
        modes = rule.modes or DEFAULT_MODES
        if req.mode not in modes:
            return f"macvtap mode {req.mode} is not in modes {list(modes)}"
    if not _any(rule.netns or (HOST_NS,), req.netns or HOST_NS, who):
        where = f"namespace {req.netns}" if req.netns else "the host namespace (no --netns)"
        return f"{where} is not in netns {list(rule.netns or (HOST_NS,))}"
    return None


def decide(policy: Policy, requester: Requester, req: Request, existing: int) -> Decision:
    """Decide one request; `existing` counts the owner's devices already there.

    Raises TapvirtError (policy-*) when denied; returns the allowing Decision."""
    if requester.is_root:
        return Decision(True, "root", "root may act for anyone")
    who = requester.principal
    subject = f"{req.kind} {req.name}"
    if policy.missing:
        raise TapvirtError(
            POLICY_MISSING, subject,
            f"no policy file at {policy.source}: everything is denied",
            f"as root, write {policy.source} with an [[allow]] rule for {who.name} "
            "(see docs/prep.md)",
            details={"rule": "default"},
        )
    for rule in policy.deny:
        if _deny_matches(rule, req, who):
            raise TapvirtError(
                POLICY_DENY_RULE, subject,
                f"{rule.label} in {policy.source} denies {req.describe()} for {who.name}",
                "ask the administrator; a deny rule wins over every allow rule",
                details={"rule": rule.label},
            )
    reasons: list[str] = []
    for rule in policy.allow:
        if not who.matches(rule.users, rule.groups):
            continue
        why_not = _allow_mismatch(rule, req, who)
        if why_not is not None:
            reasons.append(f"{rule.label}: {why_not}")
            continue
        if req.queues > rule.max_queues:
            raise TapvirtError(
                POLICY_QUOTA, subject,
                f"{req.queues} queues exceed max_queues {rule.max_queues} of {rule.label}",
                f"ask for at most {rule.max_queues} queues",
                details={"rule": rule.label},
            )
        if existing + 1 > rule.max_devices:
            raise TapvirtError(
                POLICY_QUOTA, subject,
                f"{req.owner.name} already has {existing} device(s); max_devices of "
                f"{rule.label} is {rule.max_devices}",
                "delete a device first: tapvirt-prep list; tapvirt-prep delete NAME",
                details={"rule": rule.label},
            )
        return Decision(True, rule.label, "allowed", rule.max_devices)
    cause = (f"no allow rule covers {req.describe()} for {who.name}: " + "; ".join(reasons)
             if reasons else f"no allow rule names {who.name} (deny by default)")
    raise TapvirtError(
        POLICY_DENIED, subject, cause,
        f"ask the administrator to add an [[allow]] rule to {policy.source}",
        details={"rule": "default", "reasons": reasons},
    )


def group_entry(name: str) -> tuple[int, str]:
    try:
        g = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except KeyError:
        raise TapvirtError(
            UNKNOWN_USER, f"--group {name!r}", "no such group",
            "give an existing group name or a numeric gid",
        ) from None
    return g.gr_gid, g.gr_name
