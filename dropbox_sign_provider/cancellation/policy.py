"""
The deployment's cancellation policy: the ``[dropbox_sign]`` section of Airflow's configuration.

Who may decide a cancellation is the deployment's choice, not the choice of whoever triggers a run:
a run's params and an operator's arguments may tighten this policy (ask for approval, lower a cap)
and never loosen it. It is read at run time, in the task that acts, never when a DAG file is
parsed; Airflow reads its configuration once per process, so a change takes effect when each
component restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dropbox_sign_provider import CONFIG_SECTION

if TYPE_CHECKING:
    from airflow.sdk.execution_time.hitl import HITLUser


#: The Airflow Variable that disarms cancelling by rule at once: ``false`` stops every list step from
#: signing a selection and every cancel step from acting on one already made. It can never arm: only
#: the deployment's ``[dropbox_sign] armed`` does.
DISARM_VARIABLE = "dropbox_sign_cleanup_armed"


@dataclass(frozen=True)
class CancellationPolicy:
    """
    What the deployment allows (see the provider's configuration reference for each option).

    :param require_approval: ids named at run time need a person's Approve before they are cancelled.
    :param approvers: Airflow user ids who may answer an approval; empty: anyone allowed to answer.
    :param four_eyes: the user who triggered a run may not approve it.
    :param max_cancellations: the most ids a run cancels on a rule's selection without approval.
    :param approval_timeout: how long an approval waits before it counts as Reject.
    :param armed: what a list step selects by rule may be cancelled; otherwise such runs are dry runs.
    """

    require_approval: bool = True
    approvers: tuple[str, ...] = ()
    four_eyes: bool = False
    max_cancellations: int = 200
    approval_timeout: timedelta = timedelta(days=1)
    armed: bool = False

    @classmethod
    def from_config(cls) -> CancellationPolicy:
        """
        The policy in Airflow's configuration, its defaults where an option is not set.

        :raises ValueError: naming the option and its value, when one is malformed: a policy that
            cannot be read must stop a cancellation, not fall back to something looser.
        """
        from airflow.providers.common.compat.sdk import conf

        def flag(option: str, default: bool) -> bool:
            raw = str(conf.get(CONFIG_SECTION, option, fallback=str(default))).strip().lower()
            if raw in ("true", "1", "yes", "on"):
                return True
            if raw in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"[{CONFIG_SECTION}] {option} must be True or False, not {raw!r}")

        def number(option: str, default: float, *, whole: bool) -> float:
            raw = str(conf.get(CONFIG_SECTION, option, fallback=str(default))).strip()
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0 and (not whole or value.is_integer())):
                kind = "a whole number above 0" if whole else "a number of seconds above 0"
                raise ValueError(f"[{CONFIG_SECTION}] {option} must be {kind}, not {raw!r}")
            return value

        approvers = str(conf.get(CONFIG_SECTION, "approvers", fallback="") or "")
        return cls(
            require_approval=flag("require_approval", cls.require_approval),
            approvers=tuple(dict.fromkeys(name.strip() for name in approvers.split(",") if name.strip())),
            four_eyes=flag("four_eyes", cls.four_eyes),
            max_cancellations=int(number("max_cancellations", cls.max_cancellations, whole=True)),
            approval_timeout=timedelta(
                seconds=number("approval_timeout", cls.approval_timeout.total_seconds(), whole=False)
            ),
            armed=flag("armed", cls.armed),
        )

    def cap(self, asked: int | None = None) -> int:
        """
        The most ids a run may cancel without approval: the deployment's ``max_cancellations``,
        or less when the run asks for less.

        :param asked: the run's own cap (a param); ``None``: the deployment's.
        """
        return self.max_cancellations if asked is None else min(asked, self.max_cancellations)

    def why_unarmed(self, disarm_variable: str | None, *, approved: bool = False) -> str | None:
        """
        Why a selection by rule may not be cancelled now, in words for a log and a report; ``None``
        when it may.

        :param disarm_variable: the value of the Variable ``dropbox_sign_cleanup_armed``; ``None``
            when unset.
        :param approved: a person must approve the whole selection before anything is cancelled:
            then arming is not needed, and only the Variable can stop it.
        """
        if not self.armed and not approved:
            return (
                f"NOT ARMED: [{CONFIG_SECTION}] armed is False, so this run is a dry run and cancels "
                f"nothing. Read its report; when the list is right, the deployment arms cancelling by "
                f"rule with [{CONFIG_SECTION}] armed = True (AIRFLOW__DROPBOX_SIGN__ARMED=True on the "
                "workers)."
            )
        if disarm_variable is not None and disarm_variable.strip().lower() == "false":
            return (
                f"DISARMED: the Variable {DISARM_VARIABLE} is false, so this run is a dry run and cancels "
                "nothing; delete the Variable to let the deployment's [dropbox_sign] armed apply again."
            )
        return None

    def assigned_users(self) -> list[HITLUser] | None:
        """The approvers as Airflow's human-in-the-loop ``assigned_users``; ``None``: anyone may answer."""
        users: list[HITLUser] = [{"id": user, "name": user} for user in self.approvers]
        return users or None

    def refusal(self, responded_by: dict[str, Any] | None, triggered_by: str | None) -> str | None:
        """
        Why an Approve does not count, or ``None`` when it does.

        :param responded_by: who answered (Airflow's ``responded_by_user``); ``None`` on a time-out.
        :param triggered_by: the name of the user who triggered the run, when a user did.
        """
        if not responded_by:
            return "nobody answered"
        who = {str(responded_by.get("id") or ""), str(responded_by.get("name") or "")} - {""}
        if self.approvers and not who & set(self.approvers):
            return f"{responded_by.get('name')!r} is not one of [{CONFIG_SECTION}] approvers"
        if self.four_eyes and triggered_by and triggered_by in who:
            return (
                f"{triggered_by!r} triggered this run, and [{CONFIG_SECTION}] four_eyes needs another person"
            )
        return None
