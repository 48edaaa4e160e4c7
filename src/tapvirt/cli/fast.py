"""The hot verbs' command lines without argparse (issue 14).

`tapvirt start NAME`, `create FILE` and `destroy NAME` are what scripts and orchestrators
run most, and start's latency is measured against bare QEMU. Importing argparse and
registering every verb's parser costs ~8 ms on a 2-core machine before any start work;
this module recognises the common forms of these verbs by hand and gives up (None) on
anything else: `-h`, an unknown or repeated option, a missing or extra operand. The full
parser (cli/main.py) then runs and says what is wrong exactly as before, so the two can
never disagree about what a valid command line means; tests/unit/lifecycle/test_cli.py
checks the fast path against argparse on the same command lines.
"""

from __future__ import annotations

from types import SimpleNamespace

# verb -> {option: takes a value}; the defaults match run_cmds.register
_OPTIONS: dict[str, dict[str, bool]] = {
    "start": {"--tun-node": True, "--timeout": True, "--paused": False, "--json": False},
    "destroy": {"--json": False},
}
_OPTIONS["create"] = _OPTIONS["start"]


def parse(args: list[str]) -> SimpleNamespace | None:
    """The namespace argparse would produce for `args`, or None to let argparse decide."""
    if not args or args[0] not in _OPTIONS:
        return None
    verb, known = args[0], _OPTIONS[args[0]]
    values: dict[str, str | bool] = {}
    operands: list[str] = []
    rest = iter(args[1:])
    for arg in rest:
        if arg in {"--", "-"}:
            return None  # argparse's own rules for these: leave them to it
        if not arg.startswith("-"):
            operands.append(arg)
            continue
        opt, eq, inline = arg.partition("=")
        if opt not in known or opt in values:
            return None  # unknown, abbreviated, repeated: argparse explains
        if not known[opt]:
            if eq:
                return None
            values[opt] = True
            continue
        if eq:
            values[opt] = inline
            continue
        value = next(rest, None)
        if value is None or value.startswith("-"):
            return None
        values[opt] = value
    if len(operands) != 1:
        return None
    from tapvirt.cli import run_cmds

    as_json = bool(values.get("--json", False))
    if verb == "destroy":
        return SimpleNamespace(verb=verb, version=False, name=operands[0], json=as_json,
                               func=run_cmds.cmd_destroy)
    timeout = 30.0
    if "--timeout" in values:
        try:
            timeout = float(str(values["--timeout"]))
        except ValueError:
            return None
    tun = values.get("--tun-node")
    return SimpleNamespace(verb=verb, version=False, target=operands[0],
                           tun_node=None if tun is None else str(tun), timeout=timeout,
                           paused=bool(values.get("--paused", False)), json=as_json,
                           func=run_cmds.cmd_start, verb_kind=verb)
