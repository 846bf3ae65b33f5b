"""
Mutation run over the code that decides what gets cancelled and protects the account (make mutation).

Each module in ``MODULES`` is mutated on its own by mutmut, and each mutant is tested with only the
fast tests listed for that module: a run is then a few minutes, not the hours the whole suite would
take per mutant. mutmut mutates a copy of the package under ``mutants/`` and runs pytest in forked
processes; every module gets a work directory of its own under ``build/mutation/work/`` so that the
runs do not share mutmut's state, and the source tree is never touched.

A mutant the tests do not kill is a survivor. Each survivor must be listed, with the reason it is
equivalent or harmless, in ``tests/mutation_survivors.toml``; it is named there by its module, the
function it is in, and the line before and after the mutation, so that edits elsewhere in the file
do not change its name. The run fails when a survivor is not listed, when a module kills less than
``MIN_KILL_RATE`` of its mutants (those listed as equivalent aside: no test could kill them), or
when a survivor in a safety check (``SAFETY_CHECKS``) is listed as anything but equivalent: a check
that can be weakened without a test noticing is not held by the tests.

Prints the kill rate per module and every survivor with its diff, and writes the same to
``build/mutation/report.json``. ``--module NAME`` (repeatable) runs only those modules;
``--from-report PATH`` judges an earlier run's survivors against the list again without mutating;
``--stubs`` prints a list entry for each unlisted survivor, its reason to be written.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dropbox_sign_provider"
WORK = ROOT / "build" / "mutation" / "work"
REPORT = ROOT / "build" / "mutation" / "report.json"
SURVIVORS = ROOT / "tests" / "mutation_survivors.toml"
MIN_KILL_RATE = 0.90

#: module name -> (source file, the fast tests that hold it). One table: what is mutated and what
#: is run against it are read side by side.
MODULES: dict[str, tuple[str, list[str]]] = {
    "selection": (
        "cancellation/selection.py",
        ["tests/unit/test_selection.py", "tests/unit/test_list_pages.py"],
    ),
    "policy": (
        "cancellation/policy.py",
        # why_unarmed is held where arming meets the selection.
        ["tests/unit/test_cancellation_policy.py", "tests/unit/test_selection.py"],
    ),
    "grants": (
        "cancellation/grants.py",
        ["tests/unit/test_grants.py"],
    ),
    "approval": (
        "cancellation/approval.py",
        ["tests/unit/test_approval.py"],
    ),
    "state": (
        "cancellation/state.py",
        # The decision from what the API answers is fed with the emulator's answers.
        [
            "tests/unit/test_request_state.py",
            "tests/integration/test_request_state.py",
            "tests/unit/test_selection.py",
        ],
    ),
    "watch": (
        "cancellation/watch.py",
        # The steps that send the re-cancels are driven against the emulator. The sensor's tests,
        # which start a task's wait, are left out: on their fast clock every mutant that breaks the
        # deadline loops until it times out, and the module would take twenty minutes.
        ["tests/unit/test_watch.py", "tests/integration/test_watch.py"],
    ),
    "ids": (
        "cancellation/ids.py",
        [
            "tests/unit/test_ids_and_errors.py",
            "tests/unit/test_arguments.py",
            # A rendered dry_run, and the operator's result as the sensor reads it (keys and outcomes).
            "tests/integration/test_operator.py::test_dry_run_as_rendered",
            "tests/integration/test_operator.py::test_a_dry_run_rendered_to_anything_else_fails_before_any_request",
            "tests/integration/test_sensor.py::test_a_bad_id_as_a_key_of_the_operators_result_fails_before_any_request",
            "tests/integration/test_sensor.py::test_nothing_to_wait_for_sends_nothing",
            "tests/integration/test_sensor.py::test_a_rendered_dry_run_result_is_carried_not_cancelled",
        ],
    ),
    "rate-limit-policy": (
        "hooks/policy.py",
        ["tests/unit/test_rate_limit.py", "tests/unit/test_retry_policy.py"],
    ),
    "callback": (
        "events/callback.py",
        # The receiver's verification and refusals; its other tests (the board, concurrency) are slow
        # and hold other modules.
        [
            "tests/unit/test_events.py",
            *(
                f"tests/integration/test_receiver.py::{name}"
                for name in (
                    "test_the_official_test_vector_verifies_and_is_recorded",
                    "test_an_event_is_recorded_for_the_account_whose_key_verifies_it",
                    "test_an_event_whose_hash_does_not_verify_is_refused_and_recorded_nowhere",
                    "test_a_real_event_of_an_account_not_configured_is_refused",
                    "test_a_malformed_event_is_refused_and_recorded_nowhere",
                    "test_a_related_signature_id_that_is_not_an_id_is_dropped_not_refused",
                    "test_two_events_of_one_type_in_one_second_are_two_events",
                )
            ),
        ],
    ),
}

#: Functions (mutmut's names: ``function`` or ``Class.method``) that are safety checks: a survivor
#: in one of them may be listed only as equivalent, never as harmless.
SAFETY_CHECKS: dict[str, set[str]] = {
    "selection": {"left_alone", "sent_by", "account_address", "max_age_seconds", "search_query"},
    "policy": {
        "CancellationPolicy.cap",
        "CancellationPolicy.why_unarmed",
        "CancellationPolicy.refusal",
        "CancellationPolicy.from_config",
    },
    "grants": {"verify", "authorize", "_refuse_uncovered", "_mac", "derive_key", "mint"},
    "approval": set(),
    "state": {"request_state", "expired"},
    "watch": {"CancellationWatch.observe", "CancellationWatch.recanceled", "CancellationWatch.expire"},
    "ids": {
        "validate_signature_request_id",
        "validate_bulk_send_job_id",
        "normalize_signature_request_ids",
        "reported_outcomes",
        "dry_run_flag",
    },
    "rate-limit-policy": set(),
    "callback": {
        "freshness_problem",
        "CallbackEvent.payload_problem",
        "CallbackEvent.verified_by",
        "event_hash",
    },
}

#: mutmut's exit codes for a mutant's test run (mutmut.stats.status_by_exit_code, read without
#: importing mutmut here: it reads its settings from the working directory on import).
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "caught by type check",
    -11: "segfault",
    -9: "segfault",
    None: "not checked",
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass
class Survivor:
    module: str
    function: str
    status: str
    line: str
    mutant: str
    location: str
    diff: str
    listed: bool = False
    kind: str = ""
    reason: str = ""
    safety_check: bool = False

    def key(self) -> tuple[str, str, str, str]:
        return (self.module, self.function, self.line, self.mutant)


@dataclass
class ModuleResult:
    module: str
    path: str
    tests: list[str]
    mutants: int = 0
    killed: int = 0
    seconds: float = 0.0
    survivors: list[Survivor] = field(default_factory=list)
    error: str = ""
    equivalent: int = 0

    @property
    def kill_rate(self) -> float:
        return self.killed / self.mutants if self.mutants else 1.0

    @property
    def score(self) -> float:
        """The kill rate without the mutants listed as equivalent: no test could kill those."""
        judged = self.mutants - self.equivalent
        return self.killed / judged if judged else 1.0


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own venv's mutmut
        [str(Path(sys.executable).parent / "mutmut"), *args],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )


#: Asks mutmut for the diffs of many mutants in one process (``mutmut show`` takes one a process).
_DIFFS = """
import json, sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
json.dump({name: get_diff_for_mutant(name, path=find_mutant(name).path) for name in names}, sys.stdout)
"""


def _diffs(work: Path, names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    answer = subprocess.run(  # noqa: S603 - our own venv's python
        [sys.executable, "-c", _DIFFS],
        cwd=work,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    )
    diffs: dict[str, str] = json.loads(answer.stdout)
    return diffs


def _prepare(name: str, source: str, tests: list[str]) -> Path:
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Symlinks, not copies: mutmut copies what it needs into mutants/ itself.
    for entry in (PACKAGE, "tests", "dags", "docs"):
        (work / entry).symlink_to(ROOT / entry)
    settings = {
        "source_paths": [PACKAGE],
        "only_mutate": [f"{PACKAGE}/{source}"],
        "also_copy": ["dags", "docs"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        # A mutant that loops for ever is killed after three times its tests' usual time, not the
        # default fifteen: the re-cancel loops would otherwise hold the run for minutes each.
        "timeout_multiplier": 3.0,
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n".join(lines) + "\n")
    return work


def _function_of(mutant_name: str) -> str:
    # mutmut names a mutant <module>.x_<function>__mutmut_<n>, or <module>.xǁ<Class>ǁ<method>__mutmut_<n>.
    last = mutant_name.rsplit(".", 1)[-1]
    last = re.sub(r"__mutmut_\d+$", "", last)
    if last.startswith("xǁ"):
        return ".".join(part for part in last[2:].split("ǁ") if part)
    return last.removeprefix("x_")


def _changed_lines(diff: str) -> tuple[str, str, str]:
    """The original line(s), the mutated line(s), and the line number of the first, from a diff."""
    lines = diff.splitlines()
    before = [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]
    after = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    hunk = re.search(r"^@@ -(\d+)", diff, re.MULTILINE)
    return " / ".join(before), " / ".join(after), hunk.group(1) if hunk else "?"


def _line_number(source: Path, function: str, line: str) -> str:
    """Where the original line is in the source file (the diff numbers mutmut's rewritten copy)."""
    first = line.split(" / ")[0]
    numbers = [str(n) for n, text in enumerate(source.read_text().splitlines(), 1) if text.strip() == first]
    return ",".join(numbers) if numbers else "?"


def run_module(name: str) -> ModuleResult:
    source, tests = MODULES[name]
    result = ModuleResult(name, f"{PACKAGE}/{source}", tests)
    started = time.monotonic()
    work = _prepare(name, source, tests)
    run = _mutmut(work, "run", "--max-children", "1")
    result.seconds = round(time.monotonic() - started, 1)
    (work / "mutmut-run.log").write_text(run.stdout + run.stderr)
    meta_path = work / "mutants" / PACKAGE / f"{source}.meta"
    if not meta_path.exists():
        result.error = f"mutmut did not run (exit {run.returncode}); see {work / 'mutmut-run.log'}"
        return result
    exit_codes: dict[str, int | None] = json.loads(meta_path.read_text())["exit_code_by_key"]
    statuses = {name: STATUS_BY_EXIT_CODE.get(code, "suspicious") for name, code in exit_codes.items()}
    statuses = {name: status for name, status in sorted(statuses.items()) if status != "skipped"}
    result.mutants = len(statuses)
    result.killed = sum(status in KILLED for status in statuses.values())
    alive = {name: status for name, status in statuses.items() if status not in KILLED}
    diffs = _diffs(work, list(alive))
    for mutant_name, status in alive.items():
        diff = diffs[mutant_name]
        function = _function_of(mutant_name)
        before, after, _ = _changed_lines(diff)
        number = _line_number(ROOT / PACKAGE / source, function, before)
        result.survivors.append(
            Survivor(
                module=name,
                function=function,
                status=status,
                line=before,
                mutant=after,
                location=f"{PACKAGE}/{source}:{number}",
                diff=diff.strip(),
                safety_check=function in SAFETY_CHECKS.get(name, set()),
            )
        )
    return result


def _listed() -> dict[tuple[str, str, str, str], dict[str, str]]:
    if not SURVIVORS.exists():
        return {}
    entries = tomllib.loads(SURVIVORS.read_text()).get("survivor", [])
    return {(e["module"], e["function"], e["line"], e["mutant"]): e for e in entries}


def _load(report: Path) -> dict[str, ModuleResult]:
    """The results of an earlier run, their survivors not yet judged."""
    loaded = {}
    for module in json.loads(report.read_text())["modules"]:
        survivors = [
            Survivor(**{k: v for k, v in s.items() if k not in ("listed", "kind", "reason")})
            for s in module["survivors"]
        ]
        fields = {k: module[k] for k in ("module", "path", "tests", "mutants", "killed", "seconds", "error")}
        loaded[module["module"]] = ModuleResult(**fields, survivors=survivors)
    return loaded


def _stub(survivor: Survivor) -> str:
    # JSON strings are TOML basic strings: quotes and backslashes in the code stay exact.
    fields = {
        "module": survivor.module,
        "function": survivor.function,
        "line": survivor.line,
        "mutant": survivor.mutant,
        "kind": "equivalent" if survivor.safety_check else "harmless",
        "reason": "",
    }
    return "\n[[survivor]]\n" + "\n".join(f"{key} = {json.dumps(value)}" for key, value in fields.items())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only this module")
    parser.add_argument(
        "--from-report",
        type=Path,
        help="judge the survivors of an earlier run's report against the list again, without mutating",
    )
    parser.add_argument(
        "--stubs", action="store_true", help="print a survivors-file entry for each unlisted survivor"
    )
    args = parser.parse_args()
    earlier = _load(args.from_report) if args.from_report else {}
    names = args.module or (list(earlier) if earlier else list(MODULES))
    listed = _listed()
    failures: list[str] = []
    results: list[ModuleResult] = []
    started = time.monotonic()
    for name in names:
        files = dict.fromkeys(test.split("::")[0] for test in MODULES[name][1])
        print(f"== {name}: {MODULES[name][0]} against {', '.join(files)}", flush=True)
        result = earlier[name] if earlier else run_module(name)
        results.append(result)
        if result.error:
            failures.append(f"{name}: {result.error}")
            print(f"   {result.error}", flush=True)
            continue
        for survivor in result.survivors:
            entry = listed.get(survivor.key())
            if entry is not None:
                survivor.listed = True
                survivor.kind = entry.get("kind", "")
                survivor.reason = entry.get("reason", "")
            verdict = f"listed as {survivor.kind}: {survivor.reason}" if survivor.listed else "NOT LISTED"
            if survivor.safety_check:
                verdict += " [safety check]"
            print(f"\n   {survivor.location} in {survivor.function} ({survivor.status}) {verdict}")
            print("      " + survivor.diff.replace("\n", "\n      "))
            if not survivor.listed:
                failures.append(f"{survivor.location}: survivor not listed in {SURVIVORS.relative_to(ROOT)}")
            elif survivor.safety_check and survivor.kind != "equivalent":
                failures.append(f"{survivor.location}: a safety check ({survivor.function}) weakened")
            elif survivor.kind not in ("equivalent", "harmless") or not survivor.reason:
                failures.append(f"{survivor.location}: listed without kind (equivalent/harmless) or reason")
        result.equivalent = sum(s.listed and s.kind == "equivalent" for s in result.survivors)
        print(
            f"\n   {name}: {result.killed}/{result.mutants} killed ({result.kill_rate:.1%}), "
            f"{len(result.survivors)} survived ({result.equivalent} listed equivalent), "
            f"score {result.score:.1%}, {result.seconds:.0f}s\n",
            flush=True,
        )
        if result.score < MIN_KILL_RATE:
            failures.append(f"{name}: {result.score:.1%} of its non-equivalent mutants killed, below 90 %")
    seen = {s.key() for r in results for s in r.survivors}
    stale = [key for key in listed if key[0] in names and key not in seen]
    for key in stale:
        print(f"note: listed survivor no longer survives (killed, or its line changed): {key}")
    wall = round(time.monotonic() - started, 1)
    if earlier:
        wall = json.loads(args.from_report.read_text())["seconds"]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "seconds": wall,
                "min_kill_rate": MIN_KILL_RATE,
                "modules": [
                    {**{k: v for k, v in asdict(r).items() if k != "survivors"}, "kill_rate": r.kill_rate}
                    | {"score": r.score}
                    | {"survivors": [asdict(s) for s in r.survivors]}
                    for r in results
                ],
                "stale_listed": [list(key) for key in stale],
                "failures": failures,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    print("module              killed     rate  equivalent  score")
    for r in results:
        counts = f"{r.killed:>4}/{r.mutants:<4} {r.kill_rate:6.1%}  {r.equivalent:>10}"
        print(f"{r.module:<18} {counts}  {r.score:6.1%}")
    print(f"{wall:.0f}s; report: {REPORT.relative_to(ROOT)}")
    for failure in failures:
        print(f"FAIL {failure}")
    if args.stubs:
        for r in results:
            for survivor in r.survivors:
                if not survivor.listed:
                    print(_stub(survivor))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
