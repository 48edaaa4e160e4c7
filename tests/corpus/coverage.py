"""How much real-world domain XML tapvirt accepts, and whether what it accepts starts.

    python -m tests.corpus DIR [DIR...] [--blockers] [--start [--jobs N]] [--json] [--list]

For every `*.xml` in DIR: accepted (tapvirt parses and validates it, as `tapvirt validate`
does) or refused, counted by the first refusal's code and element (the parser stops at the
first one, so the table says what blocks a document first; `--blockers` finds every
refusal of each document, see tests.corpus.blockers). With `--start` (root: it makes
a user, namespaces and taps) every accepted document is made startable on this host
(tests.corpus.startable) and started paused by `tapvirt create --paused` as an
unprivileged user; started means QMP answered that the guest is paused.

A libvirt `tests/qemuxml2argvdata` directory is recognised: only the inputs that
libvirt's own qemuxml2argvtest.c expects to succeed and whose arch is x86_64 or i686 are
counted; the others are listed as excluded with the reason.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.corpus.libvirt_tests import Verdict, argvtest_for, verdicts

X86 = ("x86_64", "i686")


@dataclass
class Outcome:
    path: Path
    accepted: bool
    code: str = ""
    subject: str = ""
    message: str = ""
    started: bool | None = None  # None: not tried
    start_error: str = ""
    blockers: tuple[str, ...] = ()  # with --blockers: every refusal, deduplicated

    @property
    def refusal(self) -> str:
        """code + element, without positions: '[2]' predicates and line numbers dropped."""
        subject = re.sub(r"\[\d+\]", "", self.subject)
        return f"{self.code} {subject}".strip()


@dataclass
class Corpus:
    directory: Path
    outcomes: list[Outcome] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    # x86 inputs libvirt's parser rejects (DO_TEST_PARSE_ERROR...) that tapvirt accepts:
    # each is a missing check in tapvirt
    accepted_libvirt_rejects: list[Path] = field(default_factory=list)
    libvirt_rejects: int = 0

    @property
    def accepted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.accepted]

    def refusals(self) -> Counter[str]:
        return Counter(o.refusal for o in self.outcomes if not o.accepted)

    def started(self) -> int | None:
        tried = [o for o in self.accepted if o.started is not None]
        return sum(1 for o in tried if o.started) if tried else None

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "documents": len(self.outcomes),
            "accepted": len(self.accepted),
            "refused": len(self.outcomes) - len(self.accepted),
            "started": self.started(),
            "refusals": dict(self.refusals().most_common()),
            "excluded": dict(self.excluded),
            "libvirt_parse_errors": self.libvirt_rejects,
            "accepted_although_libvirt_rejects": [p.name for p in self.accepted_libvirt_rejects],
            "results": [{
                "file": o.path.name, "accepted": o.accepted, "code": o.code or None,
                "subject": o.subject or None, "message": o.message or None,
                "started": o.started, "start_error": o.start_error or None,
                "blockers": list(o.blockers) or None,
            } for o in self.outcomes],
        }


def _arch(path: Path, verdict: Verdict | None) -> str:
    from lxml import etree

    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False)).getroot()
    except etree.XMLSyntaxError:
        return "unknown"
    arch = root.find("os/type")
    if arch is not None and arch.get("arch"):
        return str(arch.get("arch"))
    # libvirt's test capabilities default to an x86_64 host unless the call names an arch
    return verdict.arch.get(path.stem, "x86_64") if verdict else "x86_64"


def documents(directory: Path) -> tuple[list[Path], Counter[str], list[Path]]:
    """The documents of a corpus directory that count, why the others do not, and the x86
    inputs libvirt's own parser rejects."""
    paths = sorted(directory.glob("*.xml"))
    test_c = argvtest_for(directory)
    if test_c is None:
        return paths, Counter(), []
    verdict = verdicts(test_c)
    keep: list[Path] = []
    rejected: list[Path] = []
    excluded: Counter[str] = Counter()
    for p in paths:
        kind = verdict.of(p.stem)
        arch = _arch(p, verdict)
        if kind != "positive":
            excluded[kind] += 1
            if p.stem in verdict.parse_error and arch in X86:
                rejected.append(p)
        elif arch not in X86:
            excluded[f"arch {arch}"] += 1
        else:
            keep.append(p)
    return keep, excluded, rejected


def classify(path: Path) -> Outcome:
    import random

    from tapvirt.conf.parse import parse_domain_file
    from tapvirt.errors import TapvirtError

    try:
        parse_domain_file(path, rand=random.Random(0))
    except TapvirtError as err:
        return Outcome(path, False, err.code.code, err.subject, err.message)
    except Exception as exc:  # a bug: counted, never hidden
        return Outcome(path, False, "CRASH", type(exc).__name__, repr(exc))
    return Outcome(path, True)


def measure(directory: Path) -> Corpus:
    paths, excluded, rejected = documents(directory)
    wrongly = [p for p in rejected if classify(p).accepted]
    return Corpus(directory, [classify(p) for p in paths], excluded, wrongly, len(rejected))


def blocker_table(c: Corpus, *, top: int = 30) -> str:
    """For the refused documents: how many each refusal blocks at all, and alone."""
    refused = [o for o in c.outcomes if not o.accepted]
    anywhere: Counter[str] = Counter()
    alone: Counter[str] = Counter()
    for o in refused:
        anywhere.update(o.blockers)
        if len(o.blockers) == 1:
            alone.update(o.blockers)
    lines = [f"\nEvery refusal in the {len(refused)} refused `{c.directory.name}` documents "
             "(the element blanked out and the document parsed again, until accepted):\n",
             "| blocks documents | the only blocker of | code and element |", "|---|---|---|"]
    lines += [f"| {n} | {alone[k]} | `{k}` |" for k, n in anywhere.most_common(top)]
    if len(anywhere) > top:
        lines.append(f"| | | {len(anywhere) - top} other refusals |")
    return "\n".join(lines)


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f} %" if d else "-"


def table(corpora: Sequence[Corpus], *, top: int = 25) -> str:
    rows = ["| corpus | documents | accepted | refused | started |", "|---|---|---|---|---|"]
    for c in corpora:
        n, a = len(c.outcomes), len(c.accepted)
        started = c.started()
        s = "not run" if started is None else f"{started} of {a}"
        rows.append(f"| `{c.directory.name}` | {n} | {a} ({_pct(a, n)}) | {n - a} | {s} |")
    out = ["\n".join(rows)]
    for c in corpora:
        ex = ", ".join(f"{k} {v}" for k, v in sorted(c.excluded.items()))
        head = f"\nRefused in `{c.directory.name}`, by first refusal"
        out.append(head + (f" (not counted: {ex})" if ex else "") + ":\n")
        lines = ["| documents | code and element |", "|---|---|"]
        refusals = c.refusals().most_common()
        lines += [f"| {v} | `{k}` |" for k, v in refusals[:top]]
        if len(refusals) > top:
            rest = sum(v for _, v in refusals[top:])
            lines.append(f"| {rest} | {len(refusals) - top} other refusals |")
        out.append("\n".join(lines))
        if c.libvirt_rejects:
            wrong = ", ".join(f"`{p.name}`" for p in c.accepted_libvirt_rejects) or "none"
            out.append(f"\nOf the {c.libvirt_rejects} x86 inputs libvirt's parser rejects "
                       f"(DO_TEST_PARSE_ERROR), tapvirt accepts: {wrong}")
        failed = [o for o in c.accepted if o.started is False]
        if failed:
            out.append(f"\nAccepted but not started in `{c.directory.name}`:\n")
            out.append("\n".join(f"* `{o.path.name}`: {o.start_error}" for o in failed))
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.corpus",
                                 description="accepted / refused / started per corpus")
    ap.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    ap.add_argument("--start", action="store_true",
                    help="start every accepted document paused (root; makes a user and taps)")
    ap.add_argument("--jobs", type=int, default=3, metavar="N", help="guests started at once")
    ap.add_argument("--blockers", action="store_true",
                    help="also find every refusal of each refused document, not only the first")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--list", action="store_true", help="also list every document's outcome")
    args = ap.parse_args(argv)
    corpora = []
    for d in args.dirs:
        if not d.is_dir():
            print(f"{d}: not a directory", file=sys.stderr)
            return 2
        corpora.append(measure(d))
    if args.blockers:
        from tests.corpus.blockers import blockers

        for c in corpora:
            for o in c.outcomes:
                if not o.accepted:
                    o.blockers = tuple(dict.fromkeys(blockers(o.path).keys))
    if args.start:
        from tests.corpus.start import start_outcomes

        start_outcomes([o for c in corpora for o in c.accepted], jobs=args.jobs)
    if args.json:
        print(json.dumps({"corpora": [c.to_json() for c in corpora]}, indent=1))
        return 0
    print(table(corpora), end="")
    if args.blockers:
        print("\n".join(blocker_table(c) for c in corpora))
    if args.list:
        for c in corpora:
            for o in c.outcomes:
                state = "accepted" if o.accepted else f"refused {o.code} {o.subject}"
                if o.started is not None:
                    state += ", started" if o.started else f", NOT started: {o.start_error}"
                print(f"{c.directory.name}/{o.path.name}: {state}")
    return 0
