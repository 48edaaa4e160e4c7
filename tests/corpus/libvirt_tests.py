"""Which qemuxml2argvdata inputs libvirt 9.0 itself accepts, read from qemuxml2argvtest.c.

Every test case there is a macro call `DO_TEST...("name", ...)`. A call expects failure when
its macro says FAILURE or PARSE_ERROR, or when it passes FLAG_EXPECT_FAILURE /
FLAG_EXPECT_PARSE_ERROR. An input is *positive* when at least one call expects libvirt to
build a command line from it (an input can be refused with old capabilities and accepted
with the latest ones); *refused by libvirt* when every call expects failure; *unreferenced*
when no xml2argv call names it (the input belongs to another test program).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_CALL = re.compile(r"\b(DO_TEST[A-Z0-9_]*)\s*\(\s*\"([^\"]+)\"")
_EXPECT_FAIL = ("FAILURE", "PARSE_ERROR")


@dataclass(frozen=True)
class Call:
    macro: str
    name: str
    args: str

    @property
    def expects_parse_error(self) -> bool:
        return "PARSE_ERROR" in self.macro or "FLAG_EXPECT_PARSE_ERROR" in self.args

    @property
    def expects_failure(self) -> bool:
        return (any(word in self.macro for word in _EXPECT_FAIL)
                or "FLAG_EXPECT_FAILURE" in self.args or "FLAG_EXPECT_PARSE_ERROR" in self.args)


def _balanced_args(text: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[open_paren + 1:i]
    return text[open_paren + 1:]


def calls(source: str) -> list[Call]:
    # drop the macro definitions themselves (`# define DO_TEST...(name, ...)` and their
    # continuation lines): they name no test
    lines: list[str] = []
    in_define = False
    for line in source.splitlines():
        if re.match(r"\s*#\s*define\b", line) or in_define:
            in_define = line.rstrip().endswith("\\")
            lines.append("")
            continue
        lines.append(line)
    text = "\n".join(lines)
    out = []
    for m in _CALL.finditer(text):
        paren = text.index("(", m.start())
        out.append(Call(m.group(1), m.group(2), _balanced_args(text, paren)))
    return out


@dataclass(frozen=True)
class Verdict:
    positive: frozenset[str]
    refused: frozenset[str]  # every call expects libvirt to refuse it
    parse_error: frozenset[str]  # ... and one of them already when parsing the XML
    arch: dict[str, str]  # the capabilities' arch a DO_TEST_CAPS_ARCH_* call names

    def of(self, name: str) -> str:
        if name in self.positive:
            return "positive"
        if name in self.refused:
            return "refused-by-libvirt"
        return "unreferenced"


def verdicts(test_c: Path) -> Verdict:
    by_name: dict[str, list[Call]] = {}
    for call in calls(test_c.read_text(errors="replace")):
        by_name.setdefault(call.name, []).append(call)
    positive = {n for n, cs in by_name.items() if any(not c.expects_failure for c in cs)}
    refused = set(by_name) - positive
    arch: dict[str, str] = {}
    for name, cs in by_name.items():
        for c in cs:
            m = re.match(r'\s*"[^"]*"\s*,\s*"([a-z0-9_]+)"', c.args)
            if "ARCH" in c.macro and m:
                arch.setdefault(name, m.group(1))
    parse_error = {n for n in refused if any(c.expects_parse_error for c in by_name[n])}
    return Verdict(frozenset(positive), frozenset(refused), frozenset(parse_error), arch)


def argvtest_for(directory: Path) -> Path | None:
    """tests/qemuxml2argvtest.c beside a qemuxml2argvdata directory, if that is one."""
    candidate = directory.resolve().parent / "qemuxml2argvtest.c"
    return candidate if directory.name == "qemuxml2argvdata" and candidate.is_file() else None
