"""Tables on stdout, bench/results/latest.json and the chart beside it."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import ScalarFormatter

from bench.measure import Samples

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Measure:
    """The project against the plain alternative, measured in the same run.

    ratio = median(project) / median(alternative); ``bound`` is the target's bound on it,
    when the target is one: an upper bound, or a lower one with ``at_least`` (throughput).
    """

    benchmark: str
    name: str
    unit: str
    project: Samples
    alternative: Samples
    target: str
    bound: float | None = None
    condition: bool = True  # a further requirement of the target (same best params...)
    digits: int = 2
    at_least: bool = False

    @property
    def ratio(self) -> float:
        return self.project.median / self.alternative.median

    @property
    def met(self) -> bool:
        if self.bound is None:
            within = True
        else:
            within = self.ratio >= self.bound if self.at_least else self.ratio <= self.bound
        return within and self.condition

    def as_json(self) -> dict:
        return {
            "name": f"{self.benchmark}: {self.name}", "ratio": round(self.ratio, 4),
            "target": self.target, "met": self.met, "unit": self.unit,
            "project": self.project.values, "alternative": self.alternative.values,
        }


@dataclass
class Series:
    """How a measure grows with the input, for the chart."""

    title: str
    x_label: str
    y_label: str
    x: list[float]
    lines: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Benchmark:
    name: str
    setup: str  # the data and the alternative, one line
    measures: list[Measure] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def timed(run: Callable[..., Benchmark], *args) -> Benchmark:
    """run(*args), with how long it took (data and set-up included) in its notes."""
    start = time.monotonic()
    benchmark = run(*args)
    benchmark.notes.append(f"took {time.monotonic() - start:.0f} s in all")
    return benchmark


def table(benchmark: Benchmark) -> str:
    header = ("measure", "unit", "project: median (min-max)", "alternative: median (min-max)",
              "ratio", "target", "met")
    rows = [header] + [
        (m.name, m.unit, m.project.describe(m.digits), m.alternative.describe(m.digits),
         f"{m.ratio:.3f}",
         m.target, "yes" if m.met else "NO")
        for m in benchmark.measures
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"== {benchmark.name}: {benchmark.setup}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              for row in rows]
    lines += [f"   {note}" for note in benchmark.notes]
    return "\n".join(lines)


def write_json(benchmarks: list[Benchmark], path: Path) -> None:
    measures = [m.as_json() for b in benchmarks for m in b.measures]
    path.write_text(json.dumps(measures, indent=2) + "\n")


def write_markdown(benchmarks: list[Benchmark], path: Path, heading: str) -> None:
    """The run as one Markdown table, for the README's performance section."""
    lines = [heading, "", "| measure | project | alternative | ratio | target | met |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [
        f"| {m.benchmark}: {m.name} | {m.project.describe(m.digits)} {m.unit} | "
        f"{m.alternative.describe(m.digits)} {m.unit} | {m.ratio:.3f} | {m.target} | "
        f"{'yes' if m.met else '**no**'} |"
        for b in benchmarks for m in b.measures
    ]
    lines += ["", *(f"- {b.name}: {b.setup}" for b in benchmarks),
              *(f"- {b.name}: {note}" for b in benchmarks for note in b.notes)]
    path.write_text("\n".join(lines) + "\n")


def chart(benchmarks: list[Benchmark], path: Path, title: str) -> None:
    """Every ratio against its target across the top, then one panel per growth series."""
    measures = [m for b in benchmarks for m in b.measures]
    series = [s for b in benchmarks for s in b.series]
    series_rows = (len(series) + 1) // 2
    ratio_height = 1 + 0.35 * len(measures)
    figure = plt.figure(figsize=(15, ratio_height + 4.5 * series_rows))
    layout = figure.add_gridspec(1 + series_rows, 2,
                                 height_ratios=[ratio_height] + [4.5] * series_rows)
    ratios = figure.add_subplot(layout[0, :])
    positions = range(len(measures))
    # Bars grow from 1.0 (as fast / as big as the alternative) to the ratio.
    ratios.barh(positions, [m.ratio - 1 for m in measures], left=1,
                color=["tab:green" if m.met else "tab:red" for m in measures])
    bounded = [(i, m.bound) for i, m in enumerate(measures) if m.bound is not None]
    ratios.scatter([bound for _, bound in bounded], [i for i, _ in bounded], marker="|",
                   s=200, color="black", label="target bound", zorder=3)
    ratios.set_yticks(list(positions), [f"{m.benchmark}: {m.name}" for m in measures],
                      fontsize=8)
    ratios.invert_yaxis()
    ratios.set_xscale("log")
    ratios.xaxis.set_major_formatter(ScalarFormatter())
    ratios.axvline(1.0, color="grey", linewidth=0.8)
    ratios.set_xlabel("ratio project / alternative (log scale; green: target met)")
    ratios.legend(loc="best", fontsize=8)
    for index, growth in enumerate(series):
        axis = figure.add_subplot(layout[1 + index // 2, index % 2])
        for label, values in growth.lines.items():
            axis.plot(growth.x, values, marker="o", label=label)
        axis.set_title(growth.title, fontsize=10)
        axis.set_xlabel(growth.x_label)
        axis.set_ylabel(growth.y_label)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
