"""
Check the built artefacts in ``dist/`` are what users get.

The sdist carries the tests, the docs and ``dags/``; the wheel carries the package (with a copy of
``dags/*.py`` as ``dropbox_sign_provider/example_dags/``) and the licence, and no tests or build
output. Then the wheel is installed with plain ``pip`` into a fresh virtual environment of the system
Python, next to Airflow pinned to the lock file's versions, and checked the way a user meets it:
``airflow providers list`` shows it with its version, the connection type and its form fields are
registered, the operator, sensor and trigger import, the ``dropbox-sign-emulator`` command serves,
and ``dropbox-sign-example-dags`` puts the example DAGs into a DAGs folder where ``airflow dags
list`` finds them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from dropbox_sign_provider.example_dags import EXAMPLE_DAGS

# Every command run here is pip, uv or the fresh environment's own programs, with fixed arguments.
REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
WORK = REPO / "build" / "wheel-check"
SYSTEM_PYTHON = os.environ.get("SYSTEM_PYTHON", "/usr/bin/python3")
PACKAGE = "airflow-provider-dropbox-sign"
#: One DAG per file the package ships, named like its file.
EXAMPLE_DAG_IDS = sorted(Path(name).stem for name in EXAMPLE_DAGS)

# What Airflow has to know after the install: run in the fresh environment, prints JSON.
PROBE = """
import json
from importlib.metadata import entry_points
from airflow.providers_manager import ProvidersManager
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.triggers.signature_request import SignatureRequestCanceledTrigger

pm = ProvidersManager()
hook = pm.hooks.get("dropbox_sign")
behaviour = pm.field_behaviours.get("dropbox_sign") or {}
print(json.dumps({
    "hook": hook.hook_class_name if hook else None,
    "form_fields": sorted(k for k in pm.connection_form_widgets if k.startswith("extra__dropbox_sign__")),
    "hidden_fields": sorted(behaviour.get("hidden_fields", [])),
    "classes": [c.__name__ for c in (
        CancelSignatureRequestOperator, SignatureRequestCanceledSensor, SignatureRequestCanceledTrigger
    )],
    "plugins": [
        [app["url_prefix"] for app in entry.load().fastapi_apps]
        for entry in entry_points(group="airflow.plugins")
        if entry.value.startswith("dropbox_sign_provider.")
    ],
    "asset_schemes": sorted(pm.asset_uri_handlers),
}))
"""


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
    print(f"  ok: {message}")


def one(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    if len(found) != 1:
        raise CheckFailed(f"expected exactly one {pattern} in dist/ (run make dist), found {found}")
    return found[0]


def check_contents(wheel: Path, sdist: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    expect(
        all(top == "dropbox_sign_provider" or top.endswith(".dist-info") for top in tops),
        f"wheel holds only the package and its metadata: {', '.join(sorted(tops))}",
    )
    expect(
        not any(n.startswith(("tests/", "build/", "docs/")) for n in names),
        "wheel has no tests/, build/, docs/",
    )
    expect("dropbox_sign_provider/version_compat.py" in names, "wheel has version_compat.py")
    expect(any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "wheel carries LICENSE")
    expect(any(n.endswith(".dist-info/entry_points.txt") for n in names), "wheel declares its entry points")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {
            Path(n).name: zf.read(n)
            for n in names
            if n.startswith("dropbox_sign_provider/example_dags/") and not Path(n).name.startswith("__")
        }
    sources = {path.name: path.read_bytes() for path in sorted((REPO / "dags").glob("*.py"))}
    expect(
        shipped == sources,
        f"wheel carries dags/ as dropbox_sign_provider/example_dags/: {', '.join(sorted(shipped))}",
    )

    with tarfile.open(sdist) as tf:
        members = [m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name]
    for folder in ("tests/", "docs/", "dags/", "dropbox_sign_provider/"):
        expect(any(m.startswith(folder) for m in members), f"sdist has {folder}")
    expect("LICENSE" in members and "CHANGELOG.md" in members, "sdist has LICENSE and CHANGELOG.md")
    expect(not any(m.startswith(("build/", "dist/", ".venv/")) for m in members), "sdist has no build output")


def lock_constraints(path: Path) -> None:
    """The runtime dependencies pinned as in ``uv.lock``, for pip's ``-c``."""
    uv = os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    subprocess.run(  # noqa: S603
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-project",
            "--no-hashes",
            "--quiet",
            "-o",
            str(path),
        ],
        cwd=REPO,
        check=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_emulator(bin_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [str(bin_dir / "dropbox-sign-emulator"), "--port", str(port), "--api-key", "wheel-check"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v3/account")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"wheel-check:").decode())
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
                    body = json.load(answer)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed("dropbox-sign-emulator did not serve within 30 s") from None
                time.sleep(0.2)
        expect("account" in body, "dropbox-sign-emulator serves GET /v3/account")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def check_example_dags(bin_dir: Path, home: Path, env: dict[str, str]) -> None:
    """The documented command places the example DAGs; Airflow parses every one from there."""
    dags = home / "dags"
    for attempt in ("copied", "unchanged"):
        placed = subprocess.run(  # noqa: S603
            [str(bin_dir / "dropbox-sign-example-dags"), str(dags)],
            cwd=home,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        expect(
            placed.stdout.count(f"{attempt}: ") == len(EXAMPLE_DAG_IDS),
            f"dropbox-sign-example-dags {dags.name}/ reports every DAG {attempt}",
        )
    dags_env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    subprocess.run(  # noqa: S603
        [str(bin_dir / "airflow"), "db", "migrate"],
        cwd=home,
        env=dags_env,
        check=True,
        capture_output=True,
        text=True,
    )
    listed = subprocess.run(  # noqa: S603
        [str(bin_dir / "airflow"), "dags", "list", "--local", "--output", "json"],
        cwd=home,
        env=dags_env,
        check=True,
        capture_output=True,
        text=True,
    )
    dag_ids = sorted(dag["dag_id"] for dag in json.loads(listed.stdout.strip().splitlines()[-1]))
    expect(dag_ids == EXAMPLE_DAG_IDS, f"airflow dags list shows {', '.join(dag_ids)}")


def main() -> int:
    started = time.monotonic()
    try:
        wheel, sdist = one("*.whl"), one("*.tar.gz")
        version = wheel.name.split("-")[1]
        print(f"Contents of {wheel.name} and {sdist.name}:")
        check_contents(wheel, sdist)

        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        venv = WORK / "venv"
        bin_dir = venv / "bin"
        constraints = WORK / "constraints.txt"
        lock_constraints(constraints)
        print(f"Installing {wheel.name} with pip into a fresh {SYSTEM_PYTHON} venv...", flush=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)  # noqa: S603
        install_started = time.monotonic()
        subprocess.run(  # noqa: S603
            [str(bin_dir / "pip"), "install", "--quiet", "--quiet", "-c", str(constraints), str(wheel)],
            check=True,
        )
        print(f"  installed in {time.monotonic() - install_started:.0f} s")

        home = Path(tempfile.mkdtemp(prefix="airflow-wheel-check-", dir=WORK))
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        }
        env.pop("VIRTUAL_ENV", None)
        # Outside the checkout, so only the installed wheel can answer.
        listed = subprocess.run(  # noqa: S603
            [str(bin_dir / "airflow"), "providers", "list", "--output", "json"],
            cwd=home,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
        print("What Airflow sees:")
        expect(
            providers.get(PACKAGE, {}).get("version") == version,
            f"airflow providers list shows {PACKAGE} {version}",
        )
        probe = subprocess.run(  # noqa: S603
            [str(bin_dir / "python"), "-c", PROBE],
            cwd=home,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        seen = json.loads(probe.stdout.strip().splitlines()[-1])
        expect(
            seen["hook"] == "dropbox_sign_provider.hooks.dropbox_sign.DropboxSignHook",
            "connection type dropbox_sign is registered to DropboxSignHook",
        )
        # What the source declares (one place), as Airflow registered it from the installed wheel.
        from dropbox_sign_provider import get_provider_info

        fields = sorted(get_provider_info()["connection-types"][0]["conn-fields"])
        expect(
            sorted(seen["form_fields"]) == [f"extra__dropbox_sign__{name}" for name in fields],
            f"its form fields are registered: {', '.join(fields)}",
        )
        expect(seen["hidden_fields"] == ["login", "port", "schema"], "its form hides login, port, schema")
        expect(len(seen["classes"]) == 3, f"{', '.join(seen['classes'])} import")
        expect(
            sorted(seen["plugins"]) == [["/dropbox-sign"], ["/dropbox-sign-ui"]],
            "the callback receiver's and the Dropbox Sign page's plugins are airflow.plugins entry points, "
            "mounted at /dropbox-sign and /dropbox-sign-ui",
        )
        expect("dropbox-sign" in seen["asset_schemes"], "the dropbox-sign asset URI scheme is registered")
        check_emulator(bin_dir)
        check_example_dags(bin_dir, home, env)
    except (CheckFailed, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None)
        print(f"wheel check FAILED: {exc}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
        return 1
    print(f"wheel check passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
