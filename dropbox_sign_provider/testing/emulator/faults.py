"""
Faults: what can go wrong in front of the API (latency, errors, dropped connections, malformed
bodies, rate-limit storms, lost cancellations), odd answers a proxy might give, and what can go
wrong with the events the emulator delivers (duplicated, out of order, late, forged).

Each is a value: the emulator swaps one in whole, so a call or a delivery sees one consistent set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dropbox_sign_provider.testing.emulator.query import TEXT_FIELDS

#: The keyword arguments of :meth:`DropboxSignEmulator.set_fault`, and the admin API's fault fields.
FAULT_FIELDS = (
    "latency",
    "error_rate",
    "error_statuses",
    "drop_rate",
    "malformed_rate",
    "rate_limit_storm",
    "never_complete",
    "search_ignores",
    "seed",
)
#: The keyword arguments of :meth:`DropboxSignEmulator.set_delivery_fault`, and the admin API's fields.
DELIVERY_FAULT_FIELDS = ("duplicate", "out_of_order", "late", "forged")


@dataclass(frozen=True)
class OddAnswer:
    """
    One answer that a real API, a proxy or a load balancer in front of it might give, served in
    place of (or on top of) the emulator's own: see :meth:`DropboxSignEmulator.add_odd_answers`.

    :param status: the status to answer, with ``body`` and ``headers`` only; ``None`` lets the
        emulator answer as usual (the call then counts and acts as it normally would) and only
        ``headers`` are changed.
    :param headers: headers to add or replace, e.g. ``{"X-Ratelimit-Reset": "1794244889475"}`` or
        ``{"Location": ...}``; a value of ``None`` removes the header (a proxy that strips it).
    :param body: the body, served as it is (``status`` given only).
    :param method: only calls with this method, e.g. ``"POST"``; any method when ``None``.
    :param path_prefix: only calls whose path starts with this, e.g. ``"/v3/signature_request/cancel/"``.
    :param times: how many matching calls get this answer before it is used up.
    """

    status: int | None = None
    headers: Mapping[str, str | None] = field(default_factory=dict)
    body: bytes | str = b""
    method: str | None = None
    path_prefix: str = "/v3"
    times: int = 1

    @classmethod
    def error(
        cls,
        status: int,
        error_name: str,
        error_msg: str,
        *,
        headers: Mapping[str, str | None] | None = None,
        **match: Any,
    ) -> OddAnswer:
        """
        An answer in the API's error envelope (``{"error": {"error_msg", "error_name"}}``), e.g.
        ``OddAnswer.error(402, "payment_required", "Payment required.", method="GET",
        path_prefix=f"/v3/signature_request/{sr_id}", times=100)``.

        :param status: the HTTP status.
        :param error_name: the envelope's ``error_name``.
        :param error_msg: the envelope's ``error_msg``.
        :param headers: more headers (the JSON content type is always set).
        :param match: ``method``, ``path_prefix`` and ``times``, as for the class itself.
        """
        body = json.dumps({"error": {"error_msg": error_msg, "error_name": error_name}})
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body, **match)

    def matches(self, method: str, path: str) -> bool:
        """Whether a call to ``method path`` gets this answer."""
        return (self.method is None or self.method.upper() == method.upper()) and path.startswith(
            self.path_prefix
        )


class OddAnswers:
    """The odd answers waiting for their calls, each with its uses left. The emulator's lock guards it."""

    def __init__(self) -> None:
        self._entries: list[list[Any]] = []

    def add(self, answers: Sequence[OddAnswer]) -> None:
        """
        Queue answers, after checking them all.

        :raises ValueError: for a ``times`` below 1 or a status outside 100 to 599.
        """
        for answer in answers:
            if answer.times < 1:
                raise ValueError(f"times {answer.times!r} must be 1 or more")
            if answer.status is not None and not 100 <= answer.status <= 599:
                raise ValueError(f"status {answer.status!r} must be from 100 to 599")
        self._entries.extend([answer, answer.times] for answer in answers)

    def take(self, method: str, path: str) -> OddAnswer | None:
        """The first answer matching the call, one use spent, or ``None``."""
        for entry in self._entries:
            answer, _ = entry
            if answer.matches(method, path):
                entry[1] -= 1
                if entry[1] <= 0:
                    self._entries.remove(entry)
                return answer  # type: ignore[no-any-return]
        return None

    def clear(self) -> None:
        """Drop every queued answer."""
        self._entries.clear()


@dataclass
class FaultPlan:
    """What the faults decided for one call, drawn once when it arrives."""

    latency: float = 0.0
    drop: bool = False
    storm: bool = False
    error_status: int | None = None
    malformed: bool = False


@dataclass(frozen=True)
class Faults:
    """The API faults in force; see :meth:`DropboxSignEmulator.set_fault` for each field."""

    latency: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    rate_limit_storm: float = 0.0
    never_complete: bool | int = False
    search_ignores: tuple[str, ...] = ()
    seed: int | None = None

    def checked(self) -> Faults:
        """
        The faults, each value checked and normalised: built from the values as given (by
        :meth:`DropboxSignEmulator.set_fault` or the admin API), this is what goes into force.

        :raises ValueError: naming an out-of-range value.
        """
        statuses = tuple(int(status) for status in self.error_statuses)
        if self.error_rate and not statuses:
            raise ValueError("error_statuses must not be empty when error_rate is set")
        if any(not 400 <= status <= 599 for status in statuses):
            raise ValueError(f"error_statuses must be 4xx or 5xx statuses, got {list(statuses)}")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        never_complete = self.never_complete
        if not isinstance(never_complete, bool) and (
            not isinstance(never_complete, int) or never_complete < 0
        ):
            raise ValueError("never_complete must be a bool or a non-negative int")
        return Faults(
            latency=float(self.latency),
            error_rate=_check_rate("error_rate", self.error_rate),
            error_statuses=statuses,
            drop_rate=_check_rate("drop_rate", self.drop_rate),
            malformed_rate=_check_rate("malformed_rate", self.malformed_rate),
            rate_limit_storm=_check_rate("rate_limit_storm", self.rate_limit_storm),
            never_complete=never_complete,
            search_ignores=_check_fields(self.search_ignores),
            seed=self.seed,
        )

    def as_dict(self) -> dict[str, Any]:
        """The faults as keyword arguments of :meth:`DropboxSignEmulator.set_fault` (JSON-ready)."""
        return {name: getattr(self, name) for name in FAULT_FIELDS} | {
            "error_statuses": list(self.error_statuses),
            "search_ignores": list(self.search_ignores),
        }

    def plan(self, rng: random.Random) -> FaultPlan:
        """Draw what happens to one call: at most one of drop, storm, error and malformed body."""
        plan = FaultPlan(latency=self.latency)
        if self.drop_rate and rng.random() < self.drop_rate:
            plan.drop = True
        elif self.rate_limit_storm and rng.random() < self.rate_limit_storm:
            plan.storm = True
        elif self.error_rate and rng.random() < self.error_rate:
            plan.error_status = rng.choice(self.error_statuses)
        elif self.malformed_rate and rng.random() < self.malformed_rate:
            plan.malformed = True
        return plan

    def loses_cancel(self, accepted_cancels: int) -> bool:
        """Whether the ``accepted_cancels``-th accepted cancel call of a request is lost."""
        if isinstance(self.never_complete, bool):
            return self.never_complete
        return accepted_cancels <= self.never_complete


@dataclass(frozen=True)
class DeliveryFaults:
    """
    What goes wrong with the events the emulator delivers; see
    :meth:`DropboxSignEmulator.set_delivery_fault` for each field.
    """

    duplicate: bool = False
    out_of_order: bool = False
    late: float = 0.0
    forged: bool = False

    @classmethod
    def checked(
        cls, *, duplicate: bool = False, out_of_order: bool = False, late: float = 0.0, forged: bool = False
    ) -> DeliveryFaults:
        """
        The delivery faults, each value checked.

        :raises ValueError: naming an out-of-range value.
        """
        for name, value in (("duplicate", duplicate), ("out_of_order", out_of_order), ("forged", forged)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        if isinstance(late, bool) or not isinstance(late, int | float) or not 0 <= late <= 3600:
            raise ValueError(f"late must be between 0 and 3600 seconds, got {late!r}")
        return cls(duplicate=duplicate, out_of_order=out_of_order, late=float(late), forged=forged)

    def as_dict(self) -> dict[str, Any]:
        """The faults as keyword arguments of :meth:`DropboxSignEmulator.set_delivery_fault`."""
        return asdict(self)


def _check_fields(value: Any) -> tuple[str, ...]:
    known = (*TEXT_FIELDS, "created", "complete")
    if isinstance(value, str) or any(name not in known for name in value):
        raise ValueError(f"search_ignores {value!r} must be a list of search fields: {', '.join(known)}")
    return tuple(value)


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value
