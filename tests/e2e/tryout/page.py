"""
The commands of ``docs/try-it-locally.md`` as its reader runs them.

Every ```` ```bash ```` block is a command, in page order. A block titled ``Terminal N (...)``
runs in terminal N and keeps running; a block titled ``Every terminal`` sets the environment and
is pasted first into each terminal; every other block runs in terminal 1, one shell that keeps its
variables from block to block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PAGE = Path(__file__).resolve().parents[3] / "docs" / "try-it-locally.md"

#: A fenced block at the start of a line: its language, its optional title, its text.
FENCE = re.compile(r'^```(?P<lang>[\w-]*)(?: title="(?P<title>[^"]*)")?\n(?P<text>.*?)^```$', re.M | re.S)
TERMINAL = re.compile(r"Terminal (?P<number>\d+)\b")
EVERY_TERMINAL = "Every terminal"


@dataclass(frozen=True)
class Block:
    """One block of commands: where on the page (its first line), which terminal, its text."""

    line: int
    terminal: int
    text: str
    #: Sets the environment of every terminal (pasted first into each).
    environment: bool = False

    @property
    def long_running(self) -> bool:
        """Started in a terminal of its own, left running."""
        return self.terminal != 1


def blocks(text: str) -> list[Block]:
    """The page's commands in order; an error naming the line for a block no reader could place."""
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        lang, title = match["lang"], match["title"] or ""
        if lang != "bash":
            raise ValueError(f"line {line}: a ```{lang} block; the try-out page's commands are all bash")
        if title == EVERY_TERMINAL:
            found.append(Block(line, 1, match["text"], environment=True))
        elif title:
            terminal = TERMINAL.match(title)
            if terminal is None or terminal["number"] == "1":
                raise ValueError(
                    f'line {line}: title "{title}" names no other terminal ("Terminal 2 (...)"); '
                    "terminal 1's blocks have no title"
                )
            found.append(Block(line, int(terminal["number"]), match["text"]))
        else:
            found.append(Block(line, 1, match["text"]))
    if sum(block.environment for block in found) != 1:
        raise ValueError(f'the page needs exactly one block titled "{EVERY_TERMINAL}"')
    return found


def page_blocks() -> list[Block]:
    return blocks(PAGE.read_text(encoding="utf-8"))
