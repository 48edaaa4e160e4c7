"""The reading of libvirt's qemuxml2argvtest.c: which inputs libvirt itself refuses."""

from __future__ import annotations

from pathlib import Path

from tests.corpus.libvirt_tests import calls, verdicts

SOURCE = r'''
# define DO_TEST_PARSE_ERROR(name, ...) \
    DO_TEST_FULL(name, "", \
                 ARG_FLAGS, FLAG_EXPECT_PARSE_ERROR | FLAG_EXPECT_FAILURE, \
                 ARG_QEMU_CAPS, __VA_ARGS__, QEMU_CAPS_LAST, ARG_END)
    DO_TEST("minimal", QEMU_CAPS_KVM);
    DO_TEST_CAPS_LATEST("disk-cdrom");
    DO_TEST_PARSE_ERROR("bad-uuid", NONE);
    DO_TEST_CAPS_VER_FAILURE("old-and-new", "4.0.0");
    DO_TEST_CAPS_LATEST("old-and-new");
    DO_TEST_FULL("flagged", "",
                 ARG_FLAGS, FLAG_EXPECT_FAILURE,
                 ARG_QEMU_CAPS, QEMU_CAPS_LAST, ARG_END);
    DO_TEST_CAPS_ARCH_LATEST("arm-virt", "aarch64");
'''


def test_macro_definitions_are_not_calls() -> None:
    names = [c.name for c in calls(SOURCE)]
    assert names == ["minimal", "disk-cdrom", "bad-uuid", "old-and-new", "old-and-new",
                     "flagged", "arm-virt"]


def test_positive_if_any_call_expects_success(tmp_path: Path) -> None:
    src = tmp_path / "qemuxml2argvtest.c"
    src.write_text(SOURCE)
    v = verdicts(src)
    assert v.of("minimal") == "positive"
    assert v.of("old-and-new") == "positive"  # refused with 4.0.0's caps, fine with latest
    assert v.of("bad-uuid") == "refused-by-libvirt"
    assert v.of("flagged") == "refused-by-libvirt"
    assert v.of("xml2xml-only") == "unreferenced"
    assert v.arch == {"arm-virt": "aarch64"}
    # a parse error is libvirt's XML-level refusal; FAILURE alone may be a missing capability
    assert v.parse_error == {"bad-uuid"}
