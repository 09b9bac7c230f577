"""What an acceptance run tells people and machines: the console scorecard, report.html (one
self-contained file), report.md, junit.xml (one test case per check and subject), exclude.txt
(a Slurm node list for --exclude) and the drain lines an admin would run (printed, never run)."""

from __future__ import annotations

import base64
import html
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness import display, plots
from harness.accept import gates
from harness.accept.checks import STATUSES, Check
from harness.dist import compress_hostlist

COLOURS = {"pass": "green", "warn": "yellow", "fail": "red", "n/a": "dim"}


def flagged(checks: list[Check]) -> list[Check]:
    """Failed checks of a GPU or node (cluster-wide failures name no node)."""
    return [c for c in checks if c.status == "fail" and c.scope in ("gpu", "rank", "node")]


def bad_hosts(checks: list[Check]) -> list[str]:
    return sorted({c.host for c in flagged(checks) if c.host})


def exclude_list(checks: list[Check]) -> str:
    """The flagged nodes as one Slurm node list ('' when none), for `sbatch --exclude`."""
    hosts = bad_hosts(checks)
    return compress_hostlist(hosts) if hosts else ""


def _safe_reason(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _.,:=<>%/+-]", "", text)[:200]


def drain_lines(checks: list[Check], run_id: str) -> list[str]:
    """`scontrol update ... state=drain` per flagged node, its reason made shell-safe."""
    lines = []
    bad = flagged(checks)
    for host in bad_hosts(checks):
        names = sorted({c.name for c in bad if c.host == host})
        reason = _safe_reason(f"harness accept {run_id}: {', '.join(names)}")
        lines.append(f'scontrol update nodename={host} state=drain reason="{reason}"')
    return lines


def scorecard_rows(checks: list[Check]) -> list[dict[str, Any]]:
    """One row per check name: counts per status and the worst case's reason."""
    by_name: dict[str, list[Check]] = defaultdict(list)
    for c in checks:
        by_name[c.name].append(c)
    rows = []
    for name, group in by_name.items():
        counts = Counter(c.status for c in group)
        worst = _worst(group)
        status = "fail" if counts["fail"] else "warn" if counts["warn"] else "pass" if counts["pass"] else "n/a"
        rows.append({"check": name, "scope": group[0].scope, "status": status, **{s: counts[s] for s in STATUSES},
                     "detail": f"{worst.subject}: {worst.reason}"})  # fmt: skip
    order = {"fail": 0, "warn": 1, "pass": 2, "n/a": 3}
    return sorted(rows, key=lambda r: (order[r["status"]], r["check"]))


def _worst(group: list[Check]) -> Check:
    """The subject that did worst: the worst status first, then (for figures) the lowest value."""
    for status in ("fail", "warn", "pass", "n/a"):
        same = [c for c in group if c.status == status]
        if same:
            numbers = [c for c in same if isinstance(c.value, int | float) and not isinstance(c.value, bool)]
            return min(numbers, key=lambda c: c.value) if numbers and same[0].unit else same[0]
    return group[0]


def node_rows(checks: list[Check]) -> list[dict[str, Any]]:
    """Per node: its checks (GPU checks counted with their node) and its verdict."""
    by_host: dict[str, Counter] = defaultdict(Counter)
    for c in checks:
        if c.host:
            by_host[c.host][c.status] += 1
    return [{"node": h, **{s: n[s] for s in STATUSES}, "verdict": "fail" if n["fail"] else "pass"}
            for h, n in sorted(by_host.items())]  # fmt: skip


def console(checks: list[Check], verdict: str, exclude: str, drains: list[str], banners: Sequence[str] = ()) -> None:
    """The scorecard on the console: notes on top, one line per check, the flagged subjects, the verdict."""
    for banner in banners:
        display.console.print(f"[bold yellow]NOTE[/] {escape(banner)}", markup=True)
    table = Table(title="acceptance scorecard", title_justify="left")
    for column in ("check", "scope", "status", "pass", "warn", "fail", "n/a", "worst subject"):
        table.add_column(column)
    for r in scorecard_rows(checks):
        colour = COLOURS[r["status"]]
        table.add_row(r["check"], r["scope"], Text(r["status"].upper(), style=colour),
                      *(str(r[s]) for s in STATUSES), r["detail"])  # fmt: skip
    display.console.print(table)
    for c in flagged(checks):
        display.console.print(f"[red]FLAGGED[/] {escape(c.subject)} {escape(c.uuid or '')} {escape(c.name)}: "
                              f"{escape(c.reason)}", markup=True)  # fmt: skip
    if exclude:
        display.console.print(f"exclude.txt: {exclude}")
        for line in drains:
            display.console.print(f"  {line}", markup=False)
    colour = "green" if verdict == "pass" else "red"
    display.console.print(f"[bold {colour}]acceptance: {verdict.upper()}[/]", markup=True)


def markdown(checks: list[Check], verdict: str, meta: dict[str, Any], exclude: str, drains: list[str],
             banners: Sequence[str] = ()) -> str:  # fmt: skip
    """report.md: the same content as report.html, as Markdown tables."""
    out = [f"# Acceptance: {verdict.upper()}", "", *(f"> **Note:** {b}" for b in banners), *([""] if banners else []),
           *(f"- {k}: {v}" for k, v in meta.items()), ""]  # fmt: skip
    if flagged(checks):
        out += ["## Flagged", "", "| subject | uuid | check | value | peers' median | threshold | reason |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for c in flagged(checks):
            out.append(f"| {c.subject} | {c.uuid or ''} | {c.name} | {_fmt(c.value, c.unit)} | "
                       f"{_fmt(c.peers_median, c.unit)} | {_fmt(c.threshold, c.unit)} | {c.reason} |")  # fmt: skip
        out += ["", f"exclude.txt: `{exclude}`", "", "```", *drains, "```", ""]
    out += ["## Scorecard", "", "| check | scope | status | pass | warn | fail | n/a | worst subject |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in scorecard_rows(checks):
        out.append(f"| {r['check']} | {r['scope']} | {r['status'].upper()} | "
                   + " | ".join(str(r[s]) for s in STATUSES) + f" | {r['detail']} |")  # fmt: skip
    out += ["", "## Nodes", "", "| node | pass | warn | fail | n/a | verdict |", "|---|---|---|---|---|---|"]
    for r in node_rows(checks):
        out.append(f"| {r['node']} | " + " | ".join(str(r[s]) for s in STATUSES) + f" | {r['verdict'].upper()} |")
    return "\n".join(out) + "\n"


def _fmt(value: Any, unit: str = "") -> str:
    """A value as people read it: with its unit, bytes as GiB, large counts with separators."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if unit in ("B", "bytes"):
        return f"{value / 2**30:,.1f} GiB"
    text = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit}" if unit else text


def junit(checks: list[Check], run_id: str) -> bytes:
    """JUnit XML: a test case per check and subject; fail -> <failure>, n/a -> <skipped>,
    warn -> passes with the warning in <system-out>."""
    suite = ET.Element("testsuite", name="harness accept", tests=str(len(checks)),
                       failures=str(sum(c.status == "fail" for c in checks)), errors="0",
                       skipped=str(sum(c.status == "n/a" for c in checks)))  # fmt: skip
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="run_id", value=run_id)
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=c.subject.replace(" ", "."), name=c.name)
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.reason, type="acceptance").text = c.reason
        elif c.status == "n/a":
            ET.SubElement(case, "skipped", message=c.reason)
        elif c.status == "warn":
            ET.SubElement(case, "system-out").text = f"WARN: {c.reason}"
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def bar_plots(checks: list[Check]) -> dict[str, bytes]:
    """Per-GPU and per-node bars of every gated figure, with threshold and outlier limit drawn."""
    out = {}
    gated = [c for c in checks if isinstance(c.value, int | float) and c.unit
             and gates.declaration(c.name.removesuffix("_outlier").removesuffix("_reference"))[0]]  # fmt: skip
    for metric in dict.fromkeys(c.name for c in gated if not c.name.endswith(("_outlier", "_reference"))):
        mine = [c for c in gated if c.name == metric]
        bad = {c.subject for c in flagged(checks) if c.name.startswith(metric)}
        bars = [(c.subject, float(c.value), c.subject in bad) for c in mine]
        lines = {}
        thresholds = {c.threshold for c in mine if c.threshold is not None}
        if len(thresholds) == 1:
            lines["threshold"] = thresholds.pop()
        limits = {c.threshold for c in gated if c.name == f"{metric}_outlier" and c.threshold is not None}
        if len(limits) == 1:
            lines["outlier limit"] = limits.pop()
        out[f"{metric}.png"] = plots.figure_bars(gates.title_of(metric), mine[0].unit, bars, lines)
    return out


def _table(headers: list[str], rows: list[list[str]], statuses: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{statuses[i].replace("/", "")}"' if statuses else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}h1.pass{color:#1e8449}h1.fail{color:#c0392b}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
tr.fail td{background:#fadbd8}tr.warn td{background:#fcf3cf}tr.pass td{background:#e9f7ef}tr.na td{color:#888}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}code{background:#f4f4f4;padding:2px 4px}
p.note{background:#fcf3cf;border-left:4px solid #d4ac0d;padding:6px 10px}"""


def html_report(checks: list[Check], verdict: str, meta: dict[str, Any], exclude: str, drains: list[str],
                images: dict[str, bytes], banners: Sequence[str] = ()) -> str:  # fmt: skip
    """One self-contained page: verdict, notes, flagged items first, scorecard, nodes, plots, every check."""
    parts = [
        f'<h1 class="{verdict}" id="verdict">Acceptance: {verdict.upper()}</h1>',
        *(f'<p class="note" id="note-{i}"><b>Note:</b> {html.escape(b)}</p>' for i, b in enumerate(banners)),
        "<ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in meta.items()) + "</ul>",
    ]
    bad = flagged(checks)
    if bad:
        parts.append('<h2 id="flagged">Flagged</h2>')
        parts.append(_table(["subject", "uuid", "check", "value", "peers' median", "threshold", "reason"],
                            [[c.subject, c.uuid or "", c.name, _fmt(c.value, c.unit), _fmt(c.peers_median, c.unit),
                              _fmt(c.threshold, c.unit), c.reason] for c in bad], ["fail"] * len(bad)))  # fmt: skip
        parts.append(f"<p>exclude.txt: <code>{html.escape(exclude)}</code></p>")
        parts.append(f"<pre>{html.escape(chr(10).join(drains))}</pre>")
    score = scorecard_rows(checks)
    parts.append('<h2>Scorecard</h2><div id="scorecard">')
    parts.append(_table(["check", "scope", "status", *STATUSES, "worst subject"],
                        [[r["check"], r["scope"], r["status"].upper(), *(r[s] for s in STATUSES), r["detail"]]
                         for r in score], [r["status"] for r in score]))  # fmt: skip
    parts.append("</div><h2>Nodes</h2>")
    nodes = node_rows(checks)
    parts.append(_table(["node", *STATUSES, "verdict"], [[r["node"], *(r[s] for s in STATUSES), r["verdict"].upper()]
                                                          for r in nodes], [r["verdict"] for r in nodes]))  # fmt: skip
    if images:
        parts.append("<h2>Plots</h2>")
        for name, png in images.items():
            data = base64.b64encode(png).decode()
            parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>')
    parts.append("<h2>Every check</h2>")
    parts.append(_table(["subject", "check", "status", "value", "threshold", "reason"],
                        [[c.subject, c.name, c.status, _fmt(c.value, c.unit), _fmt(c.threshold, c.unit), c.reason]
                         for c in checks],
                        [c.status for c in checks]))  # fmt: skip
    title = f"harness accept: {verdict}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style>'
            f"</head><body>{''.join(parts)}</body></html>")  # fmt: skip
