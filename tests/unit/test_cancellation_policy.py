"""The deployment's policy, read from ``[dropbox_sign]``: defaults, bad values, and who may approve."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dropbox_sign_provider.cancellation.policy import CancellationPolicy

ANN = {"id": "ann", "name": "Ann"}
BOB = {"id": "bob", "name": "Bob"}


def test_the_defaults_are_what_a_careful_team_would_pick() -> None:
    policy = CancellationPolicy.from_config()

    assert policy == CancellationPolicy(
        require_approval=True,
        approvers=(),
        four_eyes=False,
        max_cancellations=200,
        approval_timeout=timedelta(days=1),
    )
    assert policy.assigned_users() is None


def test_the_options_are_read_from_the_environment_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__REQUIRE_APPROVAL", "False")
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__APPROVERS", " ann, bob ,ann")
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__FOUR_EYES", "true")
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__MAX_CANCELLATIONS", "50")
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__APPROVAL_TIMEOUT", "90")

    policy = CancellationPolicy.from_config()

    assert policy == CancellationPolicy(False, ("ann", "bob"), True, 50, timedelta(seconds=90))
    assert policy.assigned_users() == [{"id": "ann", "name": "ann"}, {"id": "bob", "name": "bob"}]


def test_only_the_deployment_arms_cancelling_by_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CancellationPolicy.from_config().armed is False
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__ARMED", "True")
    assert CancellationPolicy.from_config().armed is True


@pytest.mark.parametrize(
    ("value", "meant"),
    [("1", True), ("Yes", True), ("ON", True), ("0", False), ("no", False), (" Off ", False)],
)
def test_a_flag_reads_the_usual_spellings_of_true_and_false(
    monkeypatch: pytest.MonkeyPatch, value: str, meant: bool
) -> None:
    for option in ("REQUIRE_APPROVAL", "FOUR_EYES", "ARMED"):
        monkeypatch.setenv(f"AIRFLOW__DROPBOX_SIGN__{option}", value)
    policy = CancellationPolicy.from_config()
    assert (policy.require_approval, policy.four_eyes, policy.armed) == (meant, meant, meant)


def test_a_cap_of_one_and_a_time_out_under_a_second_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__MAX_CANCELLATIONS", "1")
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__APPROVAL_TIMEOUT", "0.5")
    policy = CancellationPolicy.from_config()
    assert (policy.max_cancellations, policy.approval_timeout) == (1, timedelta(seconds=0.5))


@pytest.mark.parametrize(
    ("option", "value", "kind"),
    [
        ("MAX_CANCELLATIONS", "0", "a whole number above 0"),
        ("APPROVAL_TIMEOUT", "0", "a number of seconds above 0"),
        ("ARMED", "armed", "True or False"),
    ],
)
def test_a_malformed_option_says_what_it_must_be(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str, kind: str
) -> None:
    monkeypatch.setenv(f"AIRFLOW__DROPBOX_SIGN__{option}", value)
    with pytest.raises(ValueError, match="must be") as refused:
        CancellationPolicy.from_config()
    assert str(refused.value) == f"[dropbox_sign] {option.lower()} must be {kind}, not {value!r}"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("REQUIRE_APPROVAL", "maybe"),
        ("FOUR_EYES", "2"),
        ("MAX_CANCELLATIONS", "0"),
        ("MAX_CANCELLATIONS", "1.5"),
        ("MAX_CANCELLATIONS", "lots"),
        # Airflow reads a zero time-out as none: the approval would wait for ever.
        ("APPROVAL_TIMEOUT", "0"),
        ("APPROVAL_TIMEOUT", "-5"),
        ("APPROVAL_TIMEOUT", "nan"),
        ("APPROVAL_TIMEOUT", "inf"),
    ],
)
def test_a_malformed_option_stops_everything_naming_it(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    monkeypatch.setenv(f"AIRFLOW__DROPBOX_SIGN__{option}", value)

    with pytest.raises(ValueError, match=rf"\[dropbox_sign\] {option.lower()} must be .*{value!r}"):
        CancellationPolicy.from_config()


@pytest.mark.parametrize(("asked", "cap"), [(None, 200), (10, 10), (200, 200), (201, 200), (10_000, 200)])
def test_a_run_may_lower_the_cap_never_raise_it(asked: int | None, cap: int) -> None:
    assert CancellationPolicy().cap(asked) == cap


def test_an_approve_counts_from_anyone_by_default() -> None:
    assert CancellationPolicy().refusal(ANN, triggered_by="Ann") is None


def test_a_timed_out_approval_never_counts() -> None:
    assert CancellationPolicy().refusal(None, triggered_by=None) == "nobody answered"


def test_four_eyes_refuses_the_user_who_triggered_the_run() -> None:
    policy = CancellationPolicy(four_eyes=True)

    assert policy.refusal(ANN, triggered_by="Ann") is not None
    assert policy.refusal(ANN, triggered_by="ann") is not None
    assert policy.refusal(BOB, triggered_by="Ann") is None
    # A scheduled run was triggered by nobody: anyone may approve it.
    assert policy.refusal(ANN, triggered_by=None) is None


def test_approvers_refuse_anyone_else() -> None:
    policy = CancellationPolicy(approvers=("bob",))

    assert policy.refusal(ANN, triggered_by=None) == "'Ann' is not one of [dropbox_sign] approvers"
    assert policy.refusal(BOB, triggered_by=None) is None


def test_unarmed_unless_approved_and_each_refusal_says_what_to_do() -> None:
    assert CancellationPolicy(armed=False).why_unarmed(None) == (
        "NOT ARMED: [dropbox_sign] armed is False, so this run is a dry run and cancels nothing. Read its "
        "report; when the list is right, the deployment arms cancelling by rule with [dropbox_sign] armed "
        "= True (AIRFLOW__DROPBOX_SIGN__ARMED=True on the workers)."
    )
    assert CancellationPolicy(armed=True).why_unarmed("false") == (
        "DISARMED: the Variable dropbox_sign_cleanup_armed is false, so this run is a dry run and cancels "
        "nothing; delete the Variable to let the deployment's [dropbox_sign] armed apply again."
    )
