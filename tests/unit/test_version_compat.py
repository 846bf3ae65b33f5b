"""What ``version_compat`` does on each supported Airflow (the suite runs on 3.1, 3.2 and 3.3)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from airflow.sdk._shared.secrets_masker import redact
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import MaskSecret

from dropbox_sign_provider import version_compat


class RecordingSupervisor:
    """Stands in for the triggerer's supervisor comms: records what reaches it, and from which thread."""

    def __init__(self) -> None:
        self.received: list[tuple[Any, int]] = []

    def send(self, msg: Any) -> None:
        self.received.append((msg, threading.get_ident()))

    async def asend(self, msg: Any) -> None:
        self.received.append((msg, threading.get_ident()))


def test_flags_follow_the_installed_airflow() -> None:
    from airflow import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    assert (major, minor) >= (3, 1)
    assert version_compat.AIRFLOW_V_3_2_PLUS is (minor >= 2)
    assert version_compat.AIRFLOW_V_3_3_PLUS is (minor >= 3)


def test_amask_secret_masks_here_and_tells_the_supervisor_off_the_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    supervisor = RecordingSupervisor()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    secret = f"sk-{uuid.uuid4().hex}"

    async def in_a_trigger() -> int:
        await version_compat.amask_secret(secret)
        return threading.get_ident()

    loop_thread = asyncio.run(in_a_trigger())

    assert secret not in str(redact(f"key={secret}"))
    masks = [(msg, thread) for msg, thread in supervisor.received if isinstance(msg, MaskSecret)]
    assert [msg.value for msg, _ in masks] == [secret]
    # A blocking send on the loop's own thread is what Airflow 3.1 refuses (and could deadlock):
    # either it was awaited (3.3's asend) or it ran in a worker thread.
    ((_, thread),) = masks
    assert thread != loop_thread or version_compat.AIRFLOW_V_3_3_PLUS
