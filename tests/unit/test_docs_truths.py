"""
What the docs state that the code decides: checked here so that neither drifts from the other.

- every ``error_name`` the provider can produce, or the emulator answers, has its entry in the
  troubleshooting page;
- the example DAGs the docs count and name are the ones the package ships.
"""

from __future__ import annotations

import re
from pathlib import Path

from dropbox_sign_provider import exceptions
from dropbox_sign_provider.example_dags import EXAMPLE_DAGS
from dropbox_sign_provider.testing.emulator.errors import ERROR_NAMES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dropbox_sign_provider"
DOCS = ROOT / "docs"

#: An error built by the provider: ``DropboxSign...Error(<status>, "<error_name>", ...``.
_LOCAL_ERROR = re.compile(r"DropboxSign\w*Error\(\s*[^,()]+,\s*\"([a-z_]+)\"")
#: A name the emulator answers beside its status's own: ``ApiError(..., name="<error_name>")``.
_EMULATOR_NAME = re.compile(r"ApiError\((?:[^()]|\([^()]*\))*?name=\"([a-z_]+)\"", re.S)
#: A name chosen by a helper: ``name, what = "<error_name>", ...`` and ``return "<error_name>" if``.
_CHOSEN_NAME = re.compile(r"(?:name, what = |return )\"([a-z_]+)\"")


def error_names() -> set[str]:
    names = set(ERROR_NAMES.values()) | set(exceptions._BY_NAME)
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(_LOCAL_ERROR.findall(text))
        if "testing/emulator" in path.as_posix():
            names |= set(_EMULATOR_NAME.findall(text))
    names |= set(_CHOSEN_NAME.findall((PACKAGE / "exceptions.py").read_text(encoding="utf-8")))
    return names


def test_the_scan_finds_the_names_it_should() -> None:
    # If the way errors are built changes, this scan must be updated rather than silently pass.
    assert {
        "tls_error",
        "connection_error",
        "transport_error",
        "deadline_passed",
        "response_too_large",
        "invalid_response",
        "redirect",
        "unexpected_status",
        "server_error",
        "exceeded_rate",
        "signature_request_cancel_failed",
        "signature_request_expired",
        "maintenance",
    } <= error_names()


def test_every_error_name_has_its_troubleshooting_entry() -> None:
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    missing = sorted(name for name in error_names() if f"`{name}`" not in page and f"### {name}" not in page)
    assert not missing, f"error names without an entry in docs/troubleshooting.md: {missing}"


_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def test_the_docs_count_the_example_dags_the_package_ships() -> None:
    count = _NUMBER_WORDS[len(EXAMPLE_DAGS)]
    pages = [*DOCS.rglob("*.md"), ROOT / "README.md"]
    wrong = []
    for page in pages:
        for match in re.finditer(r"\b(\w+) example DAGs\b", page.read_text(encoding="utf-8"), re.IGNORECASE):
            word = match.group(1).lower()
            if word in _NUMBER_WORDS.values() and word != count:
                wrong.append(f"{page.relative_to(ROOT)}: {match.group(0)!r}")
    assert not wrong, f"the package ships {count} example DAGs: {wrong}"
    # Each is named where the docs introduce them.
    index = (DOCS / "index.md").read_text(encoding="utf-8") + (DOCS / "quickstart.md").read_text(
        encoding="utf-8"
    )
    for name in EXAMPLE_DAGS:
        assert name.removesuffix(".py") in index, (
            f"{name} is not named in docs/index.md or docs/quickstart.md"
        )


def test_only_secret_form_fields_have_names_airflow_masks() -> None:
    # Airflow masks the value of any field whose name holds a sensitive word ("token", "secret",
    # ...): a plain field so named would show its default as *** in the connection form, and could
    # be saved as ***. Secret fields are password fields; no other may carry such a name.
    from airflow.sdk._shared.secrets_masker.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    from dropbox_sign_provider import get_provider_info

    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    for name, field in fields.items():
        sensitive = any(word in name for word in DEFAULT_SENSITIVE_FIELDS)
        assert sensitive == (field["schema"].get("format") == "password"), name
