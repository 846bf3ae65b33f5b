"""
Signed hand-offs between the tasks of one cancellation: what a provider step selected, and what a
person approved, as values that nobody can forge through Airflow's REST API.

Anything one task hands another by XCom can be created, patched or deleted by whoever may edit the
DAG's runs. So the step that read Dropbox Sign, or that received the person's answer from Airflow's
own human-in-the-loop record, signs what it hands on: an HMAC-SHA256 over the DAG id, the run id
and the content, keyed by a secret derived from the Dropbox Sign connection's credential. Only
workers read that credential (from the secrets backend), and it is never stored in the run. The
step that cancels verifies the signature before its first cancel and refuses every id the grant
does not cover: a rewritten XCom can make a run cancel less, never more.

A grant is plain JSON (an XCom value, a mapped keyword argument):
``{"kind", "dag_id", "run_id", "ids", "count", "selection", "require_approval", "shown",
"approved_by", "mac"}``.

- ``kind`` ``selection``: ids a provider step selected (a preview, the clean-up's search), ``ids``
  a batch of them, ``count`` and ``selection`` (a digest) the whole selection the batch belongs to,
  ``require_approval`` whether the step that selected them wants a person to approve first, and
  ``shown`` what an approval form shows of them (titles, signers), so that it cannot be rewritten.
- ``kind`` ``approval``: ids a person approved: ``approved_by`` (Airflow's user ``id`` and
  ``name``) and either ``ids`` themselves or the ``selection`` digest they were shown as.

What a grant cannot stop, and the docs say: one who can edit XComs may hand a step a grant minted
earlier in the same run of the same DAG, so at most the ids a person approved (or the rule selected)
in that run are cancelled, which the run was going to do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dropbox_sign_provider.cancellation.policy import CancellationPolicy

SELECTION = "selection"
APPROVAL = "approval"
_KINDS = (SELECTION, APPROVAL)
#: Bumped when the signed fields change: a grant of another version never verifies.
_VERSION = 1
_FIELDS = (
    "kind",
    "dag_id",
    "run_id",
    "ids",
    "count",
    "selection",
    "require_approval",
    "shown",
    "approved_by",
)


class GrantError(ValueError):
    """A grant that does not verify, or does not cover what a step was about to cancel."""


def selection_digest(ids: Iterable[str]) -> str:
    """
    The digest that names a whole selection, whatever its order: SHA-256 of the sorted ids.

    :param ids: the ids selected.
    """
    return hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()


def derive_key(credential: str, conn_id: str) -> bytes:
    """
    The signing key of grants for one connection, derived from its credential (API key or access
    token): only a process that may act on the account can sign or verify, and a grant for one
    account never verifies for another. Tasks get it from
    :func:`~dropbox_sign_provider.hooks.connection.grant_key`, which reads the connection.

    :param credential: the connection's API key or access token.
    :param conn_id: the ``dropbox_sign`` connection.
    """
    return hmac.new(
        credential.encode(), f"dropbox-sign-provider/grant/v{_VERSION}/{conn_id}".encode(), "sha256"
    ).digest()


def _mac(key: bytes, fields: Mapping[str, Any]) -> str:
    message = json.dumps({"v": _VERSION, **{name: fields[name] for name in _FIELDS}}, sort_keys=True)
    return hmac.new(key, message.encode(), "sha256").hexdigest()


def mint(
    key: bytes,
    *,
    kind: str,
    dag_id: str,
    run_id: str,
    ids: Sequence[str] = (),
    count: int | None = None,
    selection: str | None = None,
    require_approval: bool = False,
    shown: Any = None,
    approved_by: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """
    A signed grant (plain JSON).

    :param key: from :func:`~dropbox_sign_provider.hooks.connection.grant_key`.
    :param kind: ``selection`` or ``approval``.
    :param dag_id: the DAG whose run may use it.
    :param run_id: the run that may use it.
    :param ids: the ids it covers (a batch of a selection, or the ids a person approved).
    :param count: how many ids the whole selection holds (default: ``len(ids)``).
    :param selection: the digest of the whole selection (default: of ``ids``).
    :param require_approval: the selecting step wants a person's Approve before any is cancelled.
    :param shown: what an approval form shows of the selection (plain JSON).
    :param approved_by: who approved (``{"id", "name"}``): required for an approval.
    """
    if kind not in _KINDS:
        raise ValueError(f"grant kind {kind!r} must be one of {_KINDS}")
    if kind == APPROVAL and not approved_by:
        raise ValueError("an approval grant needs the person who approved")
    fields: dict[str, Any] = {
        "kind": kind,
        "dag_id": dag_id,
        "run_id": run_id,
        "ids": list(ids),
        "count": len(ids) if count is None else count,
        "selection": selection or selection_digest(ids),
        "require_approval": require_approval,
        "shown": shown,
        "approved_by": None
        if approved_by is None
        else {"id": approved_by.get("id"), "name": approved_by.get("name")},
    }
    return {**fields, "mac": _mac(key, fields)}


@dataclass(frozen=True)
class Grant:
    """A grant that verified for this run: what it covers and who approved it."""

    kind: str
    ids: tuple[str, ...]
    count: int
    selection: str
    require_approval: bool
    shown: Any
    approved_by: Mapping[str, Any] | None

    @property
    def approver(self) -> str:
        """Who approved, in words, for logs and reports."""
        who = self.approved_by or {}
        return str(who.get("name") or who.get("id") or "nobody")


def verify(value: Any, key: bytes, *, dag_id: str, run_id: str, kind: str) -> Grant:
    """
    Check a grant handed to this run.

    :param value: the grant, as a dict or its JSON text.
    :param key: from :func:`~dropbox_sign_provider.hooks.connection.grant_key`.
    :param dag_id: this run's DAG.
    :param run_id: this run.
    :param kind: the kind expected.
    :raises GrantError: naming why it does not verify: not a grant, another kind, another run,
        or a signature that does not match (rewritten, or signed for another account).
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise GrantError(f"the {kind} grant is not JSON: {value[:80]!r}") from None
    if not isinstance(value, Mapping) or not set(_FIELDS) | {"mac"} <= set(value):
        raise GrantError(f"the {kind} grant is not a grant: {str(value)[:80]!r}")
    if value["kind"] != kind:
        raise GrantError(f"the {kind} grant is of kind {value['kind']!r}")
    if (value["dag_id"], value["run_id"]) != (dag_id, run_id):
        raise GrantError(
            f"the {kind} grant was made for run {value['run_id']!r} of DAG {value['dag_id']!r}, "
            f"not for this run ({run_id!r} of {dag_id!r})"
        )
    try:
        expected = _mac(key, value)
    except (TypeError, ValueError):
        raise GrantError(f"the {kind} grant holds values that are not plain JSON") from None
    if not isinstance(value["mac"], str) or not hmac.compare_digest(expected, value["mac"]):
        raise GrantError(
            f"the {kind} grant's signature does not match: it was changed, or made for another account"
        )
    ids = value["ids"]
    if not isinstance(ids, list) or not all(isinstance(sr_id, str) for sr_id in ids):
        raise GrantError(f"the {kind} grant's ids are not a list of ids")
    return Grant(
        kind=kind,
        ids=tuple(ids),
        count=int(value["count"]),
        selection=str(value["selection"]),
        require_approval=bool(value["require_approval"]),
        shown=value["shown"],
        approved_by=value["approved_by"],
    )


def authorize(
    ids: Sequence[str],
    *,
    key: Callable[[], bytes],
    dag_id: str,
    run_id: str,
    policy: CancellationPolicy,
    selection_grant: Any = None,
    approval_grant: Any = None,
    require_selection: bool = False,
    require_approval: bool = False,
    named_at_run_time: bool = True,
) -> str:
    """
    Decide whether a step may cancel ``ids``, before it sends anything: the one place where the
    deployment's policy, the step's own arguments and the grants it was handed meet.

    - With a selection grant (or ``require_selection``), every id must be in the verified grant;
      a person must approve when the selection is larger than the deployment's
      ``max_cancellations``, or when the selecting step asked for it.
    - Without one, the ids were named at run time (a param, an XCom): a person must approve when
      the deployment's ``require_approval`` says so. Ids written in the DAG file itself are the
      deployment's code, and need approval only when the step asks for it.
    - An approval must verify and cover every id (by id, or by the selection it was shown).

    :param ids: what the step is about to cancel.
    :param key: gives the grant key (:func:`~dropbox_sign_provider.hooks.connection.grant_key`);
        called only when a grant is checked.
    :param dag_id: this run's DAG.
    :param run_id: this run.
    :param policy: the deployment's policy.
    :param selection_grant: the grant of the step that selected the ids, if any.
    :param approval_grant: the grant of the approval, if any.
    :param require_selection: the step (as the DAG file wrote it) cancels only selected ids.
    :param require_approval: the step (as the DAG file wrote it) always needs an approval.
    :param named_at_run_time: the ids came from a template, a param or an XCom.
    :return: why the step may cancel, in words for its log.
    :raises GrantError: naming what is missing or which ids are not covered.
    """
    selection_grant, approval_grant = given_grant(selection_grant), given_grant(approval_grant)
    selection: Grant | None = None
    if selection_grant is not None or require_selection:
        if selection_grant is None:
            raise GrantError(
                "this step cancels only what a provider step selected, and it was handed no selection grant"
            )
        selection = verify(selection_grant, key(), dag_id=dag_id, run_id=run_id, kind=SELECTION)
        _refuse_uncovered(ids, selection.ids, "the selection grant")
        needs_approval = (
            require_approval or selection.require_approval or selection.count > policy.max_cancellations
        )
        why = f"selected by a provider step ({selection.count} in all)"
    else:
        needs_approval = require_approval or (policy.require_approval and named_at_run_time)
        why = "named in the DAG file" if not named_at_run_time else "approval not required by the deployment"
    if not needs_approval:
        return why
    if approval_grant is None:
        over = (
            f" ({selection.count}, more than max_cancellations={policy.max_cancellations})"
            if selection
            else ""
        )
        raise GrantError(f"a person must approve this cancellation{over}, and there is no approval grant")
    approval = verify(approval_grant, key(), dag_id=dag_id, run_id=run_id, kind=APPROVAL)
    if selection is None or approval.selection != selection.selection:
        _refuse_uncovered(ids, approval.ids, "the approval")
    return f"approved by {approval.approver}"


def approver_of(value: Any, *, key: Callable[[], bytes], dag_id: str, run_id: str) -> str | None:
    """
    Who approved, by an approval grant that verifies for this run: what a report says, rather than
    an answer kept in an XCom, which anyone who may edit the run can rewrite.

    :param value: the approval grant, as handed on.
    :param key: gives the grant key of the connection that signed it; called only when there is a
        grant.
    :param dag_id: this run's DAG.
    :param run_id: this run.
    :return: the approver's name; ``None`` when there is no grant or it does not verify.
    """
    if given_grant(value) is None:
        return None
    try:
        return verify(value, key(), dag_id=dag_id, run_id=run_id, kind=APPROVAL).approver
    except GrantError:
        return None


def given_grant(value: Any) -> Any:
    """
    A grant as handed to a step, or ``None`` when there is none: a template renders a missing XCom
    as text (``None``, or ``null`` through ``tojson``).

    :param value: what the step was handed.
    """
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "null")):
        return None
    return value


def _refuse_uncovered(ids: Sequence[str], covered: Iterable[str], what: str) -> None:
    outside = [sr_id for sr_id in ids if sr_id not in set(covered)]
    if outside:
        shown = ", ".join(outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
        raise GrantError(f"{len(outside)} of the ids are not covered by {what}: {shown}")
