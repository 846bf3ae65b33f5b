"""
A person approves in the Airflow UI before a cancellation: Airflow's ``ApprovalOperator``, keeping
the answer, and the answer in words.

The example DAGs ask before cancelling (``dropbox_sign_cancel_request`` always, the clean-up when it
found more than its cap) with :func:`cancellation_approval`. Their last task reads the answer kept
as XCom ``answer`` with :func:`decision`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from dropbox_sign_provider.version_compat import approval_operator

#: The option that approves (Airflow's ``ApprovalOperator.APPROVE``; the other is ``Reject``).
APPROVE = "Approve"
#: The XCom key under which the approval keeps its answer.
ANSWER_KEY = "answer"


@functools.cache
def cancellation_approval() -> type[Any] | None:
    """
    Airflow's ``ApprovalOperator``, keeping the answer as XCom ``answer``; ``None`` on an Airflow
    without human-in-the-loop operators.

    On **Reject** the operator skips its downstream tasks and Airflow stores no result, so a later
    task could not tell who rejected, or that nobody answered: this subclass keeps
    ``{"chosen_options": [...], "responded_by_user": {"id": ..., "name": ...} | None}``
    (``responded_by_user`` is ``None`` when the approval timed out and its default was taken).
    Build it with ``defaults="Reject"``: no answer in time must cancel nothing.
    """
    base = approval_operator()
    if base is None:
        return None

    class CancellationApproval(base):  # type: ignore[misc,valid-type]
        def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
            if "error" not in event:
                answer = {k: event.get(k) for k in ("chosen_options", "responded_by_user")}
                context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
            return super().execute_complete(context, event)

    CancellationApproval.__doc__ = cancellation_approval.__doc__
    return CancellationApproval


class Decision(NamedTuple):
    """
    What became of an approval.

    :ivar approved: a person chose **Approve**.
    :ivar by: the name of the person who answered; ``None`` when nobody did (time-out, or the
        approval failed before an answer was kept).
    :ivar kept: the approval ended with an answer (a person's, or its default on time-out);
        ``False`` when it failed first.
    """

    approved: bool
    by: str | None
    kept: bool = True

    @property
    def timed_out(self) -> bool:
        """Nobody answered in time: a rejection by default, which the run reports as a failure."""
        return self.kept and not self.approved and self.by is None

    def __str__(self) -> str:
        if self.approved:
            return f"approved by {self.by}"
        if self.by is not None:
            return f"rejected by {self.by}"
        if self.kept:
            return "not approved in time (the approval timed out)"
        return "not approved: the approval ended without an answer (see its log)"


def decision(answer: dict[str, Any] | None) -> Decision:
    """
    The decision an approval's kept answer records.

    :param answer: the XCom ``answer`` of a :func:`cancellation_approval` task; ``None`` when it
        kept none (it failed, or was never asked).
    """
    if answer is None:
        return Decision(approved=False, by=None, kept=False)
    who = answer.get("responded_by_user") or {}
    return Decision(approved=answer.get("chosen_options") == [APPROVE], by=who.get("name"))
