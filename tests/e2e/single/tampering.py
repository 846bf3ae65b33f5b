"""
What one who may edit runs can and cannot make the manual DAG cancel, on a real deployment.

Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor; SQLite) with the simple
auth manager and two users, and the Dropbox Sign emulator. The deployment's ``[dropbox_sign]``
policy names ``approver`` as the only approver and asks for four eyes. ``mallory`` has Airflow's
``op`` role: she may trigger runs, create, patch and delete XComs, mark tasks successful and clear
them, all through the public REST API, which is all this script uses. The connection is the
deployment's (an environment variable, as a secrets backend would hold it): nobody reads it.

Each case is a run of ``dropbox_sign_cancel_request`` triggered by ``mallory`` unless said:

1. **A different list**: while the form shows X, she rewrites XCom ``preview/selection`` (what
   ``cancel`` is handed) to name X and Y; ``approver`` approves. Y is not cancelled (nor X: the
   cancel refuses a selection whose signature does not hold, and that its approval does not cover).
2. **A forged answer**: while the form waits, her own answer is refused (403: not an approver);
   she creates XComs ``approve/answer``, ``approve/grant`` and ``approve/return_value`` (what
   ``cancel`` is handed) saying Approve, and marks ``approve`` successful. Nothing is cancelled.
3. **A rejection overturned**: ``approver`` rejects; she patches the answer to Approve, forges a
   grant (``approve/grant`` and ``approve/return_value``), deletes ``approve/skipmixin_key`` and
   clears ``cancel``. Nothing is cancelled.
4. **Approval switched off by the form**: she triggers with ``require_approval: false``; the run
   asks all the same, and after ``approver`` approves, exactly the named request is cancelled (the
   control: the path works when nobody tampers).
5. **Four eyes**: ``approver`` triggers a run and approves it himself: the Approve does not count.

Judged by the emulator: which requests received a cancel; ``cases.json`` keeps why each
``cancel`` refused. Evidence in ``build/e2e/tampering/``.

Usage, from the repository's root: ``.venv/bin/python -m tests.e2e.single.tampering [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from dropbox_sign_provider.cancellation.grants import APPROVAL, mint

from ..harness import REPO
from ..harness.airflow import Airflow, Client
from ..harness.emulator import Emulator
from ..harness.lifecycle import Run
from ..harness.processes import Processes
from ..harness.steps import check, dump_json

DAG_ID = "dropbox_sign_cancel_request"
APPROVER, MALLORY = "approver", "mallory"
OVERALL_TIMEOUT_S = 900


def sign_in(airflow: Airflow, name: str, password: str) -> Client:
    """One signed-in Airflow user, calling the public REST API with their own token."""
    response = requests.post(
        f"{airflow.url}/auth/token", json={"username": name, "password": password}, timeout=30
    )
    check(response.status_code in (200, 201), f"{name} could not sign in: {response.status_code}")
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return Client(airflow.url, airflow.processes, headers, name)


def asked(emulator: Emulator, user: Client, n: int = 1, **conf: Any) -> tuple[list[str], str]:
    """
    ``n`` new requests, and a run that ``user`` triggered for them: its ids and run id once its
    approval waits for a person and the scheduler knows it (see ``Client.wait_until_parked``).
    """
    ids = emulator.seed([{"title": f"Tampering {n}.{i}", "expires_at": None} for i in range(n)])
    run_id = user.trigger(DAG_ID, {"signature_request_ids": ids, **conf})
    print(f"  {user.name} triggered {run_id} for {ids}", flush=True)
    user.wait_for_task(DAG_ID, run_id, "approve", ("awaiting_input", "deferred"), 240)
    user.wait_until_parked(DAG_ID, run_id, "approve")
    return ids, run_id


def ended(user: Client, run_id: str, ids: list[str]) -> dict[str, Any]:
    """
    The case's run once it has ended: its state, its tasks' states, the ids it named, and what its
    ``cancel`` said when it refused (evidence: the emulator judges).
    """
    state = user.wait_for_end(DAG_ID, run_id, 300)["state"]
    tasks = user.task_states(DAG_ID, run_id)
    refusals: list[str] = []
    if tasks.get("cancel") == "failed":
        ti = user.api("GET", user.run_path(DAG_ID, run_id, "cancel"))
        refusals = [
            str(error.get("exc_value"))
            for line in user.task_log(DAG_ID, run_id, "cancel", ti["try_number"])
            for error in line.get("error_detail") or ()
            if "Nothing was cancelled" in str(error.get("exc_value", ""))
        ]
    return {"run_id": run_id, "state": state, "tasks": tasks, "ids": ids, "cancel_refused": refusals}


def answer(user: Client, run_id: str, option: str) -> requests.Response:
    """The call the approval form's buttons make."""
    return user.response(
        "PATCH",
        f"{user.run_path(DAG_ID, run_id, 'approve')}/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {}},
    )


def put_xcom(user: Client, run_id: str, task_id: str, key: str, value: Any) -> None:
    """Create the XCom, or rewrite it when it exists: what an ``op`` may do to any run."""
    base = f"{user.run_path(DAG_ID, run_id, task_id)}/xcomEntries"
    if user.response("PATCH", f"{base}/{key}", json={"value": value}).status_code == 404:
        user.api("POST", base, json={"key": key, "value": value})


def forge_approval(user: Client, run_id: str, ids: list[str]) -> None:
    """
    An Approve in the approval's XComs: the answer, and a grant for the run made as the provider
    makes one, with another key, both as the XCom ``grant`` and as the result ``cancel`` is handed.
    """
    put_xcom(user, run_id, "approve", "answer", FORGED_ANSWER)
    grant = mint(
        secrets.token_bytes(32),
        kind=APPROVAL,
        dag_id=DAG_ID,
        run_id=run_id,
        ids=ids,
        approved_by={"id": "ceo", "name": "ceo"},
    )
    put_xcom(user, run_id, "approve", "grant", grant)
    put_xcom(user, run_id, "approve", "return_value", grant)


FORGED_ANSWER = {
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "ceo", "name": "ceo"},
    "refused": None,
}


def cancelled(emulator: Emulator) -> set[str]:
    """Every id that received a cancel, by the emulator's own request log."""
    return {
        entry["path"].rsplit("/", 1)[1]
        for entry in emulator.requests_log()
        if entry["method"] == "POST" and "/signature_request/cancel/" in entry["path"]
    }


# -- the cases ------------------------------------------------------------------------------------


def a_different_list(emulator: Emulator, approver: Client, mallory: Client) -> dict[str, Any]:
    (x,), run_id = asked(emulator, mallory)
    (y,) = emulator.seed([{"title": "Tampering: not asked for", "expires_at": None}])
    # The preview's signed selection, which the form shows and cancel is handed, now naming Y too.
    selection = mallory.xcom(DAG_ID, run_id, "preview", "selection")
    check(selection.get("ids") == [x], f"the preview's selection names {selection.get('ids')}, not [{x}]")
    put_xcom(mallory, run_id, "preview", "selection", {**selection, "ids": [x, y], "count": 2})
    check(answer(approver, run_id, "Approve").status_code == 200, "the approver could not approve")
    return ended(mallory, run_id, [x, y])


def a_forged_answer(emulator: Emulator, approver: Client, mallory: Client) -> dict[str, Any]:
    ids, run_id = asked(emulator, mallory)
    refused = answer(mallory, run_id, "Approve")
    check(refused.status_code == 403, f"mallory's own Approve answered {refused.status_code}, expected 403")
    forge_approval(mallory, run_id, ids)
    mallory.api("PATCH", mallory.run_path(DAG_ID, run_id, "approve"), json={"new_state": "success"})
    return ended(mallory, run_id, ids)


def a_rejection_overturned(emulator: Emulator, approver: Client, mallory: Client) -> dict[str, Any]:
    ids, run_id = asked(emulator, mallory)
    check(answer(approver, run_id, "Reject").status_code == 200, "the approver could not reject")
    mallory.wait_for_end(DAG_ID, run_id, 300)
    forge_approval(mallory, run_id, ids)
    mallory.response("DELETE", f"{mallory.run_path(DAG_ID, run_id, 'approve')}/xcomEntries/skipmixin_key")
    mallory.api(
        "POST",
        f"dags/{DAG_ID}/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": ["cancel"], "dry_run": False, "only_failed": False},
    )
    # Cleared: the task has no state until the scheduler runs it again.
    mallory.wait_for_task(DAG_ID, run_id, "cancel", ("success", "failed", "skipped", "upstream_failed"), 240)
    return ended(mallory, run_id, ids)


def approval_switched_off_by_the_form(
    emulator: Emulator, approver: Client, mallory: Client
) -> dict[str, Any]:
    ids, run_id = asked(emulator, mallory, require_approval=False)
    check(answer(approver, run_id, "Approve").status_code == 200, "the approver could not approve")
    return ended(mallory, run_id, ids)


def four_eyes(emulator: Emulator, approver: Client, mallory: Client) -> dict[str, Any]:
    ids, run_id = asked(emulator, approver)
    check(answer(approver, run_id, "Approve").status_code == 200, "the approver's answer was not taken")
    return ended(approver, run_id, ids)


CASES: dict[str, tuple[Callable[[Emulator, Client, Client], dict[str, Any]], bool]] = {
    # name: (case, whether its ids end cancelled)
    "a different list": (a_different_list, False),
    "a forged answer": (a_forged_answer, False),
    "a rejection overturned": (a_rejection_overturned, False),
    "approval switched off by the form": (approval_switched_off_by_the_form, True),
    "four eyes": (four_eyes, False),
}


def start(emulator: Emulator, airflow: Airflow, passwords: dict[str, str]) -> tuple[Client, Client]:
    """The emulator, and Airflow with the connection in its environment; the two users, signed in."""
    emulator.start(cancel_delay=1.0)
    airflow.extra_env["AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT"] = json.dumps(
        {"conn_type": "dropbox_sign", "host": emulator.base_url, "password": emulator.api_key}
    )
    airflow.start()
    approver = sign_in(airflow, APPROVER, passwords[APPROVER])
    mallory = sign_in(airflow, MALLORY, passwords[MALLORY])
    mallory.wait_for(
        f"the DAG {DAG_ID} to be parsed",
        lambda: mallory.response("GET", f"dags/{DAG_ID}").ok or None,
        180,
        1.0,
    )
    mallory.unpause(DAG_ID)
    return approver, mallory


def run_case(name: str, emulator: Emulator, approver: Client, mallory: Client) -> dict[str, Any]:
    """One case, judged by which of its ids the emulator received a cancel for."""
    case, expect_cancelled = CASES[name]
    result = case(emulator, approver, mallory)
    result["cancelled"] = sorted(set(result["ids"]) & cancelled(emulator))
    wanted = result["ids"] if expect_cancelled else []
    check(
        result["cancelled"] == sorted(wanted),
        f"{name}: cancels went to {result['cancelled']}, expected {sorted(wanted)}; tasks {result['tasks']}",
    )
    print(
        f"   cancelled {result['cancelled'] or 'nothing'}; run {result['state']}; tasks {result['tasks']}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "e2e" / "tampering")
    args = parser.parse_args(argv)
    run = Run("TAMPERING", args.out, OVERALL_TIMEOUT_S, "dropbox-sign-tampering-")
    (run.out / "logs").mkdir()
    processes = Processes(run.out / "logs", cwd=run.home)
    emulator = Emulator(processes, f"tampering-{secrets.token_hex(16)}", run.home / "emulator.port")
    passwords = {APPROVER: secrets.token_hex(8), MALLORY: secrets.token_hex(8)}
    (run.home / "passwords.json").write_text(json.dumps(passwords), encoding="utf-8")
    airflow = Airflow(
        processes,
        run.home,
        REPO / "dags",
        run.out / "logs",
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:user,{MALLORY}:op",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(run.home / "passwords.json"),
            "AIRFLOW__DROPBOX_SIGN__APPROVERS": APPROVER,
            "AIRFLOW__DROPBOX_SIGN__FOUR_EYES": "True",
            # The emulator cancels within a second; the untampered run confirms at the first poll.
            "AIRFLOW__DROPBOX_SIGN__POKE_INTERVAL": "15",
        },
    )
    cases: dict[str, Any] = {}
    run.summary["cases"] = cases
    with run.guarded(processes.stop):
        with run.step("start the emulator and Airflow"):
            approver, mallory = start(emulator, airflow, passwords)
        for name in CASES:
            with run.step(name):
                cases[name] = run_case(name, emulator, approver, mallory)
                dump_json(run.out / "cases.json", cases)
        with run.step("only the untampered run's request cancelled"):
            # Whatever was tampered with, only the untampered run's request was cancelled.
            controls = {sr_id for name, (_, yes) in CASES.items() if yes for sr_id in cases[name]["ids"]}
            received = cancelled(emulator)
            check(received == controls, f"the emulator received cancels for {sorted(received)}")
    return run.verdict("only the untampered, approved run cancelled anything")


if __name__ == "__main__":
    sys.exit(main())
