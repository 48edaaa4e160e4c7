"""Who is asking tapvirt-prep, and which administrator-only overrides they may use.

Supported ways to run tapvirt-prep (docs/prep.md):
- through sudo, pkexec or doas: the requester is the invoking user they name (SUDO_UID
  and SUDO_USER, PKEXEC_UID, DOAS_USER); the policy applies to them. A variable that is
  present but malformed or unknown, or variables naming different users, are refused:
  never read as root;
- from a setuid-root wrapper or with a real uid other than 0: the real uid;
- as root with `--requester USER` (a root service acting for a user): that user;
- as root, plainly: root, who may act for anyone and is not subject to the policy.

Overrides of the policy path, log file and node directory (and --requester itself) are
honoured only for real root not under sudo: a sudo user must never point tapvirt-prep at
a policy of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from tapvirt.errors import TapvirtError
from tapvirt.prep.errors import NOT_ROOT, OVERRIDE_REFUSED, REQUESTER_INVALID
from tapvirt.prep.policy import Principal, Requester

POLICY_ENV = "TAPVIRT_PREP_POLICY"


def current_requester(env: Mapping[str, str], requester_opt: str | None) -> Requester:
    if os.geteuid() != 0:
        raise TapvirtError(
            NOT_ROOT, "tapvirt-prep", "runs without root privileges",
            "run it through sudo or a root service (see docs/prep.md)",
        )
    ruid = os.getuid()
    via = Requester(Principal.from_uid(ruid), "uid") if ruid != 0 else _sudo(env)
    if requester_opt is not None:
        if via is not None:
            raise _refused("--requester", via)
        return Requester(Principal.from_name(requester_opt, what="--requester"), "service")
    return via or Requester(Principal.from_uid(0), "root")


_UID = re.compile(r"[0-9]{1,10}")  # ASCII digits only: int() also takes " 7", Arabic digits


def _sudo(env: Mapping[str, str]) -> Requester | None:
    """The user behind sudo, pkexec or doas, from the variables they set (SUDO_UID and
    SUDO_USER, PKEXEC_UID, DOAS_USER). Present but malformed, unknown, or naming
    different users: refused, never a fallback to root. None: plain root."""
    found: list[tuple[str, Principal]] = []
    if "SUDO_UID" in env:
        found.append(("sudo", Principal.from_uid(_uid(env, "SUDO_UID"))))
    if "SUDO_USER" in env:
        found.append(("sudo", _named(env, "SUDO_USER")))
    if "PKEXEC_UID" in env:
        found.append(("pkexec", Principal.from_uid(_uid(env, "PKEXEC_UID"))))
    if "DOAS_USER" in env:
        found.append(("doas", _named(env, "DOAS_USER")))
    uids = {p.uid for _, p in found}
    if len(uids) > 1:
        listed = ", ".join(sorted({f"{k}={env[k]!r}" for k in _VARS if k in env}))
        raise TapvirtError(
            REQUESTER_INVALID, "requester", f"the environment names different users: {listed}",
            "run tapvirt-prep through one of sudo, pkexec or doas, without the others' "
            "variables (env -u VAR)",
        )
    if not found or uids == {0}:
        return None
    via = found[0][0]
    return Requester(found[0][1], via)


_VARS = ("SUDO_UID", "SUDO_USER", "PKEXEC_UID", "DOAS_USER")


def _uid(env: Mapping[str, str], var: str) -> int:
    value = env[var]
    if not _UID.fullmatch(value):
        raise TapvirtError(
            REQUESTER_INVALID, var, f"is {value!r}, not a numeric uid",
            f"unset {var} or run tapvirt-prep through sudo/pkexec, which set it",
        )
    return int(value)


def _named(env: Mapping[str, str], var: str) -> Principal:
    value = env[var]
    if _UID.fullmatch(value):
        return Principal.from_uid(int(value))
    try:
        return Principal.from_name(value, what=var) if value else _empty(var)
    except TapvirtError as err:
        raise TapvirtError(REQUESTER_INVALID, var, f"is {value!r}: {err.cause}",
                           f"unset {var} or run tapvirt-prep through sudo or doas") from None


def _empty(var: str) -> Principal:
    raise TapvirtError(REQUESTER_INVALID, var, "is empty", f"unset {var}")


def _refused(option: str, who: Requester) -> TapvirtError:
    return TapvirtError(
        OVERRIDE_REFUSED, option,
        f"is for root only; this run acts for {who.principal.name} (via {who.via})",
        "leave it out: the system policy /etc/tapvirt/prep.toml applies",
    )


def admin_override(requester: Requester, option: str, value: str | None) -> str | None:
    """`value` if this requester may override `option`; an error if not; None if unset."""
    if value is None:
        return None
    if requester.via not in ("root", "service"):
        raise _refused(option, requester)
    return value
