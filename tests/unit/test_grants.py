"""
Grants and the one decision of whether a step may cancel: every way a rewritten XCom could make a
run cancel more is refused, and the deployment's policy is the floor.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dropbox_sign_provider.cancellation.grants import (
    APPROVAL,
    SELECTION,
    GrantError,
    authorize,
    derive_key,
    mint,
    selection_digest,
    verify,
)
from dropbox_sign_provider.cancellation.policy import CancellationPolicy

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
RUN = {"dag_id": "d", "run_id": "r"}
X, Y, Z = ("a" * 40, "b" * 40, "c" * 40)
CAROL = {"id": "carol", "name": "Carol"}


def approval(ids: list[str], **fields: Any) -> dict[str, Any]:
    return mint(KEY, kind=APPROVAL, approved_by=CAROL, ids=ids, **{**RUN, **fields})


def selection(ids: list[str], **fields: Any) -> dict[str, Any]:
    return mint(KEY, kind=SELECTION, ids=ids, **{**RUN, **fields})


def decide(ids: list[str], policy: CancellationPolicy | None = None, **kwargs: Any) -> str:
    return authorize(ids, key=lambda: KEY, policy=policy or CancellationPolicy(), **RUN, **kwargs)


def test_a_grant_verifies_as_made_and_as_json_text() -> None:
    grant = approval([X, Y])

    for handed in (grant, json.dumps(grant)):
        verified = verify(handed, KEY, kind=APPROVAL, **RUN)
        assert (verified.ids, verified.approver, verified.count) == ((X, Y), "Carol", 2)
    shown = {"search": "from:me", "requests": [{"title": "NDA"}]}
    verified = verify(selection([X], shown=shown), KEY, kind=SELECTION, **RUN)
    assert (verified.kind, verified.shown) == (SELECTION, shown)


def test_a_grant_verifies_whatever_order_its_keys_come_back_in() -> None:
    # A database or a serializer may hand the XCom back with its keys in another order.
    def reordered(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: reordered(value[key]) for key in reversed(list(value))}
        return [reordered(item) for item in value] if isinstance(value, list) else value

    made = selection([X], shown={"search": "s", "requests": [{"title": "NDA", "signature_request_id": X}]})
    assert verify(reordered(made), KEY, kind=SELECTION, **RUN).ids == (X,)


def test_a_signed_grant_whose_ids_are_not_ids_is_refused() -> None:
    with pytest.raises(GrantError, match=r"^the selection grant's ids are not a list of ids$"):
        verify(selection([7], selection="s"), KEY, kind=SELECTION, **RUN)


@pytest.mark.parametrize(
    "change",
    [
        {"ids": [X, Y, Z]},
        {"count": 1},
        {"selection": selection_digest([Z])},
        {"approved_by": {"id": "ceo", "name": "ceo"}},
        {"require_approval": True},
        {"shown": [{"title": "something else"}]},
        {"mac": "0" * 64},
    ],
)
def test_a_rewritten_grant_does_not_verify(change: dict[str, Any]) -> None:
    with pytest.raises(GrantError, match="signature does not match"):
        verify({**approval([X, Y]), **change}, KEY, kind=APPROVAL, **RUN)


def test_a_grant_of_another_run_dag_kind_or_account_does_not_verify() -> None:
    grant = approval([X])

    with pytest.raises(GrantError, match="made for run 'r' of DAG 'd', not for this run"):
        verify(grant, KEY, kind=APPROVAL, dag_id="d", run_id="other")
    with pytest.raises(GrantError, match="not for this run"):
        verify(grant, KEY, kind=APPROVAL, dag_id="other", run_id="r")
    with pytest.raises(GrantError, match="of kind 'approval'"):
        verify(grant, KEY, kind=SELECTION, **RUN)
    with pytest.raises(GrantError, match="another account"):
        verify(grant, OTHER_KEY, kind=APPROVAL, **RUN)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            {"chosen_options": ["Approve"]},
            "the approval grant is not a grant: \"{'chosen_options': ['Approve']}\"",
        ),
        ([X], f"the approval grant is not a grant: \"['{X}']\""),
        ("not json", "the approval grant is not JSON: 'not json'"),
        (42, "the approval grant is not a grant: '42'"),
        ("x" * 100, f"the approval grant is not JSON: '{'x' * 80}'"),
        ({"x": "y" * 100}, f"the approval grant is not a grant: \"{{'x': '{'y' * 73}\""),
    ],
)
def test_what_is_not_a_grant_is_refused_saying_what_it_is(value: Any, said: str) -> None:
    with pytest.raises(GrantError) as refused:
        verify(value, KEY, kind=APPROVAL, **RUN)
    assert str(refused.value) == said


def test_a_grant_holding_what_is_not_json_is_refused() -> None:
    with pytest.raises(GrantError, match=r"^the approval grant holds values that are not plain JSON$"):
        verify({**approval([X]), "shown": {1, 2}}, KEY, kind=APPROVAL, **RUN)


def test_the_signing_key_is_the_accounts_and_the_connections() -> None:
    key = derive_key("api-key", "dropbox_sign_default")
    assert key == derive_key("api-key", "dropbox_sign_default")
    assert len({key, derive_key("other-key", "dropbox_sign_default"), derive_key("api-key", "other")}) == 3
    made = mint(key, kind=SELECTION, ids=[X], **RUN)
    assert verify(made, derive_key("api-key", "dropbox_sign_default"), kind=SELECTION, **RUN).ids == (X,)
    with pytest.raises(GrantError, match="another account"):
        verify(made, derive_key("other-key", "dropbox_sign_default"), kind=SELECTION, **RUN)


def test_a_refusal_names_the_first_ten_uncovered_ids_and_counts_the_rest() -> None:
    named = [f"{n:040x}" for n in range(11)]
    with pytest.raises(GrantError) as refused:
        decide(named, approval_grant=approval([X]))
    assert str(refused.value) == (
        f"11 of the ids are not covered by the approval: {', '.join(named[:10])} and 1 more"
    )
    with pytest.raises(GrantError) as refused:
        decide(named[:10], approval_grant=approval([X]))
    assert str(refused.value).endswith(f"approval: {', '.join(named[:10])}")


def test_a_grant_of_an_unknown_kind_cannot_be_made() -> None:
    with pytest.raises(ValueError, match=r"^grant kind 'other' must be one of "):
        mint(KEY, kind="other", ids=[X], **RUN)


def test_an_approval_needs_the_person_who_approved() -> None:
    with pytest.raises(ValueError, match=r"^an approval grant needs the person who approved$"):
        mint(KEY, kind=APPROVAL, ids=[X], **RUN)


# Ids named at run time (a form, an XCom) under the default policy.
def test_named_ids_need_an_approval_covering_every_one() -> None:
    assert decide([X, Y], approval_grant=approval([X, Y])) == "approved by Carol"
    with pytest.raises(GrantError) as refused:
        decide([X])
    assert str(refused.value) == "a person must approve this cancellation, and there is no approval grant"
    with pytest.raises(GrantError, match=f"1 of the ids are not covered by the approval: {Z}"):
        decide([X, Z], approval_grant=approval([X, Y]))


@pytest.mark.parametrize("absent", [None, "", "None", "null", " null "])
def test_a_template_that_rendered_no_grant_is_no_grant(absent: Any) -> None:
    with pytest.raises(GrantError, match="no approval grant"):
        decide([X], approval_grant=absent)


def test_a_selection_grant_is_no_approval() -> None:
    with pytest.raises(GrantError, match="of kind 'selection'"):
        decide([X], approval_grant=selection([X]))


def test_the_deployment_may_leave_named_ids_to_the_form() -> None:
    lenient = CancellationPolicy(require_approval=False)

    assert decide([X], lenient) == "approval not required by the deployment"
    # ...and a step or a run may still ask for one: the policy is a floor.
    with pytest.raises(GrantError, match="no approval grant"):
        decide([X], lenient, require_approval=True)


def test_ids_written_in_the_dag_file_need_approval_only_when_the_step_asks() -> None:
    assert decide([X], named_at_run_time=False) == "named in the DAG file"
    with pytest.raises(GrantError):
        decide([X], named_at_run_time=False, require_approval=True)


def test_a_selected_batch_cancels_only_its_own_ids() -> None:
    batch = selection([X, Y], count=2)

    assert decide([X, Y], selection_grant=batch, require_selection=True).startswith("selected")
    with pytest.raises(GrantError, match=f"not covered by the selection grant: {Z}"):
        decide([X, Y, Z], selection_grant=batch, require_selection=True)
    with pytest.raises(
        GrantError,
        match=r"^this step cancels only what a provider step selected, and it was handed no selection grant$",
    ):
        decide([X], require_selection=True)


@pytest.mark.parametrize(("count", "needs_approval"), [(199, False), (200, False), (201, True)])
def test_a_selection_over_the_deployments_cap_needs_approval(count: int, needs_approval: bool) -> None:
    batch = selection([X], count=count, selection="whole")

    if needs_approval:
        with pytest.raises(GrantError, match=f"\\({count}, more than max_cancellations=200\\)"):
            decide([X], selection_grant=batch)
    else:
        assert decide([X], selection_grant=batch).startswith("selected")


def test_a_cap_of_one_is_enforced() -> None:
    with pytest.raises(GrantError, match="more than max_cancellations=1"):
        decide([X, Y], CancellationPolicy(max_cancellations=1), selection_grant=selection([X, Y]))


def test_a_selection_that_asked_for_approval_needs_it_under_the_cap() -> None:
    with pytest.raises(GrantError, match="no approval grant"):
        decide([X], selection_grant=selection([X], require_approval=True))


def test_an_approval_of_the_whole_selection_covers_each_batch() -> None:
    whole = selection_digest([X, Y, Z])
    batch = selection([Z], count=3, selection=whole, require_approval=True)

    assert decide([Z], selection_grant=batch, approval_grant=approval([], count=3, selection=whole)) == (
        "approved by Carol"
    )
    with pytest.raises(GrantError, match="not covered by the approval"):
        decide([Z], selection_grant=batch, approval_grant=approval([], count=3, selection="another"))


def test_an_approval_by_a_user_without_a_name_names_the_user_by_id() -> None:
    made = mint(KEY, kind=APPROVAL, approved_by={"id": "carol", "name": None}, ids=[X], **RUN)
    assert verify(made, KEY, kind=APPROVAL, **RUN).approver == "carol"
