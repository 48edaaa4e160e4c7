"""`tapvirt check` and `tapvirt domxml-to-native`: look at a domain's network, change nothing.

    tapvirt check FILE|NAME [--json] [--tun-node PATH]
    tapvirt domxml-to-native FILE|NAME [--tun-node PATH] [--qmp-socket PATH] [--fd-base N]

FILE is a domain XML file; NAME a defined domain. The tun node is a launcher setting, not
part of the XML: `--tun-node`, else $TAPVIRT_TUN_NODE, else /dev/net/tun (an interface's
<backend tap='PATH'/> overrides it for that interface).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain
    from tapvirt.host.api import Host
    from tapvirt.qemu.connect import InterfaceReport


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check", help="check a domain's host devices before starting it (read-only)",
        description="Pre-flight check of every interface: device kind, owner, queues, MAC, "
        "MTU, link state, device nodes. Opens and changes nothing. Exit 1 if an interface "
        "would fail to start.")
    _common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per interface")
    p.set_defaults(func=run_check)
    p = sub.add_parser(
        "domxml-to-native", help="print the QEMU command line start would run",
        description="Print the QEMU argv, one argument per line, with the fd numbers start "
        "passes. Opens no device.")
    _common(p)
    p.add_argument("--qmp-socket", metavar="PATH", help="the QMP socket path to show")
    p.add_argument("--fd-base", metavar="N", type=_fd_base, default=None,
                   help="the first fd number QEMU sees (default 3)")
    p.set_defaults(func=run_domxml_to_native)


def _fd_base(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 3 <= value <= 65536:
        raise argparse.ArgumentTypeError("must be 3..65536 (0-2 are QEMU's stdio)")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("domain", metavar="FILE|NAME", help="a domain XML file or a defined domain")
    p.add_argument("--tun-node", metavar="PATH", default=None,
                   help="the tun clone device to open (default $TAPVIRT_TUN_NODE or "
                   "/dev/net/tun)")


def tun_node_setting(arg: str | None) -> str | None:
    return arg or os.environ.get("TAPVIRT_TUN_NODE") or None


def load_domain(spec: str) -> Domain:
    """A file path (anything with a '/' or ending in .xml, or an existing file) or a name."""
    if "/" in spec or spec.endswith(".xml") or os.path.isfile(spec):
        from tapvirt.conf.parse import parse_domain_file

        return parse_domain_file(spec)
    from tapvirt.domains.store import Store

    return Store().get(spec)


def _host() -> Host:
    from tapvirt.host.linux import LinuxHost

    return LinuxHost()


def run_check(args: argparse.Namespace) -> int:
    from tapvirt.cli.common import print_json
    from tapvirt.conf.warnings import domain_warnings
    from tapvirt.qemu.connect import check_domain

    dom = load_domain(args.domain)
    reports = check_domain(dom, _host(), tun_node=tun_node_setting(args.tun_node))
    warnings = domain_warnings(dom)
    verdict = _overall(reports)
    if verdict == "ok" and warnings:
        verdict = "warning"
    if args.json:
        print_json({"domain": dom.name, "verdict": verdict,
                    "warnings": [w.to_json() for w in warnings],
                    "interfaces": [report_json(r) for r in reports]})
    else:
        for w in warnings:
            print(w.render())
        for r in reports:
            print(_report_text(r))
        if not reports:
            print(f"domain {dom.name} has no interfaces")
    return 1 if verdict == "error" else 0


def _overall(reports: list[InterfaceReport]) -> str:
    verdicts = {r.verdict for r in reports}
    return next((v for v in ("error", "warning") if v in verdicts), "ok")


def report_json(r: InterfaceReport) -> dict[str, Any]:
    first = r.first_error() or (r.findings[0] if r.findings else None)
    return {
        "interface": r.alias,
        "mac": r.iface.mac,
        "type": r.iface.type.value,
        "device": r.device,
        "verdict": r.verdict,
        "code": first.code.code if first else None,
        "message": first.message if first else None,
        "fix": first.fix if first else None,
        "findings": [f.to_json() for f in r.findings],
    }


def _report_text(r: InterfaceReport) -> str:
    head = f"{r.alias} ({r.iface.mac}) {r.iface.type.value}"
    if r.device:
        head += f" {r.device}"
    if not r.findings:
        return f"{head}: ok"
    lines = [f"{head}: {r.verdict}"]
    for f in r.findings:
        kind = "warning" if f.warning else "error"
        lines.append(f"  {kind}[{f.code.code}]: {f.cause}")
        if f.fix:
            lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)


def run_domxml_to_native(args: argparse.Namespace) -> int:
    from tapvirt.qemu.argv import FD_BASE, build_argv, startup_commands
    from tapvirt.qemu.connect import check_domain, plan_domain

    dom = load_domain(args.domain)
    host = _host()
    tun_node = tun_node_setting(args.tun_node)
    qmp = args.qmp_socket or _default_qmp_socket(dom.name)
    backends = plan_domain(dom, host, tun_node=tun_node)
    fd_base = FD_BASE if args.fd_base is None else args.fd_base
    for arg in build_argv(dom, backends, qmp_socket=qmp, fd_base=fd_base):
        sys.stdout.write(arg + "\n")
    # What the argv cannot show goes to stderr, so stdout stays a clean command line.
    print(f"note: start adds its events monitor: {_events_monitor(dom, qmp)}", file=sys.stderr)
    for cmd in startup_commands(dom):
        shown = cmd
        if "password" in cmd.get("arguments", {}):  # the secret stays off the terminal too
            shown = {**cmd, "arguments": {**cmd["arguments"], "password": "***"}}
        print(f"note: start then sends QMP {json.dumps(shown)}", file=sys.stderr)
    for report in check_domain(dom, host, tun_node=tun_node):
        for f in report.findings:
            what = "warning" if f.warning else "start would fail"
            print(f"note: {what}: error[{f.code.code}]: {f.message}", file=sys.stderr)
    return 0


def _events_monitor(dom: Domain, qmp: str) -> str:
    """The second QMP monitor `start` appends to this argv, for the path it would take
    (tapvirt.domains.direct: with or without a supervisor)."""
    from pathlib import Path

    from tapvirt.conf.model import InterfaceType
    from tapvirt.domains import direct, events
    from tapvirt.domains.runtime import DomainDir

    managed = [i.dev or f"net{n}" for n, i in enumerate(dom.devices.interfaces)
               if i.type is InterfaceType.DIRECT and not i.unmanaged]
    why = direct.why_supervised(dom, to_delete=managed, tpm=dom.devices.tpm)
    if why is not None:
        return " ".join(events.monitor_args(qmp)) + f" (with a supervisor: {why})"
    rundir = Path(_default_qmp_socket(dom.name)).parent
    args = direct.monitor_args(DomainDir(rundir.parent, rundir.name))
    return " ".join(args) + f" (no supervisor: QEMU logs its events; {direct.SETTING}=auto)"


def _default_qmp_socket(name: str) -> str:
    """Where `start` puts the monitor (the lifecycle layer's runtime directory)."""
    xdg = os.environ.get("TAPVIRT_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, name, "qmp.sock")
    run = os.environ.get("XDG_RUNTIME_DIR")
    root = os.path.join(run, "tapvirt") if run else f"/tmp/tapvirt-{os.getuid()}"
    return os.path.join(root, name, "qmp.sock")
