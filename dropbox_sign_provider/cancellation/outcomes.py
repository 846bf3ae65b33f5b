"""
The project's words for what happened to a signature request, defined once.

Glossary
--------
answer
    What one call to the API returned: the ``signature_request`` object, an empty ``{}`` for an
    accepted cancel, or a typed :class:`~dropbox_sign_provider.exceptions.DropboxSignError`.
state
    What an answer tells of a request, as far as cancelling it is concerned
    (:class:`RequestState`); decided from an answer by
    :func:`dropbox_sign_provider.cancellation.state.request_state`.
verdict
    An answer that tells a final state (``canceled``, ``completed``, ``not_found``, ...). An answer
    with *no verdict* (429, 5xx, no answer, a deadline that passed) says nothing of the request:
    ask again later. Each error type says which it is (its ``state`` and ``retryable``).
outcome
    What became of one id in a task, reported per id in the task's result (:class:`Outcome`):
    a state, or one of the task's own words (``already_canceled``, ``would_cancel``, ``not_approved``,
    ``timeout``, ``error``).
watch
    The confirmation bookkeeping of a set of queued cancellations
    (:class:`~dropbox_sign_provider.cancellation.watch.CancellationWatch`), kept as plain JSON so a
    trigger rebuilt after a restart resumes it.
settle
    Give a watched id its final outcome; the watch is done when every id is settled.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict

from dropbox_sign_provider.cancellation.state import RequestState


class Outcome(str, enum.Enum):
    """
    What became of one id in a task, each with why it fails the task (``None``: it does not).

    Adding an outcome is adding a member here: its value, and the reason it fails a task.
    """

    #: queued by the cancel call (200) or already being processed (409), not waited for
    CANCEL_REQUESTED = ("cancel_requested", None)
    #: confirmed: the request answers 410 ``deleted``
    CANCELED = ("canceled", None)
    #: the cancel found the request cancelled already (410 on ``GET``)
    ALREADY_CANCELED = ("already_canceled", None)
    #: a dry run's request that would be cancelled: nothing was sent, nothing to wait for
    WOULD_CANCEL = ("would_cancel", None)
    #: previewed as would_cancel, but a person rejected the cancellation, or nobody approved it in
    #: time: nothing was sent
    NOT_APPROVED = ("not_approved", None)
    #: signed by everyone before a cancellation could take effect
    COMPLETED = (
        "completed",
        "completed before it could be cancelled (set on_completed='ignore' to accept this)",
    )
    #: declined by a signer before a cancellation could take effect
    DECLINED = (
        "declined",
        "declined before it could be cancelled (set on_completed='ignore' to accept this)",
    )
    #: past its expiry date: nobody can sign it any more, there is nothing to cancel
    EXPIRED = ("expired", None)
    #: Dropbox Sign refused the cancel (``signature_request_cancel_failed``, ...) and the request is
    #: still open: its reason is reported. It fails the task for ids a person chose, not for
    #: requests a rule selected (see :func:`accept_refusals`); never retried as if transient.
    REFUSED = ("refused", "refused by Dropbox Sign")
    NOT_FOUND = ("not_found", "not found (404): no such signature request for this account")
    FORBIDDEN = ("forbidden", "forbidden (403): not the sender's or the app owner's request")
    UNAUTHORIZED = ("unauthorized", "unauthorized (401): the API key or token was refused")
    #: never confirmed before the deadline
    TIMEOUT = ("timeout", "cancellation not confirmed in time")
    #: no verdict: the API kept failing, or answered something that tells no state
    ERROR = ("error", "no verdict: the API kept failing or answered something unexpected (see the task log)")

    _value_: str
    fails_because: str | None

    def __new__(cls, value: str, fails_because: str | None) -> Outcome:
        member = str.__new__(cls, value)
        member._value_ = value
        member.fails_because = fails_because
        return member

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def of_state(cls, state: RequestState) -> Outcome | None:
        """
        The outcome a final state gives an id that was refused a cancel (a 410 then means someone
        else cancelled it first), ``None`` while the request is still pending or got no verdict.
        """
        if state is RequestState.CANCELED:
            return cls.ALREADY_CANCELED
        if not state.is_final:
            return None
        return _BY_VALUE[state.value]


_BY_VALUE: dict[str, Outcome] = {str(outcome): outcome for outcome in Outcome}

#: Outcomes where the request was signed or declined before a cancellation could take effect: they
#: fail a task only when its ``on_completed`` is ``fail``.
COMPLETED_OUTCOMES = frozenset({Outcome.COMPLETED, Outcome.DECLINED})

#: Up to this many ids, a task logs the table of every id's outcome at INFO; for more, INFO gets
#: the counts and the failing ids only, and the table goes to DEBUG, so a batch of thousands of
#: ids does not flood the task log.
MAX_LOGGED_TABLE_ROWS = 100

ON_COMPLETED_CHOICES: tuple[str, ...] = ("fail", "ignore")


def failure_reason(outcome: str, on_completed: str) -> str | None:
    """
    Why an outcome fails the task, or ``None`` when it is acceptable.

    :param outcome: an id's outcome (an :class:`Outcome` or its value; any other text, such as a
        dry run's ``error: ...``, is its own reason).
    :param on_completed: ``fail`` or ``ignore``, for signed or declined requests.
    """
    known = _BY_VALUE.get(str(outcome))
    if known is None:
        return outcome
    if known in COMPLETED_OUTCOMES and on_completed == "ignore":
        return None
    return known.fails_because


class Logger(Protocol):
    """The part of a logger the provider uses (Airflow's task and trigger loggers both fit)."""

    def debug(self, event: Any, *args: Any, **kw: Any) -> Any: ...

    def info(self, event: Any, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any: ...


class CancellationEvent(TypedDict):
    """
    A task's report: the payload of the trigger's one event, and what ends the operator and sensor.

    :ivar status: ``success`` when every id ended in an acceptable outcome, else ``failure``.
    :ivar outcomes: id -> outcome, for every id.
    :ivar failures: id -> why, for the ids that failed.
    :ivar message: one line a person can read.
    :ivar refusals: id -> Dropbox Sign's reason (``error_name: error_msg``), for the ids whose
        cancel it refused (``refused``), whether or not they fail the task.
    """

    status: Literal["success", "failure"]
    outcomes: dict[str, str]
    failures: dict[str, str]
    message: str
    refusals: dict[str, str]


def report(
    outcomes: dict[str, str], on_completed: str, errors: Mapping[str, str] | None = None
) -> CancellationEvent:
    """
    Judge every id's outcome with ``on_completed`` and word the result.

    :param outcomes: id -> outcome.
    :param on_completed: ``fail`` or ``ignore``, for signed or declined requests.
    :param errors: id -> what the API said, for ids whose outcome is ``error`` or ``refused``:
        reported instead of the generic reason.
    """
    errors = errors or {}
    failures = {
        sr_id: reason
        for sr_id, outcome in outcomes.items()
        if (reason := failure_reason(outcome, on_completed)) is not None
    }
    failures.update({sr_id: errors[sr_id] for sr_id in failures if sr_id in errors})
    refusals = {
        sr_id: errors.get(sr_id, str(Outcome.REFUSED.fails_because))
        for sr_id, outcome in outcomes.items()
        if outcome == Outcome.REFUSED
    }
    return CancellationEvent(
        status="failure" if failures else "success",
        outcomes=dict(outcomes),
        failures=failures,
        message=summarize(outcomes, failures),
        refusals=refusals,
    )


def accept_refusals(event: CancellationEvent) -> CancellationEvent:
    """
    The report with refused cancels no longer failing it: for requests a rule selected (a clean-up
    goes on with the rest and reports each refusal), unlike ids a person chose.

    :param event: a report from :func:`report`.
    """
    outcomes = event["outcomes"]
    refusals = event.get("refusals") or {
        sr_id: event["failures"].get(sr_id, "") for sr_id, o in outcomes.items() if o == Outcome.REFUSED
    }
    failures = {sr_id: why for sr_id, why in event["failures"].items() if sr_id not in refusals}
    message = summarize(outcomes, failures)
    if refusals:
        message += f"; {len(refusals)} refused, reported: " + "; ".join(
            f"{sr_id}: {why}" for sr_id, why in refusals.items()
        )
    return CancellationEvent(
        status="failure" if failures else "success",
        outcomes=dict(outcomes),
        failures=failures,
        message=message,
        refusals=refusals,
    )


def count_outcomes(outcomes: Mapping[str, str]) -> dict[str, int]:
    """How many ids ended in each outcome, by outcome name."""
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[str(outcome)] = counts.get(str(outcome), 0) + 1
    return dict(sorted(counts.items()))


def summarize(outcomes: Mapping[str, str], failures: Mapping[str, str]) -> str:
    """One line: counts by outcome, then each failing id and why."""
    counts = count_outcomes(outcomes)
    line = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no signature requests"
    if failures:
        line += f"; {len(failures)} failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
    return line


def outcome_table(
    outcomes: Mapping[str, str], details: Mapping[str, Sequence[tuple[str, str]]] | None = None
) -> str:
    """
    A table of ids and their outcomes, for task logs.

    :param outcomes: id -> outcome, in the order to show.
    :param details: id -> ``(column, value)`` pairs shown between the id and its outcome, e.g. why
        a clean-up picked the id.
    """
    if not outcomes:
        return "(no signature requests)"
    details = details or {}
    columns = [name for name, _ in next(iter(details.values()), ())]
    rows = [("signature_request_id", *columns, "outcome")]
    rows += [
        (sr_id, *(value for _, value in details.get(sr_id, ())), str(outcome))
        for sr_id, outcome in outcomes.items()
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    rows.insert(1, tuple("-" * width for width in widths))
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def log_outcomes(log: Logger, title: str, outcomes: Mapping[str, str], message: str) -> None:
    """
    Log a task's outcomes at INFO: ``title: message``, then the table of every id when there are at
    most :data:`MAX_LOGGED_TABLE_ROWS` (else the table is logged at DEBUG).

    A multi-line message ends with a line break, so that what a console log appends to the event
    (the logger's name) stands on a line of its own instead of at the end of the table's last row.

    :param log: the task's logger.
    :param title: what the outcomes are, e.g. ``Dropbox Sign cancellations``.
    :param outcomes: id -> outcome.
    :param message: the one-line summary (:func:`summarize`): counts, and the failing ids.
    """
    if len(outcomes) <= MAX_LOGGED_TABLE_ROWS:
        log.info("%s: %s\n%s\n", title, message, outcome_table(outcomes))
        return
    log.info("%s: %s (the table of all %d ids is logged at DEBUG)", title, message, len(outcomes))
    log.debug("%s, every id:\n%s\n", title, outcome_table(outcomes))


def finish(event: CancellationEvent, log: Logger, *, retryable: bool = False) -> dict[str, str]:
    """
    End a task with a cancellation report: log it, then return the outcomes or fail.

    :param event: the report.
    :param log: the task's logger.
    :param retryable: whether a task retry may end differently, because some ids got no verdict
        (the API failed or answered something unexpected) rather than a final one.
    :raises AirflowFailException: listing each failing id and why, when every failure is a verdict:
        a retry would re-run the same checks and reach the same verdict.
    :raises AirflowException: the same message, when ``retryable``: the task's retries apply.
    """
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

    log_outcomes(log, "Dropbox Sign cancellations", event["outcomes"], event["message"])
    if event["status"] != "success":
        message = f"Dropbox Sign cancellation failed: {event['message']}"
        if retryable:
            raise AirflowException(message)
        raise AirflowFailException(message)
    return {sr_id: str(outcome) for sr_id, outcome in event["outcomes"].items()}
