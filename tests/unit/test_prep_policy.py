"""tapvirt-prep's policy decisions and name checks as pure logic (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapvirt.errors import TapvirtError
from tapvirt.host.admin import make_mark, parse_mark
from tapvirt.prep.names import check_ifname, normalize_mac, random_tap_mac
from tapvirt.prep.policy import Principal, Request, Requester, decide, parse_policy

ALICE = Principal(1001, "alice", frozenset({1001, 2000}), frozenset({"alice", "kvm"}))
BOB = Principal(1002, "bob", frozenset({1002}), frozenset({"bob"}))

POLICY = """
[[allow]]
name = "kvm users"
groups = ["kvm"]
kinds = ["tap", "macvtap"]
bridges = ["br0", "lab-*"]
links = ["eth1"]
names = ["{user}-*"]
netns = ["", "tv-*"]
max_devices = 2
max_queues = 4

[[allow]]
users = ["bob"]
act_for = ["alice"]
names = ["shared*"]

[[deny]]
bridges = ["lab-secret"]
"""


def _decide(who: Principal, req: Request, existing: int = 0, text: str = POLICY) -> str:
    policy = parse_policy(text, source="test.toml")
    return decide(policy, Requester(who, "sudo"), req, existing).rule


def _code(who: Principal, req: Request, existing: int = 0) -> str:
    with pytest.raises(TapvirtError) as exc:
        _decide(who, req, existing)
    return exc.value.code.code


def tap(name: str, owner: Principal = ALICE, **kw: object) -> Request:
    return Request("tap", name, owner, **kw)  # type: ignore[arg-type]


def test_group_rule_allows_with_user_pattern() -> None:
    assert _decide(ALICE, tap("alice-0", bridge="lab-1")) == 'allow[0] "kvm users"'
    assert _decide(ALICE, tap("alice-0", netns="tv-x")) == 'allow[0] "kvm users"'


@pytest.mark.parametrize(("req", "code"), [
    (tap("bob-0"), "policy-denied"),  # pattern is {user}-*
    (tap("alice-0", bridge="br9"), "policy-denied"),
    (tap("alice-0", bridge="lab-secret"), "policy-deny-rule"),
    (tap("alice-0", netns="prod"), "policy-denied"),
    (tap("alice-0", queues=5), "policy-quota"),
    (Request("macvtap", "alice-0", ALICE, link="eth0", mode="bridge"), "policy-denied"),
    (Request("macvtap", "alice-0", ALICE, link="eth1", mode="passthru"), "policy-denied"),
    (tap("alice-0", owner=BOB), "policy-denied"),  # acting for someone else
])
def test_denials(req: Request, code: str) -> None:
    assert _code(ALICE, req) == code


def test_quota_and_act_for() -> None:
    assert _code(ALICE, tap("alice-2"), existing=2) == "policy-quota"
    assert _decide(BOB, tap("shared0", owner=ALICE)) == "allow[1]"
    assert _code(BOB, tap("bob-0")) == "policy-denied"  # no rule of bob's covers it
    text = POLICY.replace('act_for = ["alice"]', 'act_for = ["@kvm"]')
    assert _decide(BOB, tap("shared0", owner=ALICE), text=text) == "allow[1]"
    assert _code(BOB, tap("shared0", owner=Principal(7, "eve", frozenset(), frozenset()))) \
        == "policy-denied"


def test_macvtap_allowed_on_listed_link_and_default_mode() -> None:
    req = Request("macvtap", "alice-m", ALICE, link="eth1", mode="bridge")
    assert _decide(ALICE, req) == 'allow[0] "kvm users"'


def test_root_acts_for_anyone_and_missing_policy_denies() -> None:
    root = Requester(Principal(0, "root", frozenset({0}), frozenset({"root"})), "root")
    policy = parse_policy("", source="x")
    assert decide(policy, root, tap("anything", owner=BOB), 99).rule == "root"
    with pytest.raises(TapvirtError) as exc:
        decide(policy, Requester(ALICE, "sudo"), tap("alice-0"), 0)
    assert exc.value.code.code == "policy-denied"


@pytest.mark.parametrize("text", [
    "[[allow]]\nusers=['a']\nfoo=1\n", "[[allow]]\nkinds=['tap']\n", "[[deny]]\n",
    "[[allow]]\nusers=['a']\nmax_devices=-1\n", "[[allow]]\nusers=['a']\nmodes=['x']\n",
    "allow = 3\n", "[other]\n", "[settings]\nlog_file = 3\n",
])
def test_invalid_policies(text: str) -> None:
    with pytest.raises(TapvirtError) as exc:
        parse_policy(text, source="bad.toml")
    assert exc.value.code.code == "policy-invalid"


@pytest.mark.parametrize("name", ["a;rm", "../x", "x y", "a" * 16, ".", "..", "-x", "a/b",
                                  "", "é", "a:b", "tab\t"])
def test_bad_names(name: str) -> None:
    with pytest.raises(TapvirtError) as exc:
        check_ifname(name)
    assert exc.value.code.code == "invalid-name"


def test_good_names_and_macs() -> None:
    assert check_ifname("a" * 15) == "a" * 15
    assert check_ifname("vnet0.100") == "vnet0.100"
    assert normalize_mac("52-54-00-AA-BB-CC") == "52:54:00:aa:bb:cc"
    avoid = frozenset({"fe:00:00:00:00:01"})
    for _ in range(200):
        mac = random_tap_mac(avoid)
        assert mac.startswith("fe:") and mac not in avoid


def test_mark_round_trip_and_foreign_aliases() -> None:
    mark = make_mark({"user": "1001", "node": "/dev/tap5"})
    assert parse_mark(mark) == {"user": "1001", "node": "/dev/tap5"}
    assert parse_mark("my uplink") is None and parse_mark(None) is None
    assert parse_mark("tapvirt-prep:v1x user=1") is None


def test_the_documented_example_policy_parses() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "prep.md").read_text()
    text = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(text, source="docs/prep.md")
    assert [r.label for r in policy.allow] == ['allow[0] "lab users"']
    assert policy.deny[0].links == ("eth0",)
    assert policy.settings.node_dir == "/dev/tapvirt-prep"


def test_prep_imports_nothing_from_qemu() -> None:
    import subprocess
    import sys

    code = ("import sys, tapvirt.cli.prep, tapvirt.prep.verbs, tapvirt.prep.requester, "
            "tapvirt.host.admin, tapvirt.conf.parse\n"
            "print(sorted(m for m in sys.modules if m.startswith('tapvirt.qemu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("effect", ["allow", "deny"])
@pytest.mark.parametrize("key", ["users", "groups", "kinds", "names", "bridges", "links",
                                 "modes", "netns"])
def test_an_empty_list_is_invalid_not_match_anything(effect: str, key: str) -> None:
    # before: `kinds = []` or `names = []` in an allow rule allowed every kind / name
    who = 'groups = ["kvm"]' if key == "users" else 'users = ["alice"]'
    text = f"[[{effect}]]\n{who}\n{key} = []\n"
    with pytest.raises(TapvirtError) as exc:
        parse_policy(text, source="p.toml")
    assert exc.value.code.code == "policy-invalid"
    assert key in exc.value.subject and "empty list" in exc.value.cause


def test_empty_act_for_and_device_groups_mean_none() -> None:
    policy = parse_policy('[[allow]]\nusers = ["alice"]\nact_for = []\ndevice_groups = []\n',
                          source="p.toml")
    assert policy.allow[0].act_for == () and policy.allow[0].device_groups == ()


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000,
                                  "a = " + "{b = " * 3000 + "1" + "}" * 3000])
def test_deeply_nested_policy_is_invalid_not_a_recursion_error(text: str) -> None:
    with pytest.raises(TapvirtError) as exc:
        parse_policy(text, source="deep.toml")
    assert exc.value.code.code == "policy-invalid" and "nested" in exc.value.cause


@pytest.mark.parametrize("env", [
    {"SUDO_UID": "999 "}, {"SUDO_UID": " 999"}, {"SUDO_UID": "\u0661\u0660\u0660\u0661"},
    {"SUDO_UID": ""}, {"SUDO_UID": "-1"}, {"SUDO_UID": "99999999999"},
    {"SUDO_USER": "no-such-user-tv"}, {"SUDO_USER": ""}, {"PKEXEC_UID": "x"},
    {"DOAS_USER": "no-such-user-tv"},
    {"SUDO_UID": "65534", "DOAS_USER": "root"},  # two mechanisms naming different users
    {"SUDO_UID": "65534", "SUDO_USER": "root"},
])
def test_malformed_or_contradicting_requester_variables_are_refused(
    env: dict[str, str]
) -> None:
    from tapvirt.prep.requester import _sudo

    with pytest.raises(TapvirtError) as exc:
        _sudo(env)
    assert exc.value.code.code == "requester-invalid"


def test_sudo_pkexec_and_doas_callers() -> None:
    from tapvirt.prep.requester import _sudo

    assert _sudo({}) is None and _sudo({"SUDO_UID": "0", "SUDO_USER": "root"}) is None
    sudo = _sudo({"SUDO_UID": "65534", "SUDO_USER": "nobody"})
    assert sudo is not None and (sudo.principal.uid, sudo.via) == (65534, "sudo")
    pkexec = _sudo({"PKEXEC_UID": "65534"})
    assert pkexec is not None and (pkexec.principal.uid, pkexec.via) == (65534, "pkexec")
    doas = _sudo({"DOAS_USER": "nobody"})
    assert doas is not None and (doas.principal.name, doas.via) == ("nobody", "doas")
    assert _sudo({"DOAS_USER": "root"}) is None


def test_node_dir_registry_records_once_and_prunes_missing_dirs(tmp_path: Path) -> None:
    from tapvirt.host import privnodes

    if os.geteuid() != 0:
        pytest.skip("the record is trusted only when root owns it")
    registry = str(tmp_path / "dirs")
    live, gone = tmp_path / "live", tmp_path / "gone"
    live.mkdir()
    for d in (live, gone, live):
        privnodes.register_dir(str(d), registry)
    assert privnodes.registered_dirs(registry) == [str(live), str(gone)]
    assert privnodes.node_dirs(str(tmp_path / "new"), registry)[-1] == str(tmp_path / "new")
    privnodes.prune_registry(registry)
    assert privnodes.registered_dirs(registry) == [str(live)]
    os.chmod(registry, 0o666)  # a record others could write is not trusted at all
    assert privnodes.registered_dirs(registry) == []


def test_revoke_only_node_dirs_are_searched_for_stale_nodes_but_never_collected(
    tmp_path: Path,
) -> None:
    """tapvirt-cni's pod node directories: a new macvtap's number is revoked there too,
    but gc (which judges a node by the namespace in its name) never looks in them."""
    from tapvirt.host import privnodes

    if os.geteuid() != 0:
        pytest.skip("the record is trusted only when root owns it")
    registry = str(tmp_path / "dirs")
    prep_dir, pod_dir, gone = tmp_path / "prep", tmp_path / "pod", tmp_path / "gone"
    prep_dir.mkdir()
    pod_dir.mkdir()
    privnodes.register_dir(str(prep_dir), registry)
    for d in (pod_dir, gone, pod_dir):
        privnodes.register_dir(str(d), registry, collect=False)
    assert privnodes.registered_dirs(registry) == [str(prep_dir), str(pod_dir), str(gone)]
    assert privnodes.node_dirs(str(prep_dir), registry, collected_only=True) == [str(prep_dir)]
    privnodes.prune_registry(registry)
    assert privnodes.registered_dirs(registry) == [str(prep_dir), str(pod_dir)]
    assert privnodes.registered_dirs(registry, collected_only=True) == [str(prep_dir)]
