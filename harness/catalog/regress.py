"""`harness results regress`: a run against a baseline, one check per matched metric, JUnit XML for CI.

A metric fails when it is worse than the baseline's by more than the tolerance: by default the
noise the two runs show for that row ((median − min) / median of the time), at least
REGRESS_FLOOR; a tolerance given by the user replaces both.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from harness.catalog.compare import MetricComparison, compare
from harness.errors import EXIT_FAILED, EXIT_OK, ConfigError
from harness.results.kinds import RowKind
from harness.results.read import RunRef

REGRESS_FLOOR = 0.05
"""The default tolerance's floor: a metric at most 5 % worse than the baseline passes."""


@dataclass(frozen=True)
class Check:
    """One matched metric of the run against the baseline."""

    metric: MetricComparison
    """values[0] is the baseline's, values[1] the run's."""
    threshold: float
    """The fraction by which the run may be worse."""

    @property
    def ratio(self) -> float | None:
        """Run / baseline."""
        return self.metric.ratio(1)

    @property
    def worse_by(self) -> float | None:
        return self.metric.worse_by(1)

    @property
    def failed(self) -> bool:
        worse = self.worse_by
        return worse is not None and worse > self.threshold

    @property
    def name(self) -> str:
        return f"{self.metric.kind}.{self.metric.metric}"

    def to_row(self) -> dict[str, Any]:
        """The check as a row of a regress run directory."""
        m = self.metric
        return {"metric": self.name, "subject": m.subject_text, "unit": m.unit, "baseline": m.values[0],
                "value": m.values[1], "ratio": self.ratio, "tolerance": self.threshold}  # fmt: skip

    @property
    def message(self) -> str:
        """'gemm.tflops [dtype=bfloat16 m=128 ...]: 0.812x the baseline (19.3 % worse, tolerance 5.0 %)'."""
        m = self.metric
        where = "lower" if m.higher_is_better else "higher"
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.3f}x"
        worse = self.worse_by
        change = "unmatched" if worse is None else f"{abs(worse):.1%} {'worse' if worse > 0 else 'better'}"
        return (f"{self.name} [{m.subject_text}]: {ratio} the baseline ({change}, tolerance {self.threshold:.1%}; "
                f"{m.values[1]:.4g} vs {m.values[0]:.4g} {m.unit}, {where} is worse)")  # fmt: skip


@dataclass(frozen=True)
class Regression:
    """The verdict of a run against its baseline."""

    run_id: str
    baseline_id: str
    checks: tuple[Check, ...]
    unmatched: int
    """Identities of the baseline that the run did not measure (or whose rows failed)."""

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.failed)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """1 when a metric regressed, else 0 (the harness's exit codes)."""
        return EXIT_OK if self.passed else EXIT_FAILED

    def lines(self) -> list[str]:
        """One line per failure, then the verdict."""
        out = [f"REGRESSION {c.message}" for c in self.failures]
        verdict = "pass" if self.passed else "FAIL"
        out.append(
            f"{verdict}: {len(self.failures)} of {len(self.checks)} metrics of {self.run_id} worse than "
            f"baseline {self.baseline_id} beyond tolerance; {self.unmatched} baseline subjects not measured"
        )
        return out

    def junit_xml(self) -> bytes:
        """JUnit XML: one testsuite, one testcase per matched metric (classname kind.metric, name the subject)."""
        suite = ET.Element("testsuite", {
            "name": _xml(f"harness results regress {self.run_id} vs {self.baseline_id}"),
            "tests": str(len(self.checks)), "failures": str(len(self.failures)), "errors": "0", "skipped": "0",
            "time": "0", "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        })  # fmt: skip
        props = ET.SubElement(suite, "properties")
        for name, value in (("run", self.run_id), ("baseline", self.baseline_id), ("unmatched", str(self.unmatched))):
            ET.SubElement(props, "property", {"name": name, "value": _xml(value)})
        for check in self.checks:
            case = ET.SubElement(suite, "testcase", {"classname": _xml(check.name),
                                                     "name": _xml(check.metric.subject_text), "time": "0"})  # fmt: skip
            if check.failed:
                failure = ET.SubElement(case, "failure", {"message": _xml(check.message), "type": "regression"})
                failure.text = _xml(check.message)
        root = ET.Element("testsuites", {"name": "harness results regress", "tests": str(len(self.checks)),
                                         "failures": str(len(self.failures)), "errors": "0"})  # fmt: skip
        root.append(suite)
        ET.indent(root)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


# XML 1.0 allows no control characters but tab and newline: a stray byte in a row must not make
# the whole report unreadable for CI.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub("?", text)


def regress(run: RunRef, baseline: RunRef, kinds: Mapping[str, RowKind], tolerance: float | None = None) -> Regression:
    """Check every metric `run` shares with `baseline`. Raises ConfigError when they share no
    identity or the tolerance is not a fraction in [0, 1)."""
    if tolerance is not None and not 0 <= tolerance < 1:
        raise ConfigError(f"results.tolerance must be a fraction in [0, 1), e.g. 0.05, got {tolerance}")
    comparison = compare([baseline, run], kinds)
    checks = tuple(
        Check(m, m.threshold(1, REGRESS_FLOOR) if tolerance is None else tolerance)
        for m in comparison.metrics
        if m.values[1] is not None
    )
    unmatched = comparison.matched[0] - comparison.matched[1]
    return Regression(comparison.run_ids[1], comparison.run_ids[0], checks, unmatched)
