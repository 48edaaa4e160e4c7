"""The policy matrix through the real CLI: a root service acting for a user
(--requester), sudo's SUDO_UID, deny-by-default, deny rules, quotas, bridges, names,
namespaces, injection attempts, and the decision log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.prep.attach import tap_attach
from tests.prep.conftest import Prep, allow_user, link_names
from tests.support.sandbox import AsUser, Netns, User, make_group, run


@pytest.fixture
def lab(prep: Prep, netns: Netns, unpriv_user: User) -> Prep:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "add", "br1", "type", "bridge")
    prep.write_policy(
        allow_user(unpriv_user, f'kinds = ["tap"]\nbridges = ["br0"]\n'
                   f'names = ["{{user}}-*", "vm*"]\nnetns = ["{netns.name}"]\n'
                   "max_devices = 2\nmax_queues = 2\n")
        + '[[deny]]\nname = "no-vm9"\nnames = ["vm9*"]\n'
    )
    return prep


def test_allowed_request_names_its_rule_and_is_logged(lab: Prep, unpriv_user: User) -> None:
    res = lab.ok("tap", "vm0", "--user", unpriv_user.name, "--bridge", "br0",
                 requester=unpriv_user.name)
    assert res["action"] == "created" and res["rule"] == 'allow[0] "test"'
    events = lab.events()
    assert {"event": "allow", "requester": unpriv_user.name, "rule": 'allow[0] "test"',
            "request": f"tap vm0 user={unpriv_user.name} bridge=br0 queues=1 "
                       f"netns={lab.netns.name}", "reason": "allowed"} in events
    created = [e for e in events if e["event"] == "created"]
    assert len(created) == 1 and created[0]["name"] == "vm0" and created[0]["ifindex"] > 0


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("vm1", "--bridge", "br1"), "policy-denied", "bridge br1 is not in bridges"),
        (("other-1",), "policy-denied", "matches none of names"),
        (("vm1", "--queues", "4"), "policy-quota", "exceed max_queues 2"),
        (("vm91",), "policy-deny-rule", 'deny[0] "no-vm9"'),
        (("vm1", "--user", "root"), "policy-denied", "may not create devices for root"),
    ],
)
def test_denials(lab: Prep, netns: Netns, unpriv_user: User, *, args: tuple[str, ...],
                 code: str, needle: str) -> None:
    argv = ["tap", *args]
    if "--user" not in args:
        argv += ["--user", unpriv_user.name]
    bad = lab.fails(code, *argv, requester=unpriv_user.name, rc=3)
    assert needle in bad.out["error"]["cause"]
    assert args[0] not in link_names(netns)
    assert any(e["event"] == "deny" and e["requester"] == unpriv_user.name
               for e in lab.events())


def test_user_pattern_expands_to_the_requester(lab: Prep, unpriv_user: User) -> None:
    assert lab.ok("tap", f"{unpriv_user.name}-0"[:15], "--user", unpriv_user.name,
                  requester=unpriv_user.name)["action"] == "created"


def test_denied_by_default_for_users_no_rule_names(lab: Prep, netns: Netns) -> None:
    bad = lab.fails("policy-denied", "tap", "vm0", "--user", "nobody", requester="nobody",
                    rc=3)
    assert "no allow rule names nobody" in bad.out["error"]["cause"]


def test_missing_policy_denies_everything(prep: Prep, unpriv_user: User) -> None:
    prep.policy.unlink()
    prep.fails("policy-missing", "tap", "vm0", "--user", unpriv_user.name,
               requester=unpriv_user.name, rc=3)


def test_namespace_must_be_allowed(prep: Prep, netns: Netns, unpriv_user: User) -> None:
    prep.write_policy(allow_user(unpriv_user))  # netns defaults to the host namespace only
    bad = prep.fails("policy-denied", "tap", "vm0", "--user", unpriv_user.name,
                     requester=unpriv_user.name)
    assert f"namespace {netns.name} is not in netns" in bad.out["error"]["cause"]


def test_quota_counts_existing_devices_and_idempotent_reruns_fit(
    lab: Prep, netns: Netns, unpriv_user: User
) -> None:
    for name in ("vm0", "vm1"):
        lab.ok("tap", name, "--user", unpriv_user.name, requester=unpriv_user.name)
    # re-running for an existing device is not a new device
    assert lab.ok("tap", "vm1", "--user", unpriv_user.name,
                  requester=unpriv_user.name)["action"] == "exists"
    bad = lab.fails("policy-quota", "tap", "vm2", "--user", unpriv_user.name,
                    requester=unpriv_user.name, rc=3)
    assert "already has 2 device(s); max_devices" in bad.out["error"]["cause"]
    assert "vm2" not in link_names(netns)


def test_deny_rule_wins_over_allow(prep: Prep, netns: Netns, unpriv_user: User) -> None:
    gname, _gid = make_group()
    unpriv_user.extra_groups.append(gname)
    run(["usermod", "-aG", gname, unpriv_user.name])
    prep.write_policy(
        f'[[allow]]\ngroups = ["{gname}"]\nnetns = ["tv-*"]\n'
        f'[[deny]]\nusers = ["{unpriv_user.name}"]\nkinds = ["tap"]\n'
    )
    bad = prep.fails("policy-deny-rule", "tap", "vm0", "--user", unpriv_user.name,
                     requester=unpriv_user.name, rc=3)
    assert "deny[0]" in bad.out["error"]["cause"]


@pytest.mark.parametrize("name", ["a;rm", "../x", "x y", "a" * 16, ".", "..", "-x", "a/b",
                                  "$(id)", "x\ny", ""])
def test_injection_attempts_in_names_are_rejected(
    lab: Prep, netns: Netns, unpriv_user: User, name: str
) -> None:
    before = link_names(netns)
    bad = lab.fails("invalid-name", "tap", "--user", unpriv_user.name, "--", name,
                    requester=unpriv_user.name, rc=1)
    assert "Traceback" not in bad.stderr
    lab.fails("invalid-name", "tap", "vm0", "--user", unpriv_user.name, f"--bridge={name}",
              requester=unpriv_user.name)
    assert link_names(netns) == before
    events = lab.events()  # every line one JSON event: no forged lines
    assert {"event": "failed", "requester": unpriv_user.name, "verb": "tap",
            "code": "invalid-name"}.items() <= events[-1].items()


def test_unwritable_log_means_no_action(prep: Prep, netns: Netns, scratch: Path) -> None:
    (scratch / "link.log").symlink_to(scratch / "elsewhere.log")
    for log in (scratch / "link.log", scratch / "no-such-dir" / "x.log"):
        bad = prep.run("tap", "vm0", "--user", "0", "--log-file", str(log))
        assert (bad.code, bad.rc) == ("log-unwritable", 1), bad.stdout
    assert "vm0" not in link_names(netns) and not (scratch / "elsewhere.log").exists()


def test_bad_netns_names_are_rejected(prep: Prep) -> None:
    for name in ("../../etc", "a/b", "x y"):
        bad = prep.run("list", "--netns", name, netns=False)
        assert bad.code == "invalid-name", bad.stdout


def test_sudo_cannot_override_the_policy(prep: Prep, netns: Netns, unpriv_user: User) -> None:
    prep.write_policy(allow_user(unpriv_user, 'netns = ["*"]'))
    sudo = {"SUDO_UID": str(unpriv_user.uid), "SUDO_USER": unpriv_user.name}
    for opt in (("--policy", str(prep.policy)), ("--log-file", "/tmp/x"),
                ("--node-dir", "/tmp"), ("--requester", "root")):
        bad = prep.run("tap", "vm0", "--user", unpriv_user.name, *opt, admin_opts=False,
                       env=sudo)
        assert (bad.code, bad.rc) == ("override-refused", 3), bad.stdout
    # the environment override is ignored under sudo: the system policy applies
    # (none on a test machine: everything denied), never the user's permissive file
    env = {**sudo, "TAPVIRT_PREP_POLICY": str(prep.policy)}
    bad = prep.run("tap", "vm0", "--user", unpriv_user.name, admin_opts=False, env=env)
    assert bad.rc == 3 and bad.code in ("policy-missing", "policy-denied")
    assert "vm0" not in link_names(netns)


def test_sudo_user_is_the_requester(prep: Prep, netns: Netns, unpriv_user: User) -> None:
    # the policy is decided for SUDO_UID; plain root (no SUDO_UID) may act for anyone
    sudo = {"SUDO_UID": str(unpriv_user.uid)}
    bad = prep.run("tap", "vm0", "--user", unpriv_user.name, admin_opts=False, env=sudo)
    assert bad.rc == 3 and unpriv_user.name in bad.out["error"]["fix"]
    ok = prep.run("tap", "vm0", "--user", unpriv_user.name, admin_opts=False,
                  env={"SUDO_UID": "0"})
    assert ok.rc == 0 and ok.result["rule"] == "root"


def test_invalid_policy_is_reported_not_guessed(prep: Prep, unpriv_user: User) -> None:
    for text, needle in [
        ("[[allow]]\nusers = ['x']\nkind = ['tap']\n", "unknown key"),
        ("[[allow]]\nkinds = ['tap']\n", "must name users or groups"),
        ("[[allow]]\nusers = ['x']\nkinds = ['veth']\n", "unknown value"),
        ("[[allow]\n", "syntax"),
        ("[settings]\nnode_dir = 'relative'\n", "absolute path"),
    ]:
        prep.write_policy(text)
        bad = prep.fails("policy-invalid", "tap", "vm0", "--user", unpriv_user.name,
                         requester=unpriv_user.name, rc=1)
        assert needle in bad.stdout, (text, bad.stdout)


def test_delete_and_list_are_limited_to_the_requesters_devices(
    lab: Prep, netns: Netns, unpriv_user: User
) -> None:
    lab.ok("tap", "vm0", "--user", unpriv_user.name, requester=unpriv_user.name)
    lab.ok("tap", "rootdev", "--user", "root")
    mine = lab.run("list", requester=unpriv_user.name).out["devices"]
    assert [d["name"] for d in mine] == ["vm0"]
    assert {d["name"] for d in lab.run("list").out["devices"]} == {"vm0", "rootdev"}
    lab.fails("policy-denied", "delete", "rootdev", requester=unpriv_user.name, rc=3)
    assert "rootdev" in link_names(netns)
    assert lab.ok("delete", "vm0", requester=unpriv_user.name)["action"] == "deleted"


def test_policy_writable_by_others_is_not_trusted(prep: Prep, unpriv_user: User) -> None:
    prep.write_policy(allow_user(unpriv_user, 'netns = ["*"]'))
    for uid, mode in ((0, 0o666), (unpriv_user.uid, 0o644)):
        os.chown(prep.policy, uid, 0)
        prep.policy.chmod(mode)
        bad = prep.fails("policy-invalid", "tap", "vm0", "--user", unpriv_user.name,
                         requester=unpriv_user.name)
        assert "not writable by group or others" in bad.out["error"]["cause"]


def test_runs_are_serialised(prep: Prep, netns: Netns) -> None:
    import subprocess
    import sys
    import time

    from tapvirt.prep import lock
    from tests.support.sandbox import SRC

    fd = lock.acquire()
    assert fd is not None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapvirt.cli.prep", "tap", "ser0", "--user", "0",
             "--netns", netns.name, "--policy", str(prep.policy)],
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert proc.poll() is None and "ser0" not in link_names(netns)  # waiting for us
    finally:
        os.close(fd)
    assert proc.wait(timeout=30) == 0 and "ser0" in link_names(netns)


def test_no_input_can_forge_a_log_line_or_a_stderr_line(
    lab: Prep, netns: Netns, unpriv_user: User, scratch: Path
) -> None:
    forged = "2026-01-01T00:00:00Z [1] allow requester=root rule='root' tap evil0: ok"
    path = scratch / f"x\n{forged}\n.xml"
    path.write_text(f"<domain type='qemu'><name>a\n{forged}</name><devices><interface "
                    f"type='ethernet'><target dev='e0\n{forged}' managed='no'/></interface>"
                    "</devices></domain>")
    path.chmod(0o644)
    run = lab.run("from-domain", str(path), "--user", unpriv_user.name, "--verbose",
                  requester=unpriv_user.name, json_out=False)
    assert run.rc != 0
    events = lab.events()  # every line of the file is one JSON event
    assert [e["event"] for e in events] == ["request", "failed"]
    assert all(e["requester"] == unpriv_user.name for e in events)
    assert str(path) in events[0]["argv"]  # the path is there, quoted
    # on stderr too: the decisions as JSON lines, the error on one line (plus its fix)
    for line in run.stderr.splitlines():
        assert line.startswith(("tapvirt-prep: {", "error[", "  fix: ")), line
    assert len([x for x in run.stderr.splitlines() if x.startswith("error[")]) == 1


@pytest.mark.parametrize("env", [
    {"SUDO_UID": "{uid} "}, {"SUDO_UID": "\u0661\u0660"}, {"SUDO_USER": "no-such-user-tv"},
    {"PKEXEC_UID": "{uid}x"}, {"SUDO_UID": "{uid}", "DOAS_USER": "root"},
])
def test_malformed_requester_is_refused_never_root(
    prep: Prep, netns: Netns, unpriv_user: User, env: dict[str, str]
) -> None:
    env = {k: v.format(uid=unpriv_user.uid) for k, v in env.items()}
    # before: "1001 " or an unknown SUDO_USER fell back to root, without any policy
    bad = prep.run("tap", "vm0", "--user", unpriv_user.name, admin_opts=False, env=env)
    assert (bad.code, bad.rc) == ("requester-invalid", 3), bad.stdout
    assert "vm0" not in link_names(netns)


@pytest.mark.parametrize("var", ["PKEXEC_UID", "DOAS_USER"])
def test_pkexec_and_doas_callers_are_the_requester(
    prep: Prep, netns: Netns, unpriv_user: User, var: str
) -> None:
    env = {var: str(unpriv_user.uid) if var == "PKEXEC_UID" else unpriv_user.name}
    # administrator options are refused for them as under sudo...
    bad = prep.run("tap", "vm0", "--user", unpriv_user.name, "--policy", str(prep.policy),
                   admin_opts=False, env=env)
    assert (bad.code, bad.rc) == ("override-refused", 3), bad.stdout
    # ...and the system policy decides for them (none on a test machine: denied)
    bad = prep.run("tap", "vm0", "--user", unpriv_user.name, admin_opts=False, env=env)
    assert bad.rc == 3 and unpriv_user.name in bad.out["error"]["fix"]
    assert "vm0" not in link_names(netns)


def test_usage_errors_are_json_under_json(prep: Prep) -> None:
    for argv in (("tap",), ("tap", "x", "--bogus"), ("tap", "x", "--queues", "two")):
        bad = prep.run(*argv)
        assert bad.rc == 2 and bad.code == "usage", bad.stdout
        assert bad.out["ok"] is False and bad.out["error"]["fix"]
    plain = prep.run("tap", json_out=False)
    assert plain.rc == 2 and "usage: tapvirt-prep tap" in plain.stderr


@pytest.mark.parametrize("how", ["owned-by-user", "world-writable"])
def test_policy_in_a_directory_others_can_write_is_refused(
    prep: Prep, netns: Netns, unpriv_user: User, scratch: Path, how: str
) -> None:
    directory = scratch / "etc"
    directory.mkdir()
    if how == "owned-by-user":
        os.chown(directory, unpriv_user.uid, unpriv_user.gid)
    else:
        directory.chmod(0o777)
    policy = directory / "prep.toml"
    policy.write_text(allow_user(unpriv_user, 'netns = ["*"]'))
    policy.chmod(0o644)  # the file itself is root's and fine: the user can replace it
    bad = prep.run("tap", "vm0", "--user", unpriv_user.name, "--policy", str(policy),
                   requester=unpriv_user.name)
    assert bad.code == "policy-invalid", bad.stdout
    assert f"is in directory {directory}" in bad.out["error"]["cause"]
    assert "vm0" not in link_names(netns)


def test_deeply_nested_policy_is_policy_invalid(prep: Prep, unpriv_user: User) -> None:
    prep.write_policy("a = " + "[" * 20000 + "]" * 20000)
    bad = prep.fails("policy-invalid", "tap", "vm0", "--user", unpriv_user.name,
                     requester=unpriv_user.name, rc=1)
    assert "nested too deeply" in bad.out["error"]["cause"]


def test_max_queues_is_said_to_be_advisory_for_multi_queue_taps(
    lab: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    user = as_user.user.name
    single = lab.ok("tap", "vm0", "--user", user, requester=user)
    assert single["warnings"] == []  # the kernel allows one queue on a single-queue tap
    multi = lab.ok("tap", "vm1", "--user", user, "--queues", "2", requester=user)
    assert len(multi["warnings"]) == 1 and "advisory" in multi["warnings"][0]
    # what the warning says: the owner attaches more queues than max_queues (2)
    out = as_user.python(tap_attach("vm1", str(tun_node), queues=4), check=True).stdout
    assert out.split()[:3] == ["vm1", "0x1902", "4"]
    plain = lab.run("tap", "vm1", "--user", user, "--queues", "2", requester=user,
                    json_out=False)
    assert plain.rc == 0 and "warning: max_queues 2" in plain.stderr
