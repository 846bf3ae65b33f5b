"""
A person approves in the Airflow UI before a cancellation: Airflow's ``ApprovalOperator``, keeping
the answer, and the answer in words.

The example DAGs ask before cancelling (``dropbox_sign_cancel_request`` always, the clean-up when it
found more than its cap) with :func:`cancellation_approval`, waiting :func:`approval_timeout`. Their
cancel task checks with :func:`require_approval_if_asked` that a person approved, and their last
task reads the answer kept as XCom ``answer`` with :func:`decision`.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from dropbox_sign_provider.version_compat import approval_operator

#: The option that approves (Airflow's ``ApprovalOperator.APPROVE``; the other is ``Reject``).
APPROVE = "Approve"
#: The XCom key under which the approval keeps its answer.
ANSWER_KEY = "answer"
#: The example DAGs' task ids: the branch that decides whether to ask (it returns the approval's
#: task id when it asks), and the approval.
ASK_TASK_ID = "ask"
APPROVE_TASK_ID = "approve"
#: How long an approval waits for a person, in seconds, unless the environment variable says.
APPROVAL_TIMEOUT_VARIABLE = "DROPBOX_SIGN_APPROVAL_TIMEOUT"
DEFAULT_APPROVAL_TIMEOUT = 86400.0


def approval_timeout(environ: Mapping[str, str] = os.environ) -> timedelta:
    """
    How long an approval waits for a person before it counts as rejected: the environment variable
    ``DROPBOX_SIGN_APPROVAL_TIMEOUT`` (seconds), one day by default.

    :param environ: where to read the variable.
    :raises ValueError: naming the value, when it is not a number of seconds above 0 (Airflow reads
        a zero time-out as none at all: the approval would wait for ever).
    """
    raw = environ.get(APPROVAL_TIMEOUT_VARIABLE)
    if raw is None:
        return timedelta(seconds=DEFAULT_APPROVAL_TIMEOUT)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{APPROVAL_TIMEOUT_VARIABLE} must be a number of seconds above 0, not {raw!r}")
    return timedelta(seconds=seconds)


def require_approval_if_asked(context: Mapping[str, Any]) -> None:
    """
    ``pre_execute`` of a task that cancels after an approval: fail before anything is sent when the
    run asked for approval and no **Approve** was kept.

    A rejection skips the cancel task, and a failed approval stops it; but an approval marked
    successful by hand (or cleared and re-run without an answer) would let it run. This makes the
    cancel itself check.

    :param context: the task's context.
    :raises AirflowFailException: naming what the approval ended with.
    """
    from airflow.providers.common.compat.sdk import AirflowFailException

    ti = context["ti"]
    if ti.xcom_pull(task_ids=ASK_TASK_ID) != APPROVE_TASK_ID:
        return
    verdict = decision(ti.xcom_pull(task_ids=APPROVE_TASK_ID, key=ANSWER_KEY))
    if not verdict.approved:
        raise AirflowFailException(
            f"Nothing was cancelled: this run asked for approval, and {APPROVE_TASK_ID} kept no Approve "
            f"({verdict}). Was it marked successful by hand? Trigger a new run to ask again."
        )


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
