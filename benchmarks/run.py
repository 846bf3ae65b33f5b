"""
Run every benchmark scenario against the bundled emulator on loopback, print a table and write JSON.

Usage (``make bench`` runs the first)::

    .venv/bin/python -m benchmarks.run
    .venv/bin/python -m benchmarks.run --quick            # small smoke run, well under a minute of work
    .venv/bin/python -m benchmarks.run --only import --import-runs 7

(from the repository's root, where ``-m`` finds the ``benchmarks`` package).

Every size has a flag and an environment variable (``BENCH_<FLAG>``, e.g. ``BENCH_CONFIRM_N=500``);
a flag wins over the variable, the variable over ``--quick``'s and the default sizes. The JSON goes
to ``--out``, else ``$BENCH_OUT``, else ``build/bench.json``. The benchmark measures; it does not
assert: the targets are evaluated in the table and the JSON, and the exit status is 0 unless a
scenario could not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import bulk_cancel, confirm_at_scale, confirm_with_events, growth, import_time
from benchmarks.common import REPO, machine_info

SCENARIOS = ("bulk_cancel", "confirm_at_scale", "confirm_with_events", "import")

# name: (type, full size, quick size, help)
SIZES: dict[str, tuple[type, Any, Any, str]] = {
    "bulk_n": (int, 200, 30, "ids cancelled in bulk_cancel"),
    "bulk_limit": (int, 50, 10, "bulk_cancel: requests allowed per window"),
    "bulk_window": (float, 5.0, 1.0, "bulk_cancel: rate-limit window, seconds"),
    "confirm_n": (int, 1000, 50, "triggers in confirm_at_scale"),
    "confirm_limit": (int, 200, 20, "confirm_at_scale: requests allowed per window"),
    "confirm_window": (float, 2.0, 1.0, "confirm_at_scale: rate-limit window, seconds"),
    "confirm_poll": (float, 5.0, 1.0, "confirm_at_scale: poll interval of every trigger, seconds"),
    "confirm_spread": (float, 60.0, 5.0, "confirm_at_scale: cancellations complete over this many seconds"),
    "confirm_tail": (
        float,
        None,
        None,
        "confirm_at_scale: seconds after the spread before unconfirmed triggers are given up "
        "(default: twice the p99 target)",
    ),
    "events_fallback_poll": (
        float,
        600.0,
        600.0,
        "confirm_with_events: fallback poll interval with events on, seconds (sizes as confirm_at_scale)",
    ),
    "seed": (int, 20240229, 20240229, "random seed of start offsets and completion times"),
    "import_runs": (int, 3, 1, "timed samples per side of the import scenario (median)"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, with their defaults from the environment, then ``--quick``, then the full sizes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0", "false", "False"),
        help="small sizes, for a smoke run (env BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="instead of the scenarios, the growth series of confirm_at_scale (sizes, and poll "
        "intervals at --confirm-n triggers with events on beside them); writes --out (default "
        "build/bench-growth.json)",
    )
    parser.add_argument(
        "--growth-sizes",
        default=os.environ.get("BENCH_GROWTH_SIZES"),
        help="comma-separated trigger counts of the size series (env BENCH_GROWTH_SIZES; "
        f"default {','.join(map(str, growth.SIZES))})",
    )
    parser.add_argument(
        "--growth-polls",
        default=os.environ.get("BENCH_GROWTH_POLLS"),
        help="comma-separated poll intervals of the poll series, seconds (env BENCH_GROWTH_POLLS; "
        f"default {','.join(f'{p:g}' for p in growth.POLL_INTERVALS)})",
    )
    parser.add_argument(
        "--only",
        default=os.environ.get("BENCH_ONLY", ",".join(SCENARIOS)),
        help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)} (env BENCH_ONLY)",
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("BENCH_OUT"),
        help="where to write the JSON (env BENCH_OUT; default build/bench.json, or "
        "build/bench-growth.json with --growth)",
    )
    parser.add_argument(
        "--markdown",
        default=os.environ.get("BENCH_MARKDOWN"),
        help="also write the summary as Markdown tables to this file (env BENCH_MARKDOWN)",
    )
    parser.add_argument(
        "--workdir",
        default=os.environ.get("BENCH_WORKDIR", "build/bench"),
        help="client specs, results and logs (env BENCH_WORKDIR; default build/bench)",
    )
    for name, (kind, _, _, text) in SIZES.items():
        env = f"BENCH_{name.upper()}"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=kind(os.environ[env]) if os.environ.get(env) else None,
            help=f"{text} (env {env})",
        )
    args = parser.parse_args(argv)
    for name, (_, full, quick, _) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    quick = args.quick
    args.growth_sizes = _numbers(args.growth_sizes, int) or ([50, 100] if quick else list(growth.SIZES))
    args.growth_polls = _numbers(args.growth_polls, float) or (
        [1.0, 2.0] if quick else list(growth.POLL_INTERVALS)
    )
    if args.out is None:
        args.out = "build/bench-growth.json" if args.growth else "build/bench.json"
    if args.confirm_tail is None:
        allowed_rps = args.confirm_limit / args.confirm_window
        args.confirm_tail = 2 * (args.confirm_n / allowed_rps + args.confirm_poll)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen scenarios (or the growth series); return the whole JSON document."""
    workdir = _resolve(args.workdir)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "emulator": "in the runner process, in its own thread; every measured client in a fresh subprocess",
    }
    if args.growth:
        began = time.monotonic()
        report["growth"] = growth.run(
            args.growth_sizes,
            args.growth_polls,
            args.confirm_limit,
            args.confirm_window,
            args.confirm_spread,
            args.seed,
            workdir,
            poll_series_n=args.confirm_n,
        )
        report["total_s"] = round(time.monotonic() - began, 1)
        return report
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "bulk_cancel": lambda: bulk_cancel.run(args.bulk_n, args.bulk_limit, args.bulk_window, workdir),
        "confirm_at_scale": lambda: confirm_at_scale.run(
            args.confirm_n,
            args.confirm_limit,
            args.confirm_window,
            args.confirm_poll,
            args.confirm_spread,
            args.confirm_tail,
            args.seed,
            workdir,
        ),
        "confirm_with_events": lambda: confirm_with_events.run(
            args.confirm_n,
            args.confirm_limit,
            args.confirm_window,
            args.confirm_poll,
            args.events_fallback_poll,
            args.confirm_spread,
            args.confirm_tail,
            args.seed,
            workdir,
        ),
        "import": lambda: import_time.run(args.import_runs),
    }
    began = time.monotonic()
    for name in SCENARIOS:
        if name in args.only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                report[name] = steps[name]()
            except Exception as exc:
                # The other scenarios still run; the exit status says that this one could not.
                print(f"{name} could not run: {exc}", file=sys.stderr, flush=True)
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            report[name]["scenario_s"] = round(time.monotonic() - started, 1)
    report["total_s"] = round(time.monotonic() - began, 1)
    report["targets"] = evaluate_targets(report)
    return report


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the scenarios that ran: what was measured, the bound, and whether it holds."""
    targets: list[dict[str, Any]] = []
    ran = {name for name in SCENARIOS if name in report and "error" not in report[name]}

    def check(name: str, value: Any, bound: str, holds: bool | None) -> None:
        targets.append({"target": name, "value": value, "bound": bound, "holds": holds})

    if "bulk_cancel" in ran:
        ours = report["bulk_cancel"]["ours"]
        check("bulk_cancel rate_ratio", ours["rate_ratio"], ">= 0.95", _ge(ours["rate_ratio"], 0.95))
        after = ours["http_429_after_first_window"]
        check("bulk_cancel http_429 after the first window", after, "== 0", after == 0)
    if "confirm_at_scale" in ran:
        section = report["confirm_at_scale"]
        ours = section["ours"]
        check("confirm_at_scale http_429", ours["http_429"], "== 0", ours["http_429"] == 0)
        peak, budget = ours["peak_per_window"], section["limit_per_window"]
        check("confirm_at_scale peak_per_window", peak, f"<= {budget}", peak <= budget)
        p99, bound = ours["p99_latency_s"], section["p99_target_s"]
        check("confirm_at_scale p99_latency_s", p99, f"<= {bound}", p99 is not None and p99 <= bound)
        rss = ours["rss_kb_per_trigger"]
        check("confirm_at_scale rss_kb_per_trigger", rss, "<= 20", rss <= 20)
    if "confirm_with_events" in ran:
        on = report["confirm_with_events"]["events_on"]
        per = on["requests_per_confirmation"]
        holds = per is not None and per <= 2.05
        check("confirm_with_events requests_per_confirmation", per, "<= 2.05", holds)
        p50 = on["p50_latency_s"]
        check("confirm_with_events p50_latency_s", p50, "<= 5", p50 is not None and p50 <= 5)
        check("confirm_with_events unconfirmed", on["unconfirmed"], "== 0", on["unconfirmed"] == 0)
        check("confirm_with_events http_429", on["http_429"], "== 0", on["http_429"] == 0)
    if "import" in ran:
        section = report["import"]
        check(
            "import ours_ms",
            section["ours_ms"],
            f"<= http_provider_ms ({section['http_provider_ms']})",
            section["ours_ms"] <= section["http_provider_ms"],
        )
    return targets


def _ge(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


# --- the table ------------------------------------------------------------------------------------

_ROWS: dict[str, tuple[str, ...]] = {
    "bulk_cancel": (
        "wall_s",
        "ideal_wall_s",
        "rate_ratio",
        "http_429",
        "http_429_after_first_window",
        "requests",
        "windows_used",
        "achieved_rps",
        "cpu_s",
    ),
    "confirm_at_scale": (
        "requests",
        "http_429",
        "peak_per_window",
        "p50_latency_s",
        "p99_latency_s",
        "unconfirmed",
        "rss_kb_per_trigger",
        "cpu_s",
    ),
    "confirm_with_events": (
        "requests_per_confirmation",
        "requests",
        "http_429",
        "p50_latency_s",
        "p99_latency_s",
        "unconfirmed",
        "board_reads",
        "board_reads_per_waiting_id",
        "events_acknowledged",
        "rss_kb_per_trigger",
        "cpu_s",
    ),
}
#: Each table's two columns, and the ratio of the second over the first.
_SIDES: dict[str, tuple[str, str]] = {
    "bulk_cancel": ("ours", "baseline"),
    "confirm_at_scale": ("ours", "baseline"),
    "confirm_with_events": ("events_on", "events_off"),
}
_SIZE_KEYS = (
    "n",
    "n_triggers",
    "limit_per_window",
    "window_s",
    "poll_interval_s",
    "fallback_poll_interval_s",
    "spread_s",
)


def table_blocks(report: dict[str, Any]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The summary as blocks of (title, rows); each block's first row is its header."""
    blocks: list[tuple[str, list[tuple[Any, ...]]]] = []
    for name, keys in _ROWS.items():
        if name not in report:
            continue
        if "error" in report[name]:
            blocks.append((f"{name}: could not run: {report[name]['error']}", []))
            continue
        section = report[name]
        sizes = ", ".join(f"{k}={_cell(section[k])}" for k in _SIZE_KEYS if k in section)
        first, second = _SIDES[name]
        rows: list[tuple[Any, ...]] = [("", first, second, f"{second} / {first}")]
        for key in keys:
            a, b = section[first].get(key), section[second].get(key)
            rows.append((key, a, b, _ratio_cell(b, a)))
        blocks.append((f"{name} ({sizes})", rows))
    if "import" in report and "error" in report["import"]:
        blocks.append((f"import: could not run: {report['import']['error']}", []))
    elif "import" in report:
        section = report["import"]
        rows = [("", "ours", "http provider", "http provider / ours")]
        for label, suffix in (("added import ms (-X importtime)", "ms"), ("added import CPU ms", "cpu_ms")):
            ours, http = section[f"ours_{suffix}"], section[f"http_provider_{suffix}"]
            rows.append((label, ours, http, _ratio_cell(http, ours)))
        blocks.append((f"import (on top of airflow.sdk, median of {section['runs']})", rows))
    return blocks


def format_table(report: dict[str, Any]) -> str:
    """The summary for a terminal: one block per scenario, then the targets and the machine."""
    widths = (34, 12, 14, 20)
    lines: list[str] = []
    for title, rows in table_blocks(report):
        lines.append(title)
        for cells in rows:
            lines.append(
                "  ".join(
                    _cell(cell).ljust(width) if i == 0 else _cell(cell).rjust(width)
                    for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
                )
            )
        lines.append("")
    lines.append("targets")
    for target in report.get("targets", []):
        lines.append(
            f"  {_verdict(target):7} {target['target']}: {_cell(target['value'])} (target {target['bound']})"
        )
    lines.append(_machine_line(report))
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    """The same summary as Markdown tables, for docs/performance.md."""
    lines: list[str] = []
    for title, rows in table_blocks(report):
        lines += [f"**{title}**", ""]
        if not rows:
            continue
        header, *body = rows
        lines.append("| " + " | ".join(_cell(cell) for cell in header) + " |")
        lines.append("|---" + "|---:" * (len(header) - 1) + "|")
        lines += ["| " + " | ".join(_cell(cell) for cell in cells) + " |" for cells in body]
        lines.append("")
    lines += ["**targets**", "", "| target | measured | bound | verdict |", "|---|---:|---|---|"]
    for target in report.get("targets", []):
        lines.append(
            f"| {target['target']} | {_cell(target['value'])} | {target['bound']} | {_verdict(target)} |"
        )
    lines += ["", _machine_line(report)]
    return "\n".join(lines) + "\n"


def growth_rows(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The growth series as rows: one per point, with its header first."""
    rows: list[tuple[Any, ...]] = [
        (
            "series",
            "triggers",
            "poll s",
            "requests / confirmation",
            "p50 s",
            "p99 s",
            "429",
            "peak / window",
            "KB / trigger",
            "CPU ms / trigger",
        )
    ]
    limit = report["growth"]["limit_per_window"]
    for point in report["growth"]["points"]:
        ours = point["ours"]
        rows.append(
            (
                point["series"],
                point["n_triggers"],
                "events" if point["series"] == "events" else point["poll_interval_s"],
                ours["requests_per_confirmation"],
                ours["p50_latency_s"],
                ours["p99_latency_s"],
                ours["http_429"],
                f"{ours['peak_per_window']} of {limit}",
                ours["rss_kb_per_trigger"],
                round(1000 * ours["cpu_s"] / point["n_triggers"], 2),
            )
        )
    return rows


def format_growth(report: dict[str, Any], markdown: bool = False) -> str:
    """The growth series as a terminal table, or as Markdown for docs/performance.md."""
    header, *body = growth_rows(report)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(_cell(row[i])) for row in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(_cell(cell).rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in (header, *body)
    ]
    return "\n".join([*lines, "", _machine_line(report)])


def _machine_line(report: dict[str, Any]) -> str:
    machine = report["machine"]
    return (
        f"Machine: {machine['cpus_usable']} of {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_mb']} MB, Python {machine['python']}, {machine['platform']}; load average "
        f"{' / '.join(str(x) for x in machine['load_average_at_start'])} at the start; "
        f"{report['started_at']}; whole run {report['total_s']} s."
    )


def _verdict(target: dict[str, Any]) -> str:
    return {True: "holds", False: "MISSED", None: "n/a"}[target["holds"]]


def _ratio_cell(numerator: Any, denominator: Any) -> Any:
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return round(numerator / denominator, 2)
    return ""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _numbers(text: str | None, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(part) for part in (text or "").split(",") if part.strip()]


def _resolve(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path.cwd() / candidate


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    args = parse_args(argv)
    report = run(args)
    out = _resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.growth:
        print(format_growth(report))
    else:
        print(format_table(report))
    if args.markdown:
        markdown = _resolve(args.markdown)
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(format_markdown(report))
    print(f"JSON: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    if args.growth:
        return 0
    return 1 if any("error" in report[name] for name in args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
