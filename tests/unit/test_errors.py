from __future__ import annotations

from pathlib import Path

from tapvirt.errors import INTERNAL, TapvirtError, all_codes, markdown_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_error_renders_subject_cause_and_fix() -> None:
    err = TapvirtError(INTERNAL, "interface net0 (mytap0)", "boom", "do this", line=3)
    assert err.render() == "error[internal]: interface net0 (mytap0) (line 3): boom\n  fix: do this"
    assert err.to_json()["code"] == "internal"
    assert err.to_json()["line"] == 3


def test_codes_are_unique_kebab_case() -> None:
    codes = [c.code for c in all_codes()]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert code == code.lower() and " " not in code and "_" not in code


def test_docs_table_lists_every_code() -> None:
    text = DOCS.read_text()
    assert markdown_table() in text, (
        "docs/errors.md is out of date: regenerate the table with "
        "`python -m tapvirt.errors --markdown`"
    )
