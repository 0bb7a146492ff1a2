"""The printed results: one Markdown table per scenario, then the issue's targets.

Columns: throughput (items per second through all four stages) as the median
over the repeats and its min-max; the median wall time; the median throughput
as a ratio of each baseline's median; for scenarios with an ideal time, the
fraction of ideal throughput (ideal time / measured median time), once with
the nominal sleep (the issue's definition) and once with what ``time.sleep``
really takes on this machine ("real sleep": the best any implementation can do).
"""

from __future__ import annotations

from collections.abc import Sequence

from .measure import Measurement, Summary, summarize
from .peers import BASELINES
from .scenarios import Scenario, Target


def rate(x: float) -> str:
    """Items per second, short: 6.09M, 448.6k, 1.98k, 512."""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    if x >= 1e3:
        return f"{x / 1e3:.2f}k"
    return f"{x:.0f}"


def ratio(x: float) -> str:
    """A ratio with about three significant digits: 221x, 15.0x, 0.35x, 0.0045x."""
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, padded so that it also reads well in a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


class ScenarioReport:
    """Summaries of one scenario's measurements, and the ratios between them."""

    def __init__(
        self, scenario: Scenario, results: Sequence[Measurement], real_sleep: float | None = None
    ) -> None:
        self.scenario = scenario
        self.real_sleep = real_sleep
        self.results = list(results)
        self.summaries: dict[str, Summary | None] = {
            m.peer.key: summarize(scenario.n, m.seconds) for m in results
        }
        self.baselines = [b for b in BASELINES if self.summaries.get(b) is not None]

    def ratio_to(self, key: str, baseline: str) -> float | None:
        mine, base = self.summaries.get(key), self.summaries.get(baseline)
        if mine is None or base is None:
            return None
        return mine.median / base.median

    def ideal_fraction(self, key: str, real: bool = False) -> float | None:
        if real and self.real_sleep is None:
            return None
        ideal = self.scenario.ideal_seconds(self.real_sleep if real else None)
        mine = self.summaries.get(key)
        if ideal is None or mine is None:
            return None
        return ideal / mine.median_seconds

    def row(self, m: Measurement) -> list[str]:
        s = self.summaries[m.peer.key]
        if s is None:
            blanks = ["-"] * (3 + len(self.baselines) + 2 * self.has_ideal)
            return [m.peer.label, "FAILED", *blanks[1:]]
        cells = [
            m.peer.label,
            rate(s.median),
            f"{rate(s.low)}-{rate(s.high)}",
            f"{s.median_seconds:.3f}",
        ]
        for b in self.baselines:
            r = self.ratio_to(m.peer.key, b)
            cells.append("-" if r is None else ratio(r))
        if self.has_ideal:
            for real in (False, True):
                f = self.ideal_fraction(m.peer.key, real)
                cells.append("-" if f is None else f"{f:.1%}")
        return cells

    @property
    def has_ideal(self) -> bool:
        return self.scenario.ideal_seconds() is not None

    def render_table(self) -> str:
        headers = ["implementation", "items/s median", "min-max", "s median"]
        headers += [f"vs {b}" for b in self.baselines]
        if self.has_ideal:
            headers += ["of ideal", "of ideal (real sleep)"]
        return table(headers, [self.row(m) for m in self.results])

    def check(self, key: str, target: Target) -> tuple[float | None, bool]:
        """The measured value for ``target`` and whether it is met."""
        if target.baseline in ("ideal", "ideal/real"):
            value = self.ideal_fraction(key, real=target.baseline == "ideal/real")
        else:
            value = self.ratio_to(key, target.baseline)
        if value is None:
            return None, False
        return value, value > target.ratio if target.strict else value >= target.ratio

    def render_targets(self) -> list[str]:
        lines = []
        for m in self.results:
            if not m.peer.flowpipe:
                continue
            for target in self.scenario.targets:
                if target.peer is not None and target.peer != m.peer.key:
                    continue
                value, ok = self.check(m.peer.key, target)
                if value is None:
                    shown, verdict = "n/a", "not measured"
                else:
                    shown = f"{value:.1%}" if target.baseline.startswith("ideal") else ratio(value)
                    if target.overhead is not None:  # the cost, and the ratio it comes from
                        shown = f"{1 / value - 1:+.1%} ({value:.3f}x {target.baseline})"
                    verdict = "met" if ok else "MISSED"
                lines.append(f"  {m.peer.label:<20} {target.describe():<34} {shown:>8}  {verdict}")
        return lines

    def render(self) -> str:
        sc = self.scenario
        head = f"## {sc.name}: {sc.summary}"
        ideal = sc.ideal_seconds()
        if ideal is not None:
            head += f"\nideal time {ideal:.3f}s = {sc.ideal_formula()}"
            real = sc.ideal_seconds(self.real_sleep)
            if real is not None and self.real_sleep is not None:
                head += f"; with the real sleep ({self.real_sleep * 1e3:.3f} ms): {real:.3f}s"
        parts = [head, "", self.render_table()]
        targets = self.render_targets()
        if targets:
            parts += ["", "targets (from the issue):", *targets]
        return "\n".join(parts)
