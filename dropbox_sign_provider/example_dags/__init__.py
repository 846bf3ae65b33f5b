"""
The example DAGs, and the command that puts them into a DAGs folder.

The wheel carries the repository's ``dags/*.py`` in this folder (``force-include`` in
``pyproject.toml``); a source checkout or an editable install has them only in ``dags/``, which is
then used instead. Either way ``dags/`` in the repository is the one copy that is edited.

``dropbox-sign-example-dags DEST`` (or ``python -m dropbox_sign_provider.example_dags DEST``)
copies them. A file already in ``DEST`` with other contents is someone's edited copy: it is left
alone, and the command fails naming it, unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

#: The example DAG files, by name: each is also its DAG's id.
EXAMPLE_DAGS = (
    "dropbox_sign_cancel_request.py",
    "dropbox_sign_expiry_cleanup.py",
    "dropbox_sign_cancellation_audit.py",
    "dropbox_sign_cancel_bulk_send_job.py",
)

_HERE = Path(__file__).resolve().parent
#: Where a source checkout keeps them: ``dropbox_sign_provider/example_dags/../../dags``.
_CHECKOUT_DAGS = _HERE.parent.parent / "dags"


def example_dags_folder() -> Path:
    """
    The folder that holds the example DAG files: this package's own folder in an installed wheel,
    the repository's ``dags/`` in a source checkout.

    :raises FileNotFoundError: when neither holds them (a broken install).
    """
    for folder in (_HERE, _CHECKOUT_DAGS):
        if all((folder / name).is_file() for name in EXAMPLE_DAGS):
            return folder
    raise FileNotFoundError(
        f"the example DAGs {', '.join(EXAMPLE_DAGS)} are neither in {_HERE} nor in {_CHECKOUT_DAGS}: "
        "reinstall airflow-provider-dropbox-sign"
    )


@dataclass(frozen=True)
class Placed:
    """What :func:`place_example_dags` did with each file, by its path in the destination."""

    copied: list[Path]
    unchanged: list[Path]
    overwritten: list[Path]
    refused: list[Path]


def place_example_dags(dest: Path, *, force: bool = False) -> Placed:
    """
    Copy the example DAGs into ``dest`` (created when missing).

    A file already there with the same contents is left as it is. One with other contents is left
    alone and reported in ``refused``, unless ``force``: then it is overwritten. Nothing is copied
    when any file is refused, so a folder never ends up with one new DAG beside an old one.

    :param dest: the DAGs folder.
    :param force: overwrite files whose contents differ.
    """
    source = example_dags_folder()
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} is not a folder")
    placed = Placed([], [], [], [])
    plan: list[tuple[Path, Path]] = []
    for name in EXAMPLE_DAGS:
        src, target = source / name, dest / name
        if not target.exists():
            placed.copied.append(target)
        elif target.read_bytes() == src.read_bytes():
            placed.unchanged.append(target)
            continue
        elif force:
            placed.overwritten.append(target)
        else:
            placed.refused.append(target)
        plan.append((src, target))
    if placed.refused:
        placed.copied.clear()
        return placed
    dest.mkdir(parents=True, exist_ok=True)
    for src, target in plan:
        shutil.copyfile(src, target)
    return placed


def main(argv: list[str] | None = None) -> int:
    """The ``dropbox-sign-example-dags`` command."""
    parser = argparse.ArgumentParser(
        prog="dropbox-sign-example-dags",
        description="Copy the four Dropbox Sign example DAGs (dropbox_sign_cancel_request, "
        "dropbox_sign_expiry_cleanup, dropbox_sign_cancel_bulk_send_job, "
        "dropbox_sign_cancellation_audit) into a DAGs folder.",
    )
    parser.add_argument("dest", type=Path, help="the DAGs folder, e.g. $AIRFLOW_HOME/dags")
    parser.add_argument("--force", action="store_true", help="overwrite copies whose contents differ")
    args = parser.parse_args(argv)
    try:
        placed = place_example_dags(args.dest, force=args.force)
    except OSError as exc:
        print(f"dropbox-sign-example-dags: {exc}", file=sys.stderr)
        return 1
    for word, paths in (
        ("copied", placed.copied),
        ("unchanged", placed.unchanged),
        ("overwritten", placed.overwritten),
    ):
        for path in paths:
            print(f"{word}: {path}")
    if placed.refused:
        for path in placed.refused:
            print(f"refused: {path} differs from the example; nothing was copied", file=sys.stderr)
        print(
            "Keep your edits, or run again with --force to replace them with the examples.",
            file=sys.stderr,
        )
        return 1
    return 0
