"""`tapvirt-prep`: the privileged preparer's command line (see tapvirt.prep, docs/prep.md).

Exit codes: 0 done (created, or already there and matching), 1 error, 2 usage,
3 refused by the policy, 4 a device is in the way (not ours, or ours but different),
70 internal error (a bug).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

_COMMON_HELP = "network namespace (a name under /run/netns) to work in"


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting, so that a usage error can
    be reported as JSON under --json (subparsers are made of the same class)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def _wants_json(argv: list[str]) -> bool:
    options = argv[:argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("--netns", metavar="NS", help=_COMMON_HELP)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="also log every decision to stderr")
    common.add_argument("--policy", metavar="PATH",
                        help="policy file (root only; default /etc/tapvirt/prep.toml)")
    common.add_argument("--log-file", metavar="PATH", help="decision log file (root only)")
    common.add_argument("--node-dir", metavar="DIR",
                        help="directory for private macvtap nodes (root only)")
    common.add_argument("--requester", metavar="USER",
                        help="root service acting for USER: apply the policy to USER")

    owner = _Parser(add_help=False)
    owner.add_argument("--user", help="user who gets the device (--user and/or --group)")
    owner.add_argument("--group", help="group that gets the device; with --user, the "
                       "kernel lets only that user attach, and only while in the group")

    parser = _Parser(
        prog="tapvirt-prep",
        description="Create tap and macvtap devices for unprivileged tapvirt users, "
        "under a deny-by-default policy.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 denied by policy, "
        "4 device in the way (foreign or mismatching), 70 bug",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    tap = sub.add_parser("tap", parents=[common, owner], help="create a persistent tap")
    tap.add_argument("name", metavar="NAME")
    tap.add_argument("--bridge", metavar="BR", help="enslave the tap to this bridge")
    tap.add_argument("--queues", type=int, default=1, help="queues (multi_queue iff > 1)")
    tap.add_argument("--mac", help="tap MAC (default: random fe:xx:xx:xx:xx:xx)")
    tap.add_argument("--guest-mac", action="append", default=[], metavar="MAC",
                     help="a guest MAC the tap must not carry (repeatable)")
    tap.add_argument("--mtu", type=int, help="MTU (default: the bridge's)")

    mvt = sub.add_parser("macvtap", parents=[common, owner],
                         help="create a macvtap and give the user its char device")
    mvt.add_argument("name", metavar="NAME")
    mvt.add_argument("--link", required=True, metavar="DEV", help="lower device")
    mvt.add_argument("--mac", required=True, help="the guest's MAC")
    mvt.add_argument("--mode", default="bridge",
                     choices=["bridge", "vepa", "private", "passthru"])
    mvt.add_argument("--queues", type=int, default=1, help="queues (opens of the node)")
    mvt.add_argument("--private-node", action="store_true",
                     help="always make a private node instead of using /dev/tapN")

    dom = sub.add_parser("from-domain", parents=[common, owner],
                         help="create every device a domain's managed='no' interfaces name")
    dom.add_argument("file", metavar="FILE", help="libvirt domain XML")
    dom.add_argument("--bridge", metavar="BR", help="enslave the taps to this bridge")
    dom.add_argument("--macvtap-link", metavar="DEV",
                     help="make every device a macvtap on DEV instead of a tap")
    dom.add_argument("--macvtap", action="append", default=[], metavar="NAME=DEV",
                     help="make device NAME a macvtap on DEV (repeatable)")
    dom.add_argument("--macvtap-mode", default="bridge",
                     choices=["bridge", "vepa", "private", "passthru"])
    dom.add_argument("--private-node", action="store_true",
                     help="always make private macvtap nodes")

    dele = sub.add_parser("delete", parents=[common], help="delete a device tapvirt-prep made")
    dele.add_argument("name", metavar="NAME")
    dele.add_argument("--force", action="store_true",
                      help="delete a tap even while it is attached (a guest runs on it)")

    sub.add_parser("list", parents=[common], help="list devices tapvirt-prep made")
    sub.add_parser("gc", parents=[common],
                   help="remove private macvtap nodes whose device is gone (all namespaces)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        return _usage_error(exc, as_json=_wants_json(argv))
    args.argv = argv
    from tapvirt.errors import INTERNAL, TapvirtError
    from tapvirt.prep.errors import exit_code

    try:
        return _run(args)
    except TapvirtError as err:
        _report(err, as_json=args.json)
        return exit_code(err.code)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line, traceback on request
        if "TAPVIRT_DEBUG" in os.environ:
            raise
        bug = TapvirtError(
            INTERNAL, "tapvirt-prep", f"unexpected {type(exc).__name__}: {exc}",
            "please report this; run with TAPVIRT_DEBUG=1 for a traceback",
        )
        _report(bug, as_json=args.json)
        return 70


def _usage_error(exc: _UsageError, *, as_json: bool) -> int:
    from tapvirt.errors import USAGE, TapvirtError

    if not as_json:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {_one_line(exc.message)}", file=sys.stderr)
        return 2
    err = TapvirtError(USAGE, exc.parser.prog, exc.message,
                       f"see {exc.parser.prog} --help",
                       details={"usage": exc.parser.format_usage().strip()})
    _report(err, as_json=True)
    return 2


def _one_line(text: str) -> str:
    """Control and other unprintable characters escaped: a file path or XML value
    with a newline cannot start a line of its own on stderr."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _report(err: Any, *, as_json: bool) -> None:
    from tapvirt.cli.common import print_json

    if as_json:
        print_json({"ok": False, "error": err.to_json()})
        return
    text = f"error[{err.code.code}]: {_one_line(err.message)}"
    if err.fix:
        text += f"\n  fix: {_one_line(err.fix)}"
    print(text, file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from tapvirt.errors import TapvirtError
    from tapvirt.prep.log import DecisionLog
    from tapvirt.prep.policy import DEFAULT_POLICY, load_policy
    from tapvirt.prep.requester import POLICY_ENV, admin_override, current_requester

    requester = current_requester(os.environ, args.requester)
    policy_path = admin_override(requester, "--policy", args.policy)
    if policy_path is None and requester.via in ("root", "service"):
        policy_path = os.environ.get(POLICY_ENV) or None  # ignored under sudo
    policy = load_policy(policy_path or DEFAULT_POLICY)
    log_file = admin_override(requester, "--log-file", args.log_file)
    log = DecisionLog(verbose=args.verbose, log_file=log_file or policy.settings.log_file)
    node_dir = admin_override(requester, "--node-dir", args.node_dir)

    # Written first: an unwritable log stops us before anything changes. Every field
    # is JSON-quoted: a name like "x\ny" cannot forge a log line.
    log.event("request", requester=requester.principal.name, via=requester.via,
              argv=args.argv)
    try:
        # the user's file is read (bounded) before the lock: it cannot hold up other runs
        domain = _read_domain(args.file, requester) if args.verb == "from-domain" else None
        return _enter_and_dispatch(args, requester, policy, log, node_dir, domain=domain)
    except TapvirtError as err:
        # decisions are logged where they are made; this records every other failure
        if err.code.code != "log-unwritable":
            log.event("failed", requester=requester.principal.name, verb=args.verb,
                      code=err.code.code, message=err.message)
        raise


def _enter_and_dispatch(args: argparse.Namespace, requester: Any, policy: Any, log: Any,
                        node_dir: str | None, *, domain: Any) -> int:
    from tapvirt.cli.common import print_json
    from tapvirt.errors import USAGE, TapvirtError
    from tapvirt.host import admin
    from tapvirt.netcodes import HOST_ERROR
    from tapvirt.prep import lock, verbs
    from tapvirt.prep.errors import NETNS_MISSING
    from tapvirt.prep.names import check_netns

    netns = check_netns(args.netns) if args.netns else None
    if args.verb == "gc" and netns is not None:
        raise TapvirtError(USAGE, "tapvirt-prep gc --netns",
                           "gc looks at the nodes of every namespace, not of one",
                           "leave out --netns")
    lock.acquire()
    if netns is not None:
        try:
            admin.enter_netns(netns)
        except (FileNotFoundError, NotADirectoryError):
            raise TapvirtError(
                NETNS_MISSING, f"--netns {netns}", f"no namespace {admin.NETNS_DIR}/{netns}",
                "create it (ip netns add NAME) or name one from `ip netns list`",
            ) from None
    # sysfs must show this namespace (macvtap char devices); a private mount namespace
    # keeps the remount to ourselves.
    try:
        admin.private_sysfs()
    except OSError as exc:
        if args.verb in ("macvtap", "from-domain", "gc"):
            raise TapvirtError(
                HOST_ERROR, "sysfs", f"cannot mount a private sysfs for this namespace: {exc}",
                "run tapvirt-prep as real root (CAP_SYS_ADMIN is needed to read a macvtap's "
                "device number inside its namespace)",
            ) from None
    with admin.Admin() as adm:
        ctx = verbs.Context(requester, policy, log, adm, netns,
                            node_dir or policy.settings.node_dir)
        out: Any
        if args.verb == "list":
            devices = verbs.list_devices(ctx)
            if args.json:
                print_json({"ok": True, "netns": netns, "devices": devices})
            else:
                for d in devices:
                    print(" ".join(f"{k}={v}" for k, v in d.items() if v not in (None, "")))
            return 0
        if args.verb == "gc":
            removed = verbs.gc(ctx)
            if args.json:
                print_json({"ok": True, "removed": removed})
            else:
                for gone in removed:
                    print(f"removed {gone['node']} (device {gone['rdev']} is gone)")
                if not removed:
                    print("nothing to remove: every node belongs to a live device")
            return 0
        if args.verb == "delete":
            results = [verbs.delete(ctx, args.name, force=args.force)]
        elif args.verb == "tap":
            results = [verbs.prepare_tap(ctx, _tap_spec(args, requester))]
        elif args.verb == "macvtap":
            results = [verbs.prepare_macvtap(ctx, _macvtap_spec(args, requester))]
        else:
            results = verbs.from_domain(ctx, domain, _domain_opts(args, requester))
        if args.json:
            out = {"ok": True, "netns": netns, "results": [r.to_json() for r in results]}
            print_json(out)
        else:
            if not results:
                print("nothing to do: the domain has no managed='no' ethernet interface")
            for r in results:
                print(r.render())
                for warning in r.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
        return 0


def _owner(args: argparse.Namespace, requester: Any) -> tuple[Any, Any, bool]:
    """(owner, group, group_only). Without --user the device belongs to the group only;
    it is accounted to the requester."""
    from tapvirt.errors import USAGE, TapvirtError
    from tapvirt.prep.policy import Principal, group_entry

    group = group_entry(args.group) if args.group else None
    if args.user is None:
        if group is None:
            raise TapvirtError(USAGE, f"tapvirt-prep {args.verb}",
                               "needs --user U, --group G or both", "add --user USER")
        return requester.principal, group, True
    return Principal.from_name(args.user), group, False


def _tap_spec(args: argparse.Namespace, requester: Any) -> Any:
    from tapvirt.prep.names import check_mtu, normalize_mac
    from tapvirt.prep.verbs import TapSpec

    owner, group, group_only = _owner(args, requester)
    return TapSpec(
        args.name, owner, group, args.bridge, args.queues,
        normalize_mac(args.mac) if args.mac else None,
        check_mtu(args.mtu) if args.mtu is not None else None,
        frozenset(normalize_mac(m, what="--guest-mac") for m in args.guest_mac),
        group_only,
    )


def _macvtap_spec(args: argparse.Namespace, requester: Any) -> Any:
    from tapvirt.prep.names import normalize_mac
    from tapvirt.prep.verbs import MacvtapSpec

    owner, group, group_only = _owner(args, requester)
    return MacvtapSpec(args.name, owner, args.link, normalize_mac(args.mac), args.mode,
                       group, args.queues, args.private_node, group_only)


def _domain_opts(args: argparse.Namespace, requester: Any) -> Any:
    from tapvirt.errors import TapvirtError
    from tapvirt.prep.errors import BAD_REQUEST
    from tapvirt.prep.verbs import DomainOptions

    owner, group, group_only = _owner(args, requester)
    per_dev: dict[str, str] = {}
    for item in args.macvtap:
        name, sep, link = item.partition("=")
        if not sep or not name or not link:
            raise TapvirtError(BAD_REQUEST, f"--macvtap {item!r}", "expected NAME=DEV",
                               "e.g. --macvtap mvt0=eth1")
        per_dev[name] = link
    return DomainOptions(owner, group, args.bridge, args.macvtap_link, per_dev,
                         args.macvtap_mode, args.private_node, group_only)


def _read_domain(path: str, requester: Any) -> Any:
    """Read and parse the domain XML with the requester's file permissions (root reading
    a file for a sudo user must not let them see a file they could not read), before
    the global lock is taken, and bounded: a regular file of at most 1 MiB."""
    from tapvirt.errors import FILE_UNREADABLE, TapvirtError
    from tapvirt.prep.files import DOMAIN_LIMIT, read_regular

    who = requester.principal
    saved = (os.getegid(), os.getgroups())
    try:
        if not requester.is_root:
            os.setgroups(sorted(who.gids))
            os.setegid(min(who.gids) if who.gids else who.uid)
            os.seteuid(who.uid)
        try:
            text = read_regular(path, limit=DOMAIN_LIMIT, what="domain file").decode("utf-8")
        finally:
            if not requester.is_root:
                os.seteuid(0)
                os.setegid(saved[0])
                os.setgroups(saved[1])
    except (OSError, UnicodeDecodeError) as exc:
        raise TapvirtError(FILE_UNREADABLE, repr(path), f"cannot be read by {who.name}: "
                           f"{getattr(exc, 'strerror', None) or exc}",
                           "give the path of a libvirt domain XML file the user can read") from None
    from tapvirt.conf.parse import parse_domain  # type: ignore[import-not-found,unused-ignore]

    return parse_domain(text, source=path)


if __name__ == "__main__":
    raise SystemExit(main())
