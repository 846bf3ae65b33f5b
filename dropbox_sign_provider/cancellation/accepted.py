"""
The cancels a task instance already had accepted, kept across its tries.

A task retry runs ``execute`` again from the start, and Airflow clears a task instance's XComs when
a try starts. Without a record, a retry after a lost worker or an outage would send every cancel of
its batch again, and read the ones that had taken effect as cancelled by someone else. So the
cancel step records each accepted id as it goes, in one Airflow Variable per task instance (the one
store a task reads and writes on every supported Airflow, and that outlives a try), written every
:data:`FLUSH_EVERY` ids and when the try ends; a killed worker loses at most the ids since the last
write. The next try reads it, sends none of those again, and waits for them as its own.

Where Variables cannot be used (a task run outside Airflow, a read-only secrets backend), nothing is
recorded and a retry behaves as before: every cancel is sent again, which Dropbox Sign answers
harmlessly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dropbox_sign_provider.cancellation.outcomes import Logger

#: Accepted ids written to the record at least every this many.
FLUSH_EVERY = 50
_PREFIX = "dropbox_sign_accepted_cancels."


def record_variable(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """
    The key of the Variable recording one task instance's accepted cancels:
    ``dropbox_sign_accepted_cancels.<sha256 of the task instance, 32 hex>`` (a run id can be long,
    and Variable keys are at most 250 characters).
    """
    instance = json.dumps([dag_id, run_id, task_id, -1 if map_index is None else map_index])
    return _PREFIX + hashlib.sha256(instance.encode()).hexdigest()[:32]


class AcceptedCancels:
    """
    One task instance's accepted cancels: those of its earlier tries, and those of this one.

    :param key: the Variable holding the record (:func:`record_variable`); ``None``: record nothing.
    :param earlier: the ids earlier tries had accepted.
    :param log: the task's logger.
    """

    def __init__(self, key: str | None, earlier: list[str], log: Logger) -> None:
        self.key = key
        self.earlier = frozenset(earlier)
        self._ids = list(earlier)
        self._unwritten = 0
        self._log = log

    @classmethod
    def of(cls, ti: Any, log: Logger) -> AcceptedCancels:
        """The record of ``ti``, read when this is a retry (a first try has nothing to read)."""
        try:
            key = record_variable(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
            earlier: list[str] = []
            if int(getattr(ti, "try_number", 1) or 1) > 1:
                from airflow.sdk import Variable

                found = Variable.get(key, default=None, deserialize_json=True)
                earlier = [str(i) for i in found] if isinstance(found, list) else []
        except Exception as problem:
            log.debug("Accepted cancels are not recorded across tries here: %s", problem)
            return cls(None, [], log)
        if earlier:
            log.info(
                "%d cancels were accepted by an earlier try of this task: not sent again, waited for "
                "as this run's own",
                len(earlier),
            )
        return cls(key, earlier, log)

    def add(self, signature_request_id: str) -> None:
        """Record an id whose cancel was accepted (or was in flight: 409)."""
        self._ids.append(signature_request_id)
        self._unwritten += 1
        if self._unwritten >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write what is not written yet."""
        if self.key is None or not self._unwritten:
            return
        from airflow.sdk import Variable

        try:
            Variable.set(self.key, self._ids, serialize_json=True)
        except Exception as problem:
            self._log.warning("Could not record the accepted cancels (%s); a retry sends them again", problem)
            self.key = None
            return
        self._unwritten = 0

    @staticmethod
    def forget(ti: Any, log: Logger) -> None:
        """
        Delete the record of ``ti``: the task instance is done with it (it ended, and will not retry).
        """
        try:
            from airflow.sdk import Variable

            key = record_variable(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
            if Variable.get(key, default=None) is not None:
                Variable.delete(key)
        except Exception as problem:
            log.debug("Could not delete the record of accepted cancels: %s", problem)


def will_retry(ti: Any, retryable: bool) -> bool:
    """Whether a failing try of ``ti`` is retried: the failure allows it and tries are left."""
    return retryable and int(getattr(ti, "try_number", 1) or 1) <= int(getattr(ti, "max_tries", 0) or 0)
