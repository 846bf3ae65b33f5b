"""What an approval's kept answer says: approved, refused, rejected, timed out, or ended without an answer."""

from __future__ import annotations

from typing import Any

import pytest

from dropbox_sign_provider.cancellation.approval import decision

CAROL = {"id": "carol", "name": "Carol"}


@pytest.mark.parametrize(
    ("answer", "approved", "by", "timed_out", "said"),
    [
        (
            {"chosen_options": ["Approve"], "responded_by_user": CAROL},
            True,
            "Carol",
            False,
            "approved by Carol",
        ),
        (
            {"chosen_options": ["Reject"], "responded_by_user": CAROL},
            False,
            "Carol",
            False,
            "rejected by Carol",
        ),
        # On time-out the approval takes its default (Reject), and nobody responded.
        (
            {"chosen_options": ["Reject"], "responded_by_user": None},
            False,
            None,
            True,
            "not approved in time (the approval timed out)",
        ),
        # The approval failed before it kept an answer: not a time-out, and not an approval.
        (None, False, None, False, "not approved: the approval ended without an answer (see its log)"),
        # An Approve the deployment's policy refused (four eyes, approvers) is no approval.
        (
            {"chosen_options": ["Approve"], "responded_by_user": CAROL, "refused": "four eyes"},
            False,
            "Carol",
            False,
            "an Approve by Carol that does not count (four eyes)",
        ),
        # Approve among other options is not an approval of this question.
        (
            {"chosen_options": ["Approve", "Reject"], "responded_by_user": CAROL},
            False,
            "Carol",
            False,
            "rejected by Carol",
        ),
    ],
)
def test_decision(
    answer: dict[str, Any] | None, approved: bool, by: str | None, timed_out: bool, said: str
) -> None:
    verdict = decision(answer)

    assert (verdict.approved, verdict.by, verdict.timed_out) == (approved, by, timed_out)
    assert str(verdict) == said
