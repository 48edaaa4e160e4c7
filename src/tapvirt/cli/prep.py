"""`tapvirt-prep`: the privileged preparer's command line (see tapvirt.prep)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="tapvirt-prep",
        description="Create tap and macvtap devices for unprivileged tapvirt users, "
        "under a deny-by-default policy.",
    )
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
