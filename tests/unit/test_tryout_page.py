"""
The try-out page is run by ``make tryout`` block by block; these check that every command on it is
one the run can place, so that none is skipped, and that readers find the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.tryout.page import PAGE, blocks, page_blocks

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_on_the_page_is_a_block_the_run_executes() -> None:
    page = page_blocks()
    text = PAGE.read_text(encoding="utf-8")
    # Every fence opens a block the run places (the fences close in pairs).
    assert len(page) * 2 == len(re.findall(r"^```", text, re.M))
    # No command hides in an indented code block or a fence inside a list, which the run would skip.
    assert not re.search(r"^ +```", text, re.M)
    assert {block.terminal for block in page} == {1, 2, 3}
    assert [block.terminal for block in page if block.long_running] == [2, 3, 3]


def test_what_the_page_promises_is_on_it() -> None:
    commands = "".join(block.text for block in page_blocks())
    for step in (
        "dropbox-sign-emulator",
        "airflow standalone",
        "airflow connections add dropbox_sign_default",
        "airflow dags unpause dropbox_sign_cancel_request",
        "airflow dags trigger dropbox_sign_cancel_request",
        "taskInstances/approve/-1/hitlDetails",
        "callback_url=",
        "airflow dags unpause dropbox_sign_cancellation_audit",
        "airflow dags unpause dropbox_sign_expiry_cleanup",
        "AIRFLOW__DROPBOX_SIGN__ARMED=True",
        "AIRFLOW__DROPBOX_SIGN__EVENT_FIRST=True",
    ):
        assert step in commands, step


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('```ini\n[core]\n```\n```bash title="Every terminal"\nx\n```\n', "```ini block"),
        ('```bash title="Every terminal"\nx\n```\n```bash title="Terminal 1"\ny\n```\n', "names no other"),
        ("```bash\nx\n```\n", 'exactly one block titled "Every terminal"'),
    ],
)
def test_a_block_the_run_could_not_place_is_an_error_naming_its_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        blocks(text)


def test_readers_find_the_page() -> None:
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "try-it-locally.md" in mkdocs
    for doc in ("README.md", "docs/index.md", "docs/quickstart.md"):
        assert "try-it-locally.md" in (ROOT / doc).read_text(encoding="utf-8"), doc
