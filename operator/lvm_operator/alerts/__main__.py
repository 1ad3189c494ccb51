"""``python -m lvm_operator.alerts [--check] [PATH]``: regenerate (or verify) the rules file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .rules import RULES_FILE, render_rules_yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lvm_operator.alerts", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=RULES_FILE)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file differs from the rendered rules")
    args = parser.parse_args(argv)
    text = render_rules_yaml()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date; run: python -m lvm_operator.alerts",
                  file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
