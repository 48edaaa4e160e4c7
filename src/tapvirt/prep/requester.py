"""Who is asking tapvirt-prep, and which administrator-only overrides they may use.

Supported ways to run tapvirt-prep (docs/prep.md):
- through sudo: the requester is SUDO_UID (or SUDO_USER), which sudo sets from the
  invoking user; the policy applies to them;
- from a setuid-root wrapper or with a real uid other than 0: the real uid;
- as root with `--requester USER` (a root service acting for a user): that user;
- as root, plainly: root, who may act for anyone and is not subject to the policy.

Overrides of the policy path, log file and node directory (and --requester itself) are
honoured only for real root not under sudo: a sudo user must never point tapvirt-prep at
a policy of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tapvirt.errors import TapvirtError
from tapvirt.prep.errors import NOT_ROOT, OVERRIDE_REFUSED
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


def _sudo(env: Mapping[str, str]) -> Requester | None:
    uid = env.get("SUDO_UID", "")
    if uid.isdigit():
        return None if int(uid) == 0 else Requester(Principal.from_uid(int(uid)), "sudo")
    user = env.get("SUDO_USER", "")
    if user and user != "root":
        return Requester(Principal.from_name(user, what="SUDO_USER"), "sudo")
    return None


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
