"""
The table of the ``[dropbox_sign]`` options, drawn from the provider info: ``python
scripts/configuration.py`` prints it, ``--write`` puts it into ``docs/configuration.md`` and
``--check`` fails when that page is stale.

Name, default and meaning come from ``get_provider_info()["config"]`` (what ``airflow config list``
shows too); when each option is read is kept here, as the provider info has no field for it, and an
option without it (or a reading time for an option that is gone) stops the script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import page_block

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- options: begin -->", "<!-- options: end -->"

#: When, and by which Airflow component, each option is read.
READ_WHEN = {
    "require_approval": "on the worker, when a cancel task runs, and when a dry run signs what it read",
    "approvers": "on the worker, when an approval asks, and again when its answer arrives",
    "four_eyes": "on the worker, when an approval's answer arrives",
    "max_cancellations": "on the worker, when a list task, an approval or a cancel task runs",
    "approval_timeout": "on the worker, when an approval starts waiting (its deadline is set then)",
    "armed": "on the worker, when a list task runs, and again when a cancel task runs",
    "poke_interval": "on the worker, when a cancel task without its own `poke_interval` runs "
    "(the sensor keeps its own default, 60)",
    "event_first": "on the worker, when a cancel task without its own `event_first` runs "
    "(the sensor keeps its own default, False)",
    "pool": "on the dag-processor, when it parses an example DAG's file",
    "callback_conn_ids": "on the API server, when callbacks arrive",
    "ui_conn_ids": "on the API server, when the Dropbox Sign page is opened; on the dag-processor, when "
    "it parses the manual cancel DAG's file (its connection param's choices)",
}


def options() -> dict[str, dict[str, str]]:
    """The ``[dropbox_sign]`` options as the provider declares them, in their order."""
    sys.path.insert(0, str(ROOT))
    from dropbox_sign_provider import CONFIG_SECTION, get_provider_info

    declared: dict[str, dict[str, str]] = get_provider_info()["config"][CONFIG_SECTION]["options"]
    return declared


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table() -> str:
    """The options as the configuration page shows them."""
    declared = options()
    if set(declared) != set(READ_WHEN):
        raise SystemExit(
            "scripts/configuration.py: say when each option is read (READ_WHEN); "
            f"missing: {sorted(set(declared) - set(READ_WHEN))}, "
            f"no such option: {sorted(set(READ_WHEN) - set(declared))}"
        )
    lines = ["| Option | Default | Meaning | Read |", "|---|---|---|---|"]
    for name, option in declared.items():
        default = f"`{option['default']}`" if option["default"] else "*(empty)*"
        lines.append(f"| `{name}` | {default} | {_cell(option['description'])} | {_cell(READ_WHEN[name])} |")
    return "\n".join(lines)


def main() -> int:
    return page_block.main(PAGE, (BEGIN, END), table(), __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
