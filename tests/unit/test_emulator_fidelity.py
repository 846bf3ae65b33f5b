"""The fidelity page (``docs/emulator.md``) and the emulator's code agree: every guess the code marks
is listed there, every topic listed is marked in the code, and every test the page names exists."""

from __future__ import annotations

import re
from pathlib import Path

from dropbox_sign_provider.testing import emulator as emulator_package

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "emulator.md"
# A mark is a comment, its topic in parentheses before the colon: "# Undocumented (<topic>): ...".
MARK = re.compile(r"#\s*Undocumented\b(.*)")
TOPIC = re.compile(r" \(([^)]+)\):")
# A row of the page's "Choices where the documentation is silent" table: "| topic | choice | test |".
CHOICE_ROW = re.compile(r"^\| ([^|`]+?) \| (.+) \| `([^`]+)` \|$", re.MULTILINE)
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def marked_topics() -> list[str]:
    package = Path(emulator_package.__file__).parent
    topics = []
    for path in sorted(package.glob("*.py")):
        for rest in MARK.findall(path.read_text(encoding="utf-8")):
            topic = TOPIC.match(rest)
            assert topic, f"{path.name}: an Undocumented mark without a ' (topic):' to list it by: {rest!r}"
            topics.append(topic.group(1))
    return topics


def listed_choices() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Choices where the documentation is silent", 1)[1]
    return {topic: choice for topic, choice, _test in CHOICE_ROW.findall(section)}


def test_every_undocumented_topic_in_the_emulators_code_is_listed_on_the_fidelity_page() -> None:
    topics = marked_topics()
    assert len(topics) > 10, "the emulator no longer marks its guesses: update this test"
    listed = listed_choices()
    assert sorted(set(topics) - set(listed)) == [], "marked in the code, missing from docs/emulator.md"
    assert sorted(set(listed) - set(topics)) == [], "listed in docs/emulator.md, marked nowhere in the code"
    assert "410" in listed["cancel of a cancelled request"]
    assert "deleted" in listed["cancel of a cancelled request"]


def test_every_test_the_fidelity_page_names_exists() -> None:
    named = TEST_REF.findall(PAGE.read_text(encoding="utf-8"))
    assert len(named) > 30, "the page no longer names its tests: update this test"
    missing = [
        f"{path}::{test}"
        for path, test in named
        if not (ROOT / path).is_file()
        or not re.search(rf"^(async )?def {test}\(", (ROOT / path).read_text(encoding="utf-8"), re.MULTILINE)
    ]
    assert missing == []


def test_every_choice_names_the_test_that_holds_it() -> None:
    section = PAGE.read_text(encoding="utf-8").split("## Choices where the documentation is silent", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Topic")]
    rows = [row for row in rows if not set(row) <= set("|- ")]
    assert len(rows) == len(CHOICE_ROW.findall(section)), (
        "a row of the choices table is not topic | choice | test"
    )
