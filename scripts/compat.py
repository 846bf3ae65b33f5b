"""
Run the test suite against every Airflow minor and Python this provider supports.

Each environment of the matrix is built under ``build/compat/<name>`` from the package index with
uv, pinned by a constraints file committed in ``.ci/compat/<name>.txt``, and runs the suite there
(without the browser end-to-end test, which ``make e2e`` runs). The environments build and test
side by side, each in its own process with its own Airflow home, so that the time one spends waiting
on sockets and sleeps another spends on the CPU. ``lock`` regenerates the constraints files from
their ``.in`` files; ``run`` (the default) builds and tests; ``pytest`` arguments go after ``--``.

The lowest environment is resolved with ``--resolution lowest-direct``: every direct dependency
declared in ``pyproject.toml`` (runtime and the ``test`` group) at its floor, so the floors are
exactly what is tested. ``run`` checks that they still match before it builds anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib
from packaging.version import Version

# Every command run here is uv or an environment's own Python, with arguments built here.
REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / ".ci" / "compat"
BUILD = REPO / "build" / "compat"
PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"


@dataclass(frozen=True)
class Env:
    name: str
    python: str
    # The lowest environment takes every direct dependency at its declared floor.
    lowest: bool = False


# The oldest Airflow minor on the oldest Python; each newer minor on a newer Python. Airflow 3.3
# supports Python 3.14 too, but 3.13 is the newest Python this machine (and CI) has.
MATRIX = (
    Env("airflow-3.1", "3.10", lowest=True),
    Env("airflow-3.2", "3.12"),
    Env("airflow-3.3", "3.13"),
)


def python_path(version: str) -> str:
    """The interpreter for ``version``: ``$PYTHON_3_10``-style override, pyenv's, or one on PATH."""
    override = os.environ.get(f"PYTHON_{version.replace('.', '_')}")
    if override:
        return override
    candidates = sorted(
        PYENV.glob(f"{version}.*/bin/python{version}"),
        key=lambda p: Version(p.parent.parent.name),
        reverse=True,
    )
    if candidates:
        return str(candidates[0])
    found = shutil.which(f"python{version}")
    if found:
        return found
    sys.exit(f"No Python {version}: install it, or point PYTHON_{version.replace('.', '_')} at one")


def uv() -> str:
    return os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")


def lock(envs: tuple[Env, ...]) -> None:
    """Resolve each environment's ``.in`` against the package index into its constraints file."""
    for env in envs:
        cmd = [
            uv(),
            "pip",
            "compile",
            "pyproject.toml",
            str(CONSTRAINTS / f"{env.name}.in"),
            "--group",
            "test",
            "--python",
            python_path(env.python),
            "--no-header",
            "--quiet",
            "-o",
            str(CONSTRAINTS / f"{env.name}.txt"),
        ]
        if env.lowest:
            cmd += ["--resolution", "lowest-direct"]
        subprocess.run(cmd, cwd=REPO, check=True)  # noqa: S603
        print(f"{env.name}: wrote .ci/compat/{env.name}.txt")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = [*project["project"]["dependencies"], *project["dependency-groups"]["test"]]
    floors = {}
    for req in declared:
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?>=([0-9][^,;\s]*)", req)
        if m:
            floors[m.group(1).lower().replace("_", "-")] = m.group(2)
    return floors


def check_floors() -> list[str]:
    """Each floor in ``pyproject.toml`` that the lowest environment does not install exactly."""
    lowest = next(env for env in MATRIX if env.lowest)
    pins = _pins(CONSTRAINTS / f"{lowest.name}.txt")
    problems = []
    for name, floor in _floors().items():
        pinned = pins.get(name)
        if pinned is None:
            problems.append(f"{name}: not in .ci/compat/{lowest.name}.txt")
        elif Version(pinned) != Version(floor):
            problems.append(f"{name}: pyproject.toml says >={floor}, {lowest.name} tests {pinned}")
    return problems


@dataclass(frozen=True)
class Result:
    env: Env
    ok: bool
    summary: str
    seconds: float
    cpu_seconds: float

    def line(self) -> str:
        timing = f"{self.seconds:.0f} s (pytest's CPU {self.cpu_seconds:.0f} s)"
        text = f"{self.env.name} (Python {self.env.python}): {'ok' if self.ok else 'FAILED'} in {timing}"
        text += f": {self.summary}"
        if not self.ok:
            text += f" (log: build/compat/{self.env.name}/pytest.log)"
        return text


def say(line: str) -> None:
    """Print ``line`` whole: the environments report from threads of their own."""
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def build(env: Env) -> Path:
    """Build ``env`` afresh under ``build/compat/``; returns its Python."""
    root = BUILD / env.name
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    constraints = CONSTRAINTS / f"{env.name}.txt"
    uv_env = {**os.environ, "VIRTUAL_ENV": str(root)}
    interpreter = python_path(env.python)
    subprocess.run([uv(), "venv", "--quiet", "--python", interpreter, str(root)], check=True)  # noqa: S603
    python = root / "bin" / "python"
    install = ["-c", str(constraints), "-e", ".", "--group", "test"]
    subprocess.run(  # noqa: S603
        [uv(), "pip", "install", "--quiet", "--python", str(python), *install],
        cwd=REPO,
        env=uv_env,
        check=True,
    )
    return python


def test(env: Env, python: Path, pytest_args: list[str]) -> tuple[bool, str, float]:
    """Run the suite in ``env``; returns whether it passed, pytest's summary and pytest's CPU time."""
    root = BUILD / env.name
    log = root / "pytest.log"
    # The venv's bin/ first: Airflow starts its own commands as subprocesses.
    test_env = {**os.environ, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    # Each environment's pytest makes an Airflow home of its own; a shared one would mix databases.
    test_env.pop("DROPBOX_SIGN_TEST_AIRFLOW_HOME", None)
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/e2e", *pytest_args],
            cwd=REPO,
            env=test_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        # wait4 rather than wait: it also tells the CPU time of pytest and the processes it waited for.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    return proc.returncode == 0, summary, usage.ru_utime + usage.ru_stime


def run(env: Env, pytest_args: list[str]) -> Result:
    """Build ``env`` afresh and run the suite in it."""
    started = time.monotonic()
    say(f"{env.name}: building on Python {env.python} and running the tests...")
    try:
        python = build(env)
    except subprocess.CalledProcessError as exc:
        ok, summary, cpu_seconds = False, f"environment build failed: {exc}", 0.0
    else:
        ok, summary, cpu_seconds = test(env, python, pytest_args)
    result = Result(env, ok, summary, time.monotonic() - started, cpu_seconds)
    say(result.line())
    return result


def main() -> int:
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1],
        usage="%(prog)s [action] [--env NAME]... [--jobs N] [-- PYTEST_ARGS]",
    )
    parser.add_argument("action", nargs="?", choices=("run", "lock", "check-floors"), default="run")
    parser.add_argument("--env", action="append", help="only this environment (repeatable)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=len(MATRIX),
        help="environments built and tested at once (default: all; 1 runs them one after the other)",
    )
    args = parser.parse_args(ours)
    envs = tuple(env for env in MATRIX if not args.env or env.name in args.env)
    if args.env and len(envs) != len(args.env):
        parser.error(f"unknown environment; known: {', '.join(env.name for env in MATRIX)}")
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")

    if args.action == "lock":
        lock(envs)
        return 0
    problems = check_floors()
    for problem in problems:
        print(f"floor mismatch: {problem}", file=sys.stderr)
    if problems or args.action == "check-floors":
        return 1 if problems else 0

    started = time.monotonic()
    # Threads only wait here: the work is each environment's uv and pytest processes.
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda env: run(env, pytest_args), envs))
    print(f"test-compat summary ({time.monotonic() - started:.0f} s, {args.jobs} at once):")
    for result in results:
        print(f"  {result.line()}")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
