"""
A person approves a cancellation in the Airflow UI, and the cancel step gets a grant it can check.

:class:`CancellationApprovalOperator` is Airflow's ``ApprovalOperator`` with three differences, each
so that nothing a run's XComs or task states hold can stand in for a person's Approve:

- It shows what a provider step selected and signed (a selection grant), after checking that
  signature: the titles and signers in the form are what the step read from Dropbox Sign.
- The selection travels from the moment it asks to the moment it resumes in the task's own
  deferral state, which the REST API cannot edit, and the answer comes from Airflow's own
  human-in-the-loop record.
- On Approve, it checks the deployment's policy (its approvers, four eyes) and hands the cancel step
  a signed approval grant covering exactly what the form showed (XCom ``grant``). The cancel step
  refuses to cancel anything a valid grant does not cover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from airflow.providers.standard.operators.hitl import ApprovalOperator

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation.approval import ANSWER_KEY, APPROVE, GRANT_KEY
from dropbox_sign_provider.cancellation.grants import (
    APPROVAL,
    SELECTION,
    Grant,
    given_grant,
    mint,
    verify,
)
from dropbox_sign_provider.cancellation.ids import dry_run_flag
from dropbox_sign_provider.cancellation.policy import CancellationPolicy
from dropbox_sign_provider.cancellation.preview import preview_markdown
from dropbox_sign_provider.cancellation.selection import selection_batches, unsigned_reason
from dropbox_sign_provider.hooks.connection import grant_key

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Ids listed under the form's text, at most; a larger selection is named by its count and digest.
LISTED_IDS = 50


class CancellationApprovalOperator(ApprovalOperator):
    """
    Ask a person to approve cancelling what a provider step selected, when it needs approval: a
    selection over the cap, ids named at run time where the deployment's ``require_approval`` is
    on, or this task's own ``require_approval``. On Approve, return a signed grant (also XCom
    ``grant``) that :class:`~dropbox_sign_provider.operators.signature_request.
    CancelSignatureRequestOperator` checks (its ``approval_grant``).

    Nothing to approve (an empty selection, one that needs no approval, or a dry run's unsigned
    selection) asks nobody and grants nothing. **Reject** grants nothing and skips the cancel steps
    right after this task; no answer within the time-out fails this task: nothing is cancelled, and
    somebody should notice.
    The answer is also kept as XCom ``answer`` for a report (see
    :func:`~dropbox_sign_provider.cancellation.approval.decision`); it is never evidence of an approval.

    The deployment's ``[dropbox_sign]`` policy decides who may answer (``approvers``), whether the
    user who triggered the run may approve it (``four_eyes``), and the longest wait
    (``approval_timeout``); this operator's arguments may narrow them, never widen them.

    :param selection: what a provider step selected and signed (templated): a list step's
        ``.output`` (``ListSignatureRequestsOperator``), or a dry run's XCom ``selection``
        (``XComArg(preview, key="selection")``).
    :param describe: turns what the selection shows (its ``shown``) into the form's Markdown;
        the dry run's preview table by default.
    :param dropbox_sign_conn_id: the connection whose credential signs the grants (templated, as
        the manual cancel DAG's connection param gives it).
    :param subject: the form's headline.
    :param response_timeout: how long to wait, when shorter than the deployment's.
    :param require_approval: ask a person even when neither the selection nor the deployment's
        policy needs it (templated, like the cancel operator's ``dry_run``).

    Returns (XCom) the approval grant, for the cancel step's ``approval_grant``
    (``approval_grant=approve.output``), or ``None`` when nobody needed to be asked.

    Other keyword arguments go to ``ApprovalOperator``: among them ``notifiers``, Airflow notifiers
    told when the approval starts waiting (so that a nightly approval does not wait unseen), and
    ``assigned_users``, who may answer when the deployment names nobody.
    """

    template_fields: Sequence[str] = (
        "subject",
        "selection",
        "require_approval_setting",
        "dropbox_sign_conn_id",
    )
    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        selection: Any,
        describe: Callable[[Any], str] = preview_markdown,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        subject: str = "Cancel these Dropbox Sign signature requests? This cannot be undone.",
        response_timeout: timedelta | None = None,
        require_approval: bool | str = False,
        **kwargs: Any,
    ) -> None:
        for fixed in ("body", "defaults"):
            if fixed in kwargs:
                raise ValueError(f"{fixed} is not an argument of CancellationApprovalOperator: it is derived")
        # A rejection skips the cancel steps right after this task, not a report further down.
        kwargs.setdefault("ignore_downstream_trigger_rules", False)
        # No answer in time is a rejection: nothing is cancelled unless someone said yes.
        super().__init__(
            subject=subject, defaults=ApprovalOperator.REJECT, response_timeout=response_timeout, **kwargs
        )
        self.selection = selection
        self.require_approval_setting = require_approval
        self.describe = describe
        self.dropbox_sign_conn_id = dropbox_sign_conn_id

    def execute(self, context: Context) -> Any:
        """
        Check the selection's signature and whether it needs an Approve; if so, show it and wait for
        a person's answer. Returns ``None`` (no grant) when nobody needs to be asked.
        """
        policy = CancellationPolicy.from_config()
        selected = given_grant(self.selection)
        if selected is None:
            raise AirflowFailException("Nothing to approve was handed to this task: no selection grant")
        if selected == []:
            self.log.info("The list step selected nothing: asking nobody")
            return None
        batches = selection_batches(selected)
        if batches is not None and (why := unsigned_reason(batches)) is not None:
            self.log.info("Asking nobody: this run cancels nothing (%s)", why)
            return None
        selection = self._verified(selected, context)
        if not selection.count:
            self.log.info("Nothing would be cancelled: asking nobody")
            return None
        asked = dry_run_flag(self.require_approval_setting, "require_approval")
        if not (asked or selection.require_approval or selection.count > policy.max_cancellations):
            self.log.info(
                "No approval needed for these %d signature requests (the deployment's policy and this "
                "task's require_approval): asking nobody",
                selection.count,
            )
            return None
        self.body = self.describe(selection.shown) + _covered(
            selection.ids, selection.count, selection.selection
        )
        # The deployment's approvers and time-out; this task's own may only be narrower.
        if policy.assigned_users():
            self.assigned_users = policy.assigned_users()
        if self.response_timeout is None or self.response_timeout > policy.approval_timeout:
            self.response_timeout = policy.approval_timeout
        try:
            return super().execute(context)
        except TaskDeferred as waiting:
            # From here to the answer, the selection waits in the task's own deferral state, which
            # the REST API cannot edit: the grant covers what this form showed, whatever the XComs say.
            waiting.kwargs = {**(waiting.kwargs or {}), "selection": selected}
            raise
        except BaseException as parked:
            # Airflow 3.3 parks the task as awaiting input (TaskAwaitingInput), with the same kwargs.
            if type(parked).__name__ == "TaskAwaitingInput":
                parked.kwargs = {**(getattr(parked, "kwargs", None) or {}), "selection": selected}  # type: ignore[attr-defined]
            raise

    def _verified(self, selected: Any, context: Context) -> Grant:
        # One grant, or a list step's batches: each must verify, and all name the same selection.
        ti = context["ti"]
        key = grant_key(self.dropbox_sign_conn_id)
        try:
            grants = [
                verify(grant, key, dag_id=ti.dag_id, run_id=ti.run_id, kind=SELECTION)
                for grant in (selection_batches(selected) or [selected])
            ]
        except ValueError as refused:
            raise AirflowFailException(f"Not asking anybody: {refused}") from None
        if len({(g.selection, g.count) for g in grants}) != 1:
            raise AirflowFailException(
                "Not asking anybody: the batches handed in are of different selections"
            )
        if len(grants) == 1:
            return grants[0]
        first = grants[0]
        ids = tuple(sr_id for g in grants for sr_id in g.ids)
        if len(set(ids)) != first.count:
            raise AirflowFailException(
                f"Not asking anybody: the batches hold {len(set(ids))} ids, and their selection {first.count}"
            )
        shown = {
            "search": first.shown.get("search") if isinstance(first.shown, dict) else None,
            "requests": [r for g in grants for r in (g.shown or {}).get("requests", [])],
        }
        return replace(first, ids=ids, shown=shown, require_approval=any(g.require_approval for g in grants))

    def execute_complete(self, context: Context, event: dict[str, Any], selection: Any = None) -> Any:
        """
        Keep the answer; on an Approve the policy accepts, push the approval grant and return it.
        No answer in time fails the task once the cancel steps are skipped: somebody should notice.
        """
        ti = context["ti"]
        refused = None
        if "error" not in event:
            chosen = event.get("chosen_options")
            if chosen == [APPROVE]:
                triggered_by = getattr(context.get("dag_run"), "triggering_user_name", None)
                refused = CancellationPolicy.from_config().refusal(
                    event.get("responded_by_user"), triggered_by
                )
            answer = {
                "chosen_options": chosen,
                "responded_by_user": event.get("responded_by_user"),
                "refused": refused,
            }
            ti.xcom_push(key=ANSWER_KEY, value=answer)
        if refused:
            raise AirflowFailException(f"The Approve does not count: {refused}. Nothing will be cancelled.")
        if "error" not in event and not event.get("responded_by_user"):
            raise AirflowFailException(
                "Nobody answered the approval in time: nothing will be cancelled (a rejection by default)"
            )
        if event.get("chosen_options") != [APPROVE]:
            self.log.info(
                "Rejected by %s: nothing will be cancelled",
                (event.get("responded_by_user") or {}).get("name"),
            )
        # On Reject this skips the cancel steps and ends the task (Airflow raises to skip them).
        super().execute_complete(context, event)
        if event.get("chosen_options") != [APPROVE]:
            return None
        if selection is None:
            # dag.test() of Airflow 3.1 and 3.2 runs the trigger in line and resumes with the
            # event alone; a deployment's triggerer keeps the deferral's kwargs. The selection is
            # then rendered again, and must still be this run's, signed by a provider step.
            selection = given_grant(self.selection)
        shown = self._verified(selection, context)
        grant = mint(
            grant_key(self.dropbox_sign_conn_id),
            kind=APPROVAL,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            # A list step's batches are covered by their selection's digest; a preview, by its ids.
            ids=shown.ids if selection_batches(selection) is None else (),
            count=shown.count,
            selection=shown.selection,
            approved_by=event["responded_by_user"],
        )
        ti.xcom_push(key=GRANT_KEY, value=grant)
        self.log.info(
            "Approved by %s: %d signature requests may be cancelled",
            grant["approved_by"]["name"],
            shown.count,
        )
        return grant


def _covered(ids: Sequence[str], count: int, digest: str) -> str:
    # Whatever the text above says, the form ends with exactly what an Approve covers.
    lines = ["", "", f"**Approve covers these {count} signature requests, and only these:**", ""]
    lines += [f"- `{sr_id}`" for sr_id in ids[:LISTED_IDS]]
    if count > len(ids[:LISTED_IDS]):
        lines += ["", f"...{count - len(ids[:LISTED_IDS])} more: the selection with digest `{digest[:16]}`."]
    return "\n".join(lines)
