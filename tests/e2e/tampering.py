"""
What one who may edit runs can and cannot make the manual DAG cancel, on a real deployment.

Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor; SQLite) with the simple
auth manager and two users, and the Dropbox Sign emulator. The deployment's ``[dropbox_sign]``
policy names ``approver`` as the only approver and asks for four eyes. ``mallory`` has Airflow's
``op`` role: she may trigger runs, create, patch and delete XComs, mark tasks successful and clear
them, all through the public REST API, which is all this script uses. The connection is the
deployment's (an environment variable, as a secrets backend would hold it): nobody reads it.

Each case is a run of ``dropbox_sign_cancel_request`` triggered by ``mallory`` unless said:

1. **A different list**: while the form shows X, she patches XCom ``ask/to_cancel`` to X and Y;
   ``approver`` approves. Y is not cancelled (nor X: the cancel refuses a list its approval does
   not cover).
2. **A forged answer**: while the form waits, her own answer is refused (403: not an approver);
   she creates XComs ``approve/answer`` and ``approve/grant`` saying Approve, and marks ``approve``
   successful. Nothing is cancelled.
3. **A rejection overturned**: ``approver`` rejects; she patches the answer to Approve, forges a
   grant, deletes ``approve/skipmixin_key`` and clears ``cancel``. Nothing is cancelled.
4. **Approval switched off by the form**: she triggers with ``require_approval: false``; the run
   asks all the same, and after ``approver`` approves, exactly the named request is cancelled (the
   control: the path works when nobody tampers).
5. **Four eyes**: ``approver`` triggers a run and approves it himself: the Approve does not count.

Judged by the emulator: which requests received a cancel. Evidence in ``build/e2e/tampering/``.

Usage: ``.venv/bin/python tests/e2e/tampering.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
from stack import REPO, Stack, StackError, dump_json

from dropbox_sign_provider.cancellation.grants import APPROVAL, mint

DAG_ID = "dropbox_sign_cancel_request"
APPROVER, MALLORY = "approver", "mallory"
OVERALL_TIMEOUT_S = 900


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def check(condition: bool, message: str) -> None:
    """Fail the run with ``message`` unless ``condition`` holds (works under ``python -O`` too)."""
    if not condition:
        raise AssertionError(message)


class User:
    """One signed-in Airflow user, calling the public REST API with their own token."""

    def __init__(self, stack: Stack, name: str, password: str) -> None:
        self.stack, self.name = stack, name
        response = requests.post(
            f"{stack.airflow_url}/auth/token", json={"username": name, "password": password}, timeout=30
        )
        check(response.status_code in (200, 201), f"{name} could not sign in: {response.status_code}")
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.stack.api_response(method, path, headers=self.headers, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        if response.status_code >= 400:
            raise StackError(
                f"{self.name}: {method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None


def run_path(run_id: str, task_id: str | None = None) -> str:
    path = f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    return f"{path}/taskInstances/{task_id}" if task_id else path


def trigger(user: User, ids: list[str], **conf: Any) -> str:
    run = user.api(
        "POST",
        f"dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": {"signature_request_ids": ids, **conf}},
    )
    print(f"  {user.name} triggered {run['dag_run_id']} for {ids}", flush=True)
    return str(run["dag_run_id"])


def wait_task(user: User, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 240) -> str:
    def probe() -> str | None:
        state = user.api("GET", run_path(run_id, task_id)).get("state")
        return state if state in states else None

    return user.stack.wait_for(f"{task_id} of {run_id} to be {'/'.join(states)}", probe, timeout, 1.0)


def wait_asked(user: User, run_id: str) -> None:
    """
    Until the run's approval waits for a person, and a moment more, as a person takes: Airflow
    3.3.2's scheduler fails a task answered before it has processed the executor's report of the
    workload that parked it ("task state changed externally").
    """
    wait_task(user, run_id, "approve", ("awaiting_input", "deferred"))
    time.sleep(3)


def wait_run(user: User, run_id: str, timeout: float = 300) -> str:
    def probe() -> str | None:
        state = user.api("GET", run_path(run_id))["state"]
        return state if state in ("success", "failed") else None

    return user.stack.wait_for(f"run {run_id} to finish", probe, timeout, 1.0)


def states(user: User, run_id: str) -> dict[str, str | None]:
    found = user.api("GET", f"{run_path(run_id)}/taskInstances", params={"limit": 100})["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in found}


def answer(user: User, run_id: str, option: str) -> requests.Response:
    """The call the approval form's buttons make."""
    return user.call(
        "PATCH",
        f"{run_path(run_id, 'approve')}/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {}},
    )


def put_xcom(user: User, run_id: str, task_id: str, key: str, value: Any) -> None:
    """Create the XCom, or rewrite it when it exists: what an ``op`` may do to any run."""
    base = f"{run_path(run_id, task_id)}/xcomEntries"
    if user.call("PATCH", f"{base}/{key}", json={"value": value}).status_code == 404:
        user.api("POST", base, json={"key": key, "value": value})


def forged_grant(run_id: str, ids: list[str]) -> dict[str, Any]:
    """An approval grant for the run, made as the provider makes one, with another key."""
    return mint(
        secrets.token_bytes(32),
        kind=APPROVAL,
        dag_id=DAG_ID,
        run_id=run_id,
        ids=ids,
        approved_by={"id": "ceo", "name": "ceo"},
    )


FORGED_ANSWER = {
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "ceo", "name": "ceo"},
    "refused": None,
}


def seed(stack: Stack, n: int) -> list[str]:
    created = stack.admin(
        "POST",
        "signature_requests",
        [{"title": f"Tampering {n}.{i}", "expires_at": None} for i in range(n)],
    )
    return [item["signature_request_id"] for item in created]


def cancelled(stack: Stack) -> set[str]:
    """Every id that received a cancel, by the emulator's own request log."""
    log = stack.admin("GET", "requests_log")
    return {
        entry["path"].rsplit("/", 1)[1]
        for entry in log
        if entry["method"] == "POST" and "/signature_request/cancel/" in entry["path"]
    }


# -- the cases ------------------------------------------------------------------------------------


def a_different_list(stack: Stack, approver: User, mallory: User) -> dict[str, Any]:
    x, y = seed(stack, 2)
    run_id = trigger(mallory, [x])
    wait_asked(mallory, run_id)
    put_xcom(mallory, run_id, "ask", "to_cancel", [x, y])
    check(answer(approver, run_id, "Approve").status_code == 200, "the approver could not approve")
    return {
        "run_id": run_id,
        "state": wait_run(mallory, run_id),
        "tasks": states(mallory, run_id),
        "ids": [x, y],
    }


def a_forged_answer(stack: Stack, approver: User, mallory: User) -> dict[str, Any]:
    (z,) = seed(stack, 1)
    run_id = trigger(mallory, [z])
    wait_asked(mallory, run_id)
    refused = answer(mallory, run_id, "Approve")
    check(refused.status_code == 403, f"mallory's own Approve answered {refused.status_code}, expected 403")
    put_xcom(mallory, run_id, "approve", "answer", FORGED_ANSWER)
    put_xcom(mallory, run_id, "approve", "grant", forged_grant(run_id, [z]))
    mallory.api("PATCH", run_path(run_id, "approve"), json={"new_state": "success"})
    return {
        "run_id": run_id,
        "state": wait_run(mallory, run_id),
        "tasks": states(mallory, run_id),
        "ids": [z],
    }


def a_rejection_overturned(stack: Stack, approver: User, mallory: User) -> dict[str, Any]:
    (w,) = seed(stack, 1)
    run_id = trigger(mallory, [w])
    wait_asked(mallory, run_id)
    check(answer(approver, run_id, "Reject").status_code == 200, "the approver could not reject")
    wait_run(mallory, run_id)
    put_xcom(mallory, run_id, "approve", "answer", FORGED_ANSWER)
    put_xcom(mallory, run_id, "approve", "grant", forged_grant(run_id, [w]))
    mallory.call("DELETE", f"{run_path(run_id, 'approve')}/xcomEntries/skipmixin_key")
    mallory.api(
        "POST",
        f"dags/{DAG_ID}/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": ["cancel"], "dry_run": False, "only_failed": False},
    )
    # Cleared: the task has no state until the scheduler runs it again.
    wait_task(mallory, run_id, "cancel", ("success", "failed", "skipped", "upstream_failed"))
    return {
        "run_id": run_id,
        "state": wait_run(mallory, run_id),
        "tasks": states(mallory, run_id),
        "ids": [w],
    }


def approval_switched_off_by_the_form(stack: Stack, approver: User, mallory: User) -> dict[str, Any]:
    (v,) = seed(stack, 1)
    run_id = trigger(mallory, [v], require_approval=False)
    wait_asked(mallory, run_id)
    check(answer(approver, run_id, "Approve").status_code == 200, "the approver could not approve")
    return {
        "run_id": run_id,
        "state": wait_run(mallory, run_id),
        "tasks": states(mallory, run_id),
        "ids": [v],
    }


def four_eyes(stack: Stack, approver: User, mallory: User) -> dict[str, Any]:
    (u,) = seed(stack, 1)
    run_id = trigger(approver, [u])
    wait_asked(approver, run_id)
    check(answer(approver, run_id, "Approve").status_code == 200, "the approver's answer was not taken")
    return {
        "run_id": run_id,
        "state": wait_run(approver, run_id),
        "tasks": states(approver, run_id),
        "ids": [u],
    }


CASES: dict[str, tuple[Callable[..., dict[str, Any]], bool]] = {
    # name: (case, whether its ids end cancelled)
    "a different list": (a_different_list, False),
    "a forged answer": (a_forged_answer, False),
    "a rejection overturned": (a_rejection_overturned, False),
    "approval switched off by the form": (approval_switched_off_by_the_form, True),
    "four eyes": (four_eyes, False),
}


def run_cases(stack: Stack, out: Path) -> dict[str, Any]:
    passwords = {APPROVER: secrets.token_hex(8), MALLORY: secrets.token_hex(8)}
    (stack.home / "passwords.json").write_text(json.dumps(passwords), encoding="utf-8")
    print("== starting the emulator and Airflow", flush=True)
    stack.start_emulator(cancel_delay=1.0)
    stack.airflow_extra_env["AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT"] = json.dumps(
        {"conn_type": "dropbox_sign", "host": stack.emulator_base_url, "password": stack.api_key}
    )
    stack.start_airflow()
    approver = User(stack, APPROVER, passwords[APPROVER])
    mallory = User(stack, MALLORY, passwords[MALLORY])
    stack.wait_for(
        f"the DAG {DAG_ID} to be parsed", lambda: mallory.call("GET", f"dags/{DAG_ID}").ok or None, 180, 1.0
    )
    mallory.api("PATCH", f"dags/{DAG_ID}", json={"is_paused": False})

    results: dict[str, Any] = {}
    for name, (case, expect_cancelled) in CASES.items():
        print(f"== {name}", flush=True)
        result = case(stack, approver, mallory)
        result["cancelled"] = sorted(set(result["ids"]) & cancelled(stack))
        results[name] = result
        dump_json(out / "cases.json", results)
        wanted = result["ids"] if expect_cancelled else []
        check(
            result["cancelled"] == sorted(wanted),
            f"{name}: cancels went to {result['cancelled']}, expected {sorted(wanted)}; "
            f"tasks {result['tasks']}",
        )
        print(
            f"   cancelled {result['cancelled'] or 'nothing'}; run {result['state']}; "
            f"tasks {result['tasks']}",
            flush=True,
        )
    # Whatever was tampered with, only the untampered run's request was cancelled.
    controls = {sr_id for name, (_, yes) in CASES.items() if yes for sr_id in results[name]["ids"]}
    check(cancelled(stack) == controls, f"the emulator received cancels for {sorted(cancelled(stack))}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "e2e" / "tampering")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="dropbox-sign-tampering-"))
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, _on_signal)
    signal.alarm(OVERALL_TIMEOUT_S)
    stack = Stack(
        log_dir=out / "logs",
        home=home,
        dags_folder=REPO / "dags",
        api_key=f"tampering-{secrets.token_hex(16)}",
        airflow_extra_env={
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:user,{MALLORY}:op",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DROPBOX_SIGN__APPROVERS": APPROVER,
            "AIRFLOW__DROPBOX_SIGN__FOUR_EYES": "True",
        },
    )
    started = time.monotonic()
    ok = False
    summary: dict[str, Any] = {}
    try:
        summary["cases"] = run_cases(stack, out)
        ok = True
    except (Exception, KeyboardInterrupt) as exc:
        print(f"\nTAMPERING FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        summary["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        print("== stopping every started process", flush=True)
        stack.stop()
        if ok:
            shutil.rmtree(home, ignore_errors=True)
        summary.update(ok=ok, seconds=round(time.monotonic() - started))
        dump_json(out / "summary.json", summary)
    if ok:
        print(
            f"\nTAMPERING PASSED in {summary['seconds']} s: "
            "only the untampered, approved run cancelled anything"
        )
        return 0
    print(f"  logs in {out / 'logs'}; Airflow home kept: {home}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
