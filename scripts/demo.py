"""
The one-command demo (``make demo``): the clean-up and the manual cancellation DAGs against the
bundled Dropbox Sign emulator.

On a fresh clone, with nothing but the project's virtualenv:

1. a throw-away Airflow home with its embedded SQLite database (``airflow db migrate``) and the DAGs
   folder pointing at ``dags/``;
2. the emulator on a free loopback port, seeded with a realistic account: stale requests, fresh
   ones, signed ones, declined ones, a few past their expiry date and a few the account received;
3. ``airflow dags test dropbox_sign_expiry_cleanup`` before the deployment arms it: a dry run that
   must cancel nothing and say ``NOT ARMED``; then the clean-up again in a process started with
   ``[dropbox_sign] armed = True`` (``AIRFLOW__DROPBOX_SIGN__ARMED=True``), which cancels; then
   ``airflow dags test dropbox_sign_cancel_request`` naming one fresh request, then once more naming
   another fresh request and an id the account does not have: that run must fail naming the unknown
   id, and still confirm the other one's cancellation;
4. a check of the emulator's final state: every stale request cancelled, the expired and received
   ones left alone like the fresh, signed and declined ones, nothing touched but the ones named, each of
   those confirmed. The exit status is non-zero otherwise.

Airflow's own output goes to ``build/demo/demo.log``; the terminal shows the report.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
LOG_DIR = REPO / "build" / "demo"
LOG_FILE = LOG_DIR / "demo.log"
#: The emulator only accepts this key; it is not a real Dropbox Sign key.
DEMO_API_KEY = "demo-api-key"
#: Seconds the emulator takes to really cancel a request after accepting the cancel call.
CANCEL_DELAY = 1.0
DAY = 86400.0
STEP_TIMEOUT = 240
#: Well-formed, but no request of the demo account: the manual run must fail on it, naming it.
UNKNOWN_ID = "0d" * 20

TITLES = (
    "Mutual NDA",
    "Master Services Agreement",
    "Offer Letter",
    "Statement of Work",
    "Purchase Agreement",
    "Lease Renewal",
    "Contractor Agreement",
    "Data Processing Addendum",
)
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises")
SIGNERS = (
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Katherine Johnson", "katherine@example.com"),
    ("Linus Pauling", "linus@example.com"),
)


class DemoError(Exception):
    """A step of the demo failed; the message says which and where to look."""


def venv_bin() -> Path:
    """The ``bin`` folder of the virtualenv running this script (``make demo`` uses ``.venv``)."""
    for candidate in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (candidate / "airflow").exists() and (candidate / "dropbox-sign-emulator").exists():
            return candidate
    raise DemoError("no virtualenv with airflow and dropbox-sign-emulator found: run `make demo`")


# --- the seeded account -----------------------------------------------------------------------------


def account_seed(now: float, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """The signature requests of the demo account, by what should become of them."""

    def request(created_days_ago: float, **fields: Any) -> dict[str, Any]:
        title = f"{rng.choice(TITLES)} - {rng.choice(COMPANIES)}"
        return {
            "title": title,
            "created_at": int(now - created_days_ago * DAY),
            "signers": [list(signer) for signer in rng.sample(SIGNERS, rng.randint(1, 2))],
            "metadata": {"source": "crm", "deal": f"D-{rng.randint(1000, 9999)}"},
            **fields,
        }

    return {
        # Out for signature for months: the clean-up's main work.
        "stale": [request(rng.uniform(35, 120)) for _ in range(25)],
        # Sent recently and not expired: must be left alone.
        "fresh": [request(rng.uniform(0.1, 4)) for _ in range(6)]
        + [request(rng.uniform(0.1, 4), expires_at=int(now + rng.uniform(3, 30) * DAY)) for _ in range(4)],
        # Signed by everyone or declined, some of them long ago: never touched.
        "completed": [request(rng.uniform(1, 120), is_complete=True) for _ in range(5)],
        "declined": [request(rng.uniform(1, 120), is_declined=True) for _ in range(5)],
        # Old enough to be stale, but past their expiry date: nobody can sign them any more, so the
        # clean-up leaves them alone (Dropbox Sign may refuse to cancel them) and counts them.
        "expired": [
            request(rng.uniform(35, 60), expires_at=int(now - rng.uniform(1, 72) * 3600)) for _ in range(3)
        ],
        # Sent to the account by a partner, long out for signature: lists show them, but only their
        # sender may cancel them, so the clean-up's search (from:me) leaves them out.
        "received": [
            request(rng.uniform(35, 120), requester_email_address="legal@partner.example") for _ in range(4)
        ],
    }


def seed(admin_url: str, now: float) -> dict[str, list[str]]:
    """Create the account in the emulator; return the ids by kind."""
    kinds = account_seed(now, random.Random(20240611))
    ids: dict[str, list[str]] = {}
    for kind, requests in kinds.items():
        created = http_json("POST", f"{admin_url}/signature_requests", requests)
        ids[kind] = [item["signature_request_id"] for item in created]
    return ids


def http_json(method: str, url: str, payload: Any = None) -> Any:
    """One call to the emulator's admin API on loopback."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)


# --- processes --------------------------------------------------------------------------------------


def airflow_env(home: Path, emulator_url: str | None = None) -> dict[str, str]:
    """A clean environment for Airflow: nothing inherited from an Airflow the user may have set up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    dags = str(REPO / "dags")
    env.update(
        {
            "PATH": f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": dags,
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {
                        "name": "dags-folder",
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": dags, "refresh_interval": 0},
                    }
                ]
            ),
            # The emulator confirms a cancellation in about a second; by default the DAGs check every
            # minute.
            "AIRFLOW__DROPBOX_SIGN__POKE_INTERVAL": "2",
        }
    )
    if emulator_url is not None:
        env["AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT"] = json.dumps(
            {"conn_type": "dropbox_sign", "host": emulator_url, "password": DEMO_API_KEY}
        )
    return env


def run_step(
    title: str, command: list[str], env: dict[str, str], log: IO[str], *, should_fail: bool = False
) -> float:
    """
    Run one command with its output in the log; return how long it took.

    :param should_fail: the command is expected to fail (a DAG run that must fail): its success
        is the error.
    """
    print(f"  {title} ...", end="", flush=True)
    log.write(f"\n===== {title}: {' '.join(command)}\n")
    log.flush()
    started = time.monotonic()
    try:
        completed = subprocess.run(  # noqa: S603 - our own venv's executables, fixed arguments
            command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        print(" timed out")
        raise DemoError(f"{title} did not finish within {STEP_TIMEOUT} s") from None
    took = time.monotonic() - started
    if should_fail:
        if completed.returncode == 0:
            print(f" succeeded ({took:.1f} s), but should have failed")
            raise DemoError(f"{title} succeeded although it should have failed")
        print(f" failed as expected ({took:.1f} s)")
        return took
    if completed.returncode != 0:
        print(f" failed ({took:.1f} s)")
        raise DemoError(f"{title} failed with exit status {completed.returncode}")
    print(f" done ({took:.1f} s)")
    return took


@contextmanager
def emulator_process(home: Path, log: IO[str]) -> Iterator[Callable[[], str]]:
    """
    Start the emulator; yield a function that waits until it serves and returns its root URL.
    Stopped by its pid on the way out, whatever happened.
    """
    port_file = home / "emulator.port"
    command = [
        str(venv_bin() / "dropbox-sign-emulator"),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--cancel-delay",
        str(CANCEL_DELAY),
        "--api-key",
        DEMO_API_KEY,
    ]
    shown = " ".join("***" if part == DEMO_API_KEY else part for part in command)
    log.write(f"\n===== emulator: {shown}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603

    def wait_until_serving() -> str:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if process.poll() is not None:
                raise DemoError(f"the emulator exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise DemoError("the emulator did not start within 30 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{int(port_file.read_text().strip())}"

    try:
        yield wait_until_serving
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the report -------------------------------------------------------------------------------------


def confirmed(sr_id: str, api_calls: list[dict[str, Any]]) -> bool:
    """Whether a ``GET`` of ``sr_id`` answered 410: a run waited for its cancellation and saw it."""
    return any(
        call["path"] == f"/v3/signature_request/{sr_id}" and call["status"] == 410 for call in api_calls
    )


def line_is_report(line: str) -> bool:
    """Whether a log line is the clean-up's report: its counts and what it left alone."""
    return "Dropbox Sign cancellations" in line and "; left alone: " in line


def check(
    ids: dict[str, list[str]],
    named: list[str],
    final: dict[str, dict[str, Any]],
    api_calls: list[dict[str, Any]],
    demo_log: str,
) -> list[str]:
    """Every way the final state differs from what the DAG runs should have done."""
    problems = []
    cancelled = {call["path"].rsplit("/", 1)[-1] for call in api_calls if "/cancel/" in call["path"]}
    for kind in ("fresh", "completed", "declined", "expired", "received"):
        for sr_id in ids[kind]:
            if sr_id not in named and sr_id in cancelled:
                problems.append(f"{kind} request {sr_id} received a cancel call")
    for sr_id in named:
        if not confirmed(sr_id, api_calls):
            problems.append(f"named request {sr_id}: its cancellation was never confirmed by a 410 on GET")
    # Both clean-up runs (unarmed and armed) listed the expired requests and counted them left alone.
    reports = [line for line in demo_log.splitlines() if line_is_report(line)]
    expired = f"{len(ids['expired'])} expired"
    if len(reports) < 2 or not all(re.search(rf"; left alone: .*\b{expired}\b", line) for line in reports):
        problems.append(f"the clean-up reports do not count {expired} requests left alone: {reports}")
    if f"{UNKNOWN_ID}: not found (404)" not in demo_log:
        problems.append(f"the run naming {UNKNOWN_ID} did not fail naming it")
    for sr_id in ids["stale"]:
        if final[sr_id]["state"] != "canceled":
            problems.append(f"stale request {sr_id} is {final[sr_id]['state']}, not canceled")
    expected = {
        "fresh": "awaiting_signature",
        "expired": "awaiting_signature",
        "received": "awaiting_signature",
        "completed": "completed",
        "declined": "declined",
    }
    for kind, state in expected.items():
        for sr_id in ids[kind]:
            wanted = "canceled" if sr_id in named else state
            if final[sr_id]["state"] != wanted:
                problems.append(f"{kind} request {sr_id} is {final[sr_id]['state']}, expected {wanted}")
    return problems


def check_unarmed(unarmed_calls: list[dict[str, Any]], demo_log: str) -> list[str]:
    """What the run before arming did wrong: it must cancel nothing, and say why."""
    problems = [
        f"the run before arming sent {call['method']} {call['path']}"
        for call in unarmed_calls
        if call["method"] != "GET"
    ]
    if "NOT ARMED: [dropbox_sign] armed is False" not in demo_log:
        problems.append("the run before arming did not say NOT ARMED in its log")
    return problems


def report(
    ids: dict[str, list[str]],
    named: list[str],
    final: dict[str, dict[str, Any]],
    api_calls: list[dict[str, Any]],
    timings: dict[str, float],
    total: float,
    unarmed_calls: list[dict[str, Any]],
) -> None:
    """Print what happened to the account, by kind of request."""
    now = time.time()

    def count(kind: str, state: str) -> int:
        return sum(1 for sr_id in ids[kind] if final[sr_id]["state"] == state)

    rows = [
        ("The clean-up before arming (a dry run)", None),
        (
            "  cancel calls sent",
            f"{sum(1 for call in unarmed_calls if '/cancel/' in call['path'])}",
        ),
        ("Cancelled by the clean-up DAG once armed", None),
        ("  stale (sent 35 to 120 days ago)", f"{count('stale', 'canceled')} of {len(ids['stale'])}"),
        ("Left alone", None),
        (
            "  fresh (sent in the last 4 days)",
            f"{count('fresh', 'awaiting_signature')} of {len(ids['fresh'])} still out for signature",
        ),
        (
            "  expired (stale, but past expires_at)",
            f"{count('expired', 'awaiting_signature')} of {len(ids['expired'])} not cancelled",
        ),
        (
            "  received (sent to the account by others)",
            f"{count('received', 'awaiting_signature')} of {len(ids['received'])} not cancelled",
        ),
        ("  signed by everyone", f"{count('completed', 'completed')} of {len(ids['completed'])}"),
        ("  declined", f"{count('declined', 'declined')} of {len(ids['declined'])}"),
        ("Cancelled by hand (dropbox_sign_cancel_request)", None),
    ]
    for sr_id in named:
        sent = (now - final[sr_id]["created_at"]) / DAY
        rows.append((f"  {final[sr_id]['title']}, sent {sent:.1f} days ago", None))
        confirmation = "confirmed" if confirmed(sr_id, api_calls) else "not confirmed"
        rows.append((f"  {sr_id}", f"{final[sr_id]['state']} ({confirmation})"))
    rows.append((f"  {UNKNOWN_ID}", "not found: the run failed naming it"))
    print()
    print("The demo account after the four runs")
    print("------------------------------------")
    for label, value in rows:
        print(label if value is None else f"{label:<46} {value}")
    print()
    by_call: dict[str, int] = {}
    for call in api_calls:
        path = call["path"]
        kind = next(
            (kind for end, kind in (("/account", "account"), ("/list", "list")) if path.endswith(end)),
            "cancel" if "/cancel/" in path else "get",
        )
        by_call[kind] = by_call.get(kind, 0) + 1
    calls = ", ".join(f"{n} {kind}" for kind, n in sorted(by_call.items()))
    limited = sum(1 for call in api_calls if call["status"] == 429)
    print(f"Dropbox Sign API calls: {len(api_calls)} ({calls}), {limited} answered 429")
    print("Time taken: " + ", ".join(f"{step} {took:.1f} s" for step, took in timings.items()))
    print(f"Total: {total:.1f} s. Airflow's output: {LOG_FILE.relative_to(REPO)}")


def demo(log: IO[str], home: Path) -> int:
    started = time.monotonic()
    timings: dict[str, float] = {}
    bin_dir = venv_bin()
    airflow = str(bin_dir / "airflow")
    print("Dropbox Sign provider demo: Airflow with its embedded SQLite database and the bundled emulator")
    with emulator_process(home, log) as wait_until_serving:
        timings["setup"] = run_step(
            "Creating the Airflow database", [airflow, "db", "migrate"], airflow_env(home), log
        )
        url = wait_until_serving()
        seeded_at = time.time()
        ids = seed(f"{url}/_emulator", seeded_at)
        named, beside_unknown = ids["fresh"][0], ids["fresh"][1]
        print(
            f"  Seeded the emulator at {url}: {len(ids['stale'])} stale, {len(ids['fresh'])} fresh, "
            f"{len(ids['completed'])} completed, {len(ids['declined'])} declined, "
            f"{len(ids['expired'])} expired and {len(ids['received'])} received signature requests"
        )
        env = airflow_env(home, url)
        timings["unarmed clean-up run"] = run_step(
            "airflow dags test dropbox_sign_expiry_cleanup (not armed: a dry run)",
            [airflow, "dags", "test", "dropbox_sign_expiry_cleanup"],
            env,
            log,
        )
        unarmed_calls = http_json("GET", f"{url}/_emulator/requests_log")
        # Arming is the deployment's: its configuration, read when a process starts. Each
        # `airflow dags test` is a new process, started here with [dropbox_sign] armed = True.
        print("  Arming the clean-up: [dropbox_sign] armed = True (AIRFLOW__DROPBOX_SIGN__ARMED=True)")
        log.write("\n===== arming: AIRFLOW__DROPBOX_SIGN__ARMED=True from here on\n")
        armed = {**env, "AIRFLOW__DROPBOX_SIGN__ARMED": "True"}
        timings["clean-up run"] = run_step(
            "airflow dags test dropbox_sign_expiry_cleanup (armed)",
            [airflow, "dags", "test", "dropbox_sign_expiry_cleanup"],
            armed,
            log,
        )
        # Nobody is there to approve in a demo: for both manual runs the demo's deployment lets ids
        # named at run time be cancelled unasked ([dropbox_sign] require_approval = False), and the
        # form turns its own approval off.
        unasked = {**env, "AIRFLOW__DROPBOX_SIGN__REQUIRE_APPROVAL": "False"}
        timings["manual run"] = run_step(
            f"airflow dags test dropbox_sign_cancel_request ({named[:12]}...)",
            [
                airflow,
                "dags",
                "test",
                "dropbox_sign_cancel_request",
                "-c",
                json.dumps({"signature_request_ids": [named], "require_approval": False}),
            ],
            unasked,
            log,
        )
        timings["manual run with an unknown id"] = run_step(
            f"airflow dags test dropbox_sign_cancel_request ({beside_unknown[:12]}... and an unknown id)",
            [
                airflow,
                "dags",
                "test",
                "dropbox_sign_cancel_request",
                "-c",
                json.dumps(
                    {"signature_request_ids": [beside_unknown, UNKNOWN_ID], "require_approval": False}
                ),
            ],
            unasked,
            log,
            should_fail=True,
        )
        final = {
            item["signature_request_id"]: item
            for item in http_json("GET", f"{url}/_emulator/signature_requests")
        }
        api_calls = http_json("GET", f"{url}/_emulator/requests_log")
    report(ids, [named, beside_unknown], final, api_calls, timings, time.monotonic() - started, unarmed_calls)
    log.flush()
    demo_log = LOG_FILE.read_text(encoding="utf-8")
    problems = check(ids, [named, beside_unknown], final, api_calls, demo_log)
    problems += check_unarmed(unarmed_calls, demo_log)
    if problems:
        print("\nFAILED: the account is not in the expected state:")
        for problem in problems:
            print(f"  - {problem}")
        print(f"See {LOG_FILE} for Airflow's output.")
        return 1
    print(
        "\nOK: the clean-up cancelled nothing before it was armed; once armed, every stale request was "
        "cancelled, the expired and received ones were left alone, nothing else was touched; the run naming "
        "an unknown id failed naming it, and still confirmed the other id's cancellation."
    )
    return 0


def main() -> int:
    # A plain SIGTERM would end the script without its clean-up, leaving the emulator running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="dropbox-sign-demo-"))
    try:
        with LOG_FILE.open("w", encoding="utf-8") as log:
            return demo(log, home)
    except DemoError as error:
        print(f"\nFAILED: {error}. See {LOG_FILE} for the details.")
        return 1
    except KeyboardInterrupt:
        print(f"\nInterrupted. Output so far: {LOG_FILE}")
        return 130
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
