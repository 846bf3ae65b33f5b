"""
Run the test suite against every Airflow minor and Python this provider supports.

Each environment of the matrix is built under ``build/compat/<name>`` from the package index with
uv, pinned by a constraints file committed in ``.ci/compat/<name>.txt``, and runs the suite there
(without the browser end-to-end test, which ``make e2e`` runs). ``lock`` regenerates the constraints
files from their ``.in`` files; ``run`` (the default) builds and tests.

The lowest environment is resolved with ``--resolution lowest-direct``: every direct dependency
declared in ``pyproject.toml`` (runtime and the ``test`` group) at its floor, so the floors are
exactly what is tested. ``run`` checks that they still match before it builds anything.
"""

from __future__ import annotations

import argparse
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


def run(env: Env, pytest_args: list[str]) -> tuple[bool, str]:
    """Build ``env`` afresh and run the suite in it; returns whether it passed and pytest's summary."""
    root = BUILD / env.name
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    constraints = CONSTRAINTS / f"{env.name}.txt"
    uv_env = {**os.environ, "VIRTUAL_ENV": str(root)}
    interpreter = python_path(env.python)
    subprocess.run([uv(), "venv", "--quiet", "--python", interpreter, str(root)], check=True)  # noqa: S603
    python = str(root / "bin" / "python")
    install = ["-c", str(constraints), "-e", ".", "--group", "test"]
    subprocess.run(  # noqa: S603
        [uv(), "pip", "install", "--quiet", "--python", python, *install],
        cwd=REPO,
        env=uv_env,
        check=True,
    )
    log = root / "pytest.log"
    # The venv's bin/ first: Airflow starts its own commands as subprocesses.
    test_env = {**os.environ, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    test_env.pop("DROPBOX_SIGN_TEST_AIRFLOW_HOME", None)
    with log.open("w") as out:
        proc = subprocess.run(  # noqa: S603
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/e2e", *pytest_args],
            cwd=REPO,
            env=test_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    return proc.returncode == 0, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("action", nargs="?", choices=("run", "lock", "check-floors"), default="run")
    parser.add_argument("--env", action="append", help="only this environment (repeatable)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    args = parser.parse_args()
    envs = tuple(env for env in MATRIX if not args.env or env.name in args.env)
    if args.env and len(envs) != len(args.env):
        parser.error(f"unknown environment; known: {', '.join(env.name for env in MATRIX)}")

    if args.action == "lock":
        lock(envs)
        return 0
    problems = check_floors()
    for problem in problems:
        print(f"floor mismatch: {problem}", file=sys.stderr)
    if problems or args.action == "check-floors":
        return 1 if problems else 0

    results = []
    for env in envs:
        started = time.monotonic()
        print(f"{env.name}: building on Python {env.python} and running the tests...", flush=True)
        try:
            ok, summary = run(env, args.pytest_args)
        except subprocess.CalledProcessError as exc:
            ok, summary = False, f"environment build failed: {exc}"
        elapsed = time.monotonic() - started
        line = f"{env.name} (Python {env.python}): {'ok' if ok else 'FAILED'} in {elapsed:.0f} s: {summary}"
        if not ok:
            line += f" (log: build/compat/{env.name}/pytest.log)"
        results.append((ok, line))
        print(line, flush=True)
    print("test-compat summary:")
    for _, line in results:
        print(f"  {line}")
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
