"""Verbs of the definition layer: validate, define, undefine.

Thin: the logic lives in `tapvirt.conf` and `tapvirt.domains.store`. `list` and `dumpxml`,
which must know whether a guest runs, are in `tapvirt.cli.run_cmds`.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check domain XML files (exit 1 if any is invalid)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("define", help="define (or redefine) a domain from an XML file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_define)

    p = sub.add_parser("undefine", help="remove a domain's definition")
    p.add_argument("name", metavar="NAME")
    tpm = p.add_mutually_exclusive_group()
    tpm.add_argument("--tpm", action="store_true",
                     help="also remove its TPM state (even with persistent_state='yes')")
    tpm.add_argument("--keep-tpm", action="store_true", help="keep its TPM state")
    p.add_argument("--nvram", action="store_true", help="also remove the UEFI NVRAM file")
    p.add_argument("--keep-nvram", action="store_true", help="keep the UEFI NVRAM file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_undefine)


def cmd_validate(args: argparse.Namespace) -> int:
    from tapvirt.cli.common import print_json
    from tapvirt.conf.parse import parse_domain_file
    from tapvirt.errors import TapvirtError

    results: list[dict[str, Any]] = []
    for path in args.files:
        try:
            dom = parse_domain_file(path)
        except TapvirtError as err:
            results.append({"file": path, "ok": False, "error": err.to_json()})
            if not args.json:
                print(f"{path}: invalid")
                print(_with_excerpt(err.render(), path, err.line))
            continue
        from tapvirt.conf.warnings import domain_warnings

        warnings = domain_warnings(dom)
        results.append({"file": path, "ok": True, "name": dom.name,
                        "warnings": [w.to_json() for w in warnings]})
        if not args.json:
            print(f"{path}: valid (domain '{dom.name}')")
            for w in warnings:
                print(w.render())
    ok = all(r["ok"] for r in results)
    if args.json:
        print_json({"ok": ok, "results": results})
    return 0 if ok else 1


def _with_excerpt(rendered: str, path: str, line: int | None) -> str:
    """Put the offending source line under the message, as compilers do."""
    if line is None:
        return rendered
    import itertools

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = next(itertools.islice(f, line - 1, None), None)
    except OSError:
        return rendered
    if text is None:
        return rendered
    head, _, rest = rendered.partition("\n")
    excerpt = f"{line:>6} | {text.rstrip()[:160]}"
    return "\n".join(x for x in (head, excerpt, rest) if x)


def cmd_define(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tapvirt.cli.common import print_json
    from tapvirt.domains.store import Store
    from tapvirt.errors import FILE_UNREADABLE, TapvirtError

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise TapvirtError(
            FILE_UNREADABLE, args.file, f"cannot read the file: {exc.strerror or exc}",
            "check the path and its permissions",
        ) from None
    from tapvirt.conf.warnings import domain_warnings

    res = Store().define(data, source=args.file)
    warnings = domain_warnings(res.domain)
    if args.json:
        print_json({
            "ok": True, "name": res.domain.name, "uuid": res.domain.uuid,
            "created": res.created, "path": str(res.path),
            "warnings": [w.to_json() for w in warnings],
        })
    else:
        print(f"Domain '{res.domain.name}' defined from {args.file}")
        for w in warnings:
            print(w.render())
    return 0


def cmd_undefine(args: argparse.Namespace) -> int:
    from tapvirt.cli.common import print_json
    from tapvirt.domains.nvram_cmds import check_undefine, remove_nvram
    from tapvirt.domains.store import Store

    store = Store()
    nvram = check_undefine(store, args.name, remove=args.nvram, keep=args.keep_nvram)
    dom = store.undefine(args.name)
    if nvram is not None and args.nvram:
        remove_nvram(nvram)
    tpm = _undefine_tpm(dom, args)
    if args.json:
        print_json({"ok": True, "name": args.name, **tpm})
    else:
        print(f"Domain '{args.name}' has been undefined")
        if tpm.get("tpm_removed"):
            print(f"TPM state {tpm['tpm_state']} has been removed")
        elif tpm.get("tpm_kept_running"):
            print(f"warning: the guest runs, so its TPM state {tpm['tpm_state']} was kept; "
                  f"remove it after it stops: rm -r {tpm['tpm_state']}")
    return 0


def _undefine_tpm(dom: Any, args: argparse.Namespace) -> dict[str, Any]:
    """virsh 9.0: the TPM state goes with the definition unless persistent_state='yes'
    (--tpm: anyway; --keep-tpm: never); never under a running swtpm."""
    if dom is None or not dom.uuid:
        return {}
    from tapvirt.domains import swtpm

    path = swtpm.domain_state(dom.uuid)
    if not path.exists():
        return {}
    out: dict[str, Any] = {"tpm_state": str(path)}
    from tapvirt.domains.api import state_of
    from tapvirt.domains.runtime import SHUTOFF
    from tapvirt.errors import TapvirtError

    try:
        running = state_of(args.name).state != SHUTOFF
    except TapvirtError:  # no runtime record left: nothing runs
        running = False
    if running:
        out["tpm_kept_running"] = True
        return out
    out["tpm_removed"] = swtpm.remove_on_undefine(
        dom.devices.tpm, dom.uuid, remove=args.tpm, keep=args.keep_tpm)
    return out
