"""
A block of a documentation page that a script draws from the code: the text between two marker
lines, printed, written into the page (``--write``) or checked against it (``--check``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(page: Path, markers: tuple[str, str], draw: str, description: str) -> int:
    """
    The command line of a script that draws one block of ``page``.

    :param page: the documentation page holding the block.
    :param markers: the lines that open and close the block.
    :param draw: the block as the code says it must read now.
    :param description: the script's one-line description, for ``--help``.
    :return: the exit status: 1 when ``--check`` finds the page stale.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", action="store_true", help=f"put the block into {page.name}")
    parser.add_argument("--check", action="store_true", help=f"fail when {page.name} is stale")
    args = parser.parse_args()
    if not (args.write or args.check):
        print(draw)
        return 0
    begin, end = markers
    text = page.read_text()
    head, rest = text.split(begin)
    _old, tail = rest.split(end)
    fresh = f"{head}{begin}\n{draw}\n{end}{tail}"
    if args.check:
        if fresh != text:
            print(f"{page} is stale: run python {sys.argv[0]} --write", file=sys.stderr)
            return 1
        return 0
    page.write_text(fresh)
    return 0
