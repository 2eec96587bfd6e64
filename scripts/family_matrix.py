#!/usr/bin/env python
"""Render the family x method matrix of a test run (quantized, vision kept, served, benchmarked) as markdown.

The family tests (tests/integration/test_families_quantize.py, tests/e2e/test_families.py) record what they proved
in `test-artifacts/family-matrix.json`; this script turns that into the table of docs/quantize.md#family-matrix.

    .venv/bin/python scripts/family_matrix.py                              # print the table
    .venv/bin/python scripts/family_matrix.py --out test-artifacts/family-matrix.md
    .venv/bin/python scripts/family_matrix.py --docs docs/quantize.md      # rewrite the table in the doc
    .venv/bin/python scripts/family_matrix.py --docs docs/quantize.md --check   # exit 1 if the doc differs

Bad input (no results file, invalid JSON, a doc without the table markers): one line on stderr, exit 2, nothing
written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from vlmopt.testing.matrix import (
    MarkersMissing,
    load_matrix,
    render_markdown,
    replace_between_markers,
    write_atomic,
)

DEFAULT_RESULTS = Path("test-artifacts/family-matrix.json")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the run's family-matrix.json")
    parser.add_argument("--out", type=Path, help="write the table to this file")
    parser.add_argument("--docs", type=Path, help="replace the table between the markers of this markdown file")
    parser.add_argument("--check", action="store_true", help="with --docs: exit 1 when the doc's table differs")
    args = parser.parse_args(argv)

    if not args.results.is_file():
        return _fail(f"{args.results}: no such file (run the family tests first: pytest tests/e2e/test_families.py)")
    try:
        matrix = load_matrix(args.results)
    except (ValueError, ValidationError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"{args.results}: not a family matrix: {first}")
    table = render_markdown(matrix)

    if args.docs is not None:
        try:
            document = args.docs.read_text()
            updated = replace_between_markers(document, table)
        except OSError as exc:
            return _fail(f"{args.docs}: {exc.strerror or exc}")
        except MarkersMissing as exc:
            return _fail(f"{args.docs}: {exc}")
        if args.check:
            if updated != document:
                print(f"{args.docs}: the family matrix differs from {args.results}; rerun without --check",
                      file=sys.stderr)
                return 1
            return 0
        if updated != document:
            write_atomic(args.docs, updated)
    if args.out is not None:
        write_atomic(args.out, table)
    if args.docs is None and args.out is None:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
