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


#: The Airflow Variable that arms the expiry clean-up; ``false`` (or unset) stops a selection already
#: made, at once, before its batches cancel.
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
    """

    require_approval: bool = True
    approvers: tuple[str, ...] = ()
    four_eyes: bool = False
    max_cancellations: int = 200
    approval_timeout: timedelta = timedelta(days=1)

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
        )

    def cap(self, asked: int | None = None) -> int:
        """
        The most ids a run may cancel without approval: the deployment's ``max_cancellations``,
        or less when the run asks for less.

        :param asked: the run's own cap (a param); ``None``: the deployment's.
        """
        return self.max_cancellations if asked is None else min(asked, self.max_cancellations)

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
