"""
The growth series as pictures: ``python -m benchmarks.plots [JSON] [--out DIR]``.

Reads what ``python -m benchmarks.run --growth`` wrote and draws, into ``docs/images/`` by default:

* ``bench-requests-per-window.png``: requests per rate-limit window against the limit, this
  provider's trigger and the naive baseline, in one run;
* ``bench-latency.png``: the confirmation-latency distribution of both, in that run;
* ``bench-requests-vs-latency.png``: requests per confirmed cancellation against p50 latency, for
  each poll interval and with events on;
* ``bench-cost-per-trigger.png``: memory and CPU per trigger against the number of triggers.

Each image says the machine and the date it was measured on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO

DEFAULT_JSON = REPO / "docs" / "bench-growth.json"
DEFAULT_OUT = REPO / "docs" / "images"
IMAGES = (
    "bench-requests-per-window.png",
    "bench-latency.png",
    "bench-requests-vs-latency.png",
    "bench-cost-per-trigger.png",
)


def measured_on(report: dict[str, Any]) -> str:
    """The caption every image carries: machine and date."""
    machine = report["machine"]
    return (
        f"Measured {report['started_at'][:10]} on {machine['cpus_usable']} CPUs ({machine['cpu_model']}), "
        f"{round(machine['memory_mb'] / 1024)} GiB, Python {machine['python']}"
    )


def draw(report: dict[str, Any], out: Path) -> list[Path]:
    """Draw every image from a growth report; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    growth = report["growth"]
    points = growth["points"]
    caption = measured_on(report)
    limit, window = growth["limit_per_window"], growth["window_s"]
    both = next(p for p in points if "baseline" in p)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in IMAGES]

    def finish(figure: Any, path: Path, title: str) -> None:
        figure.suptitle(title)
        figure.text(0.01, 0.01, caption, fontsize=7, color="0.35")
        figure.tight_layout(rect=(0, 0.04, 1, 1))
        figure.savefig(path, dpi=110)
        plt.close(figure)

    # 1. requests per window against the limit, one run, both sides
    figure, axes = plt.subplots(figsize=(8, 4))
    for side, style in (("baseline", "tab:red"), ("ours", "tab:blue")):
        counts = both[side]["requests_per_window"]
        axes.plot(
            [i * window for i in range(len(counts))],
            counts,
            color=style,
            label=f"{'this provider' if side == 'ours' else 'naive baseline'} "
            f"({both[side]['http_429']} x 429)",
        )
    axes.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"limit ({limit} per {window:g} s)")
    axes.set_xlabel("seconds into the run")
    axes.set_ylabel(f"requests per {window:g} s window")
    axes.legend(loc="upper right", fontsize=8)
    finish(
        figure,
        paths[0],
        f"{both['n_triggers']} triggers polling every {both['poll_interval_s']:g} s: requests per window",
    )

    # 2. latency distribution, same run
    figure, axes = plt.subplots(figsize=(8, 4))
    for side, style in (("baseline", "tab:red"), ("ours", "tab:blue")):
        quantiles = both[side]["latency_percentiles_s"]
        axes.plot(
            [q for q in quantiles if q is not None],
            [i for i, q in enumerate(quantiles) if q is not None],
            color=style,
            label="this provider" if side == "ours" else "naive baseline",
        )
    events = next((p for p in points if p["series"] == "events"), None)
    if events is not None:
        # A separate run, with the same triggers and completion times as the polling ones.
        quantiles = events["ours"]["latency_percentiles_s"]
        axes.plot(
            [q for q in quantiles if q is not None],
            [i for i, q in enumerate(quantiles) if q is not None],
            color="tab:green",
            label="this provider, events on (same plan, own run)",
        )
    axes.set_xlabel("seconds from the cancellation taking effect to its confirmation")
    axes.set_ylabel("% of cancellations confirmed")
    axes.legend(loc="lower right", fontsize=8)
    title = f"Confirmation latency, {both['n_triggers']} triggers polling every {both['poll_interval_s']:g} s"
    finish(figure, paths[1], title)

    # 3. requests per confirmation against p50 latency, per poll interval and with events
    figure, axes = plt.subplots(figsize=(8, 4))
    polls = sorted((p for p in points if p["series"] == "poll"), key=lambda p: p["poll_interval_s"])
    axes.plot(
        [p["ours"]["p50_latency_s"] for p in polls],
        [p["ours"]["requests_per_confirmation"] for p in polls],
        color="0.7",
        linewidth=1,
        zorder=0,
    )
    for point in points:
        if point["series"] not in ("poll", "events"):
            continue
        ours = point["ours"]
        label = "events on" if point["series"] == "events" else f"poll {point['poll_interval_s']:g} s"
        axes.scatter(ours["p50_latency_s"], ours["requests_per_confirmation"], s=40)
        axes.annotate(
            label,
            (ours["p50_latency_s"], ours["requests_per_confirmation"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    axes.set_xlabel("p50 confirmation latency, seconds")
    axes.set_ylabel("requests per confirmed cancellation")
    axes.set_ylim(bottom=0)
    axes.set_xlim(left=0)
    n = growth["poll_series_n_triggers"]
    finish(figure, paths[2], f"Requests against latency, {n} triggers (the cancel counts as one)")

    # 4. memory and CPU per trigger against the number of triggers
    sizes = sorted((p for p in points if p["series"] == "size"), key=lambda p: p["n_triggers"])
    figure, memory = plt.subplots(figsize=(8, 4))
    counts = [p["n_triggers"] for p in sizes]
    memory.plot(counts, [p["ours"]["rss_kb_per_trigger"] for p in sizes], "o-", color="tab:blue")
    memory.set_xscale("log")
    memory.set_xlabel("triggers in one process")
    memory.set_ylabel("memory per trigger, KB", color="tab:blue")
    memory.set_ylim(bottom=0)
    cpu = memory.twinx()
    cpu.plot(
        counts,
        [1000 * p["ours"]["cpu_s"] / p["n_triggers"] for p in sizes],
        "s--",
        color="tab:orange",
    )
    cpu.set_ylabel("CPU per trigger, ms", color="tab:orange")
    cpu.set_ylim(bottom=0)
    memory.set_xticks(counts, [f"{c:,}" for c in counts])
    finish(
        figure,
        paths[3],
        f"Cost per trigger, polling every {growth['size_series_poll_interval_s']:g} s",
    )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", default=str(DEFAULT_JSON), help=f"default {DEFAULT_JSON}")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.json).read_text())
    for path in draw(report, Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
