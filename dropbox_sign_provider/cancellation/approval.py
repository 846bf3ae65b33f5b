"""
The words of an approval: its options, where it keeps its answer and its grant, and what the
answer decided, in words for a run's report.

The approval itself is :class:`~dropbox_sign_provider.operators.approval.CancellationApprovalOperator`;
what a cancel step checks is its signed grant (:mod:`dropbox_sign_provider.cancellation.grants`),
never the answer kept here, which anyone who may edit a run's XComs can rewrite: it only words a report.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: The option that approves (Airflow's ``ApprovalOperator.APPROVE``; the other is ``Reject``).
APPROVE = "Approve"
#: The XCom key under which the approval keeps its answer, for a report.
ANSWER_KEY = "answer"
#: The XCom key under which an Approve the policy accepts keeps its signed approval grant.
GRANT_KEY = "grant"


class Decision(NamedTuple):
    """
    What became of an approval.

    :ivar approved: a person chose **Approve**, and the deployment's policy accepted it.
    :ivar by: the name of the person who answered; ``None`` when nobody did (time-out, or the
        approval failed before an answer was kept).
    :ivar kept: the approval ended with an answer (a person's, or its default on time-out);
        ``False`` when it failed first.
    :ivar refused: why the policy did not count an Approve (``four_eyes``, ``approvers``).
    """

    approved: bool
    by: str | None
    kept: bool = True
    refused: str | None = None

    @property
    def timed_out(self) -> bool:
        """Nobody answered in time: a rejection by default, which the run reports as a failure."""
        return self.kept and not self.approved and self.by is None

    def __str__(self) -> str:
        if self.approved:
            return f"approved by {self.by}"
        if self.refused:
            return f"an Approve by {self.by} that does not count ({self.refused})"
        if self.by is not None:
            return f"rejected by {self.by}"
        if self.kept:
            return "not approved in time (the approval timed out)"
        return "not approved: the approval ended without an answer (see its log)"


def decision(answer: dict[str, Any] | None) -> Decision:
    """
    The decision an approval's kept answer records, in words for a report.

    :param answer: the XCom ``answer`` of a
        :class:`~dropbox_sign_provider.operators.approval.CancellationApprovalOperator`; ``None``
        when it kept none (it failed, or was never asked).
    """
    if answer is None:
        return Decision(approved=False, by=None, kept=False)
    who = answer.get("responded_by_user") or {}
    refused = answer.get("refused")
    return Decision(
        approved=answer.get("chosen_options") == [APPROVE] and not refused,
        by=who.get("name"),
        refused=refused,
    )
