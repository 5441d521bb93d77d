"""A study's numbers as files for a paper: study.csv, study.md and study.tex.

One rule for numbers everywhere a person reads them (md, tex and study.html): every metric
value, mean, std and interval bound with 4 decimals (0.9767, also for loss); p-values with 3
decimals, and "<0.001" below that. study.csv is for programs, so it keeps every float at full
precision (Python's repr) and leaves unknown values empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.atomic import write_text

MISSING = "\u2013"  # an en dash where a number is unknown, as in the run report
CSV, MARKDOWN, LATEX = "study.csv", "study.md", "study.tex"
TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\u00b1": r"$\pm$",
    MISSING: "--",
}


def number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else MISSING


def mean_std(summary: Any) -> str:
    summary = summary or {}
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None:
        return MISSING
    return number(mean) if std is None else f"{number(mean)} \u00b1 {number(std)}"


def interval(summary: Any) -> str:
    low, high = ((summary or {}).get("ci95") or [None, None])[:2]
    return MISSING if low is None or high is None else f"[{number(low)}, {number(high)}]"


def pvalue(p: Any) -> str:
    if not isinstance(p, int | float):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


@dataclass
class PaperTable:
    """One table as plain text cells, rendered alike as markdown and LaTeX."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: list[bool] = field(default_factory=list)  # one per row: the best is bold
    notes: list[str] = field(default_factory=list)
    align: str = ""  # one letter per column, l or r; default: the first left, numbers right

    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


def write_paper_tables(study: dict[str, Any], folder: Path) -> list[Path]:
    """Writes study.csv, study.md and study.tex into `folder`; returns their paths."""
    tables = paper_tables(study)
    written = []
    for name, text in (
        (CSV, study_csv(study)),
        (MARKDOWN, f"# {study.get('study', 'study')}\n\n" + "\n".join(map(markdown, tables))),
        (LATEX, latex_document(tables)),
    ):
        write_text(folder / name, text)
        written.append(folder / name)
    return written


def study_csv(study: dict[str, Any]) -> str:
    """Long form: one row per table and cell, then one column per seed (seed_<k>)."""
    seeds = list(study.get("seeds") or [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fixed = ["title", "metric", "split", "cell", "n", "mean", "std", "ci_low", "ci_high"]
    writer.writerow([*fixed, "p_holm", "significant", *(f"seed_{k}" for k in seeds)])
    for table in study.get("tables") or []:
        for row in table.get("rows") or []:
            summary = row.get("summary") or {}
            low, high = (summary.get("ci95") or [None, None])[:2]
            versus = row.get("vs_best") or {}
            significant = versus.get("significant")
            values = list(row.get("values") or [])
            values += [None] * (len(seeds) - len(values))
            cells = [table.get("title"), table.get("metric"), table.get("split"), row.get("cell")]
            cells += [summary.get("n"), summary.get("mean"), summary.get("std"), low, high]
            cells += [versus.get("p_holm"), "" if significant is None else str(significant).lower()]
            writer.writerow([_raw(v) for v in [*cells, *values[: len(seeds)]]])
    return out.getvalue()


def _raw(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def paper_tables(study: dict[str, Any]) -> list[PaperTable]:
    """Every table a paper may take: one per `tables` entry, the cross-evaluation, the ladder."""
    tables = [_metric_table(table) for table in study.get("tables") or []]
    if study.get("cross_evaluation"):
        tables.append(_cross_table(study["cross_evaluation"]))
    if study.get("ladder"):
        tables.append(_ladder_table(study["ladder"]))
    return tables


def _metric_table(table: dict[str, Any]) -> PaperTable:
    rows, bold = [], []
    for row in table.get("rows") or []:
        versus = row.get("vs_best") or {}
        p = "best" if row.get("best") else pvalue(versus.get("p_holm"))
        summary = row.get("summary")
        rows.append([str(row.get("cell")), mean_std(summary), interval(summary), p])
        bold.append(bool(row.get("best")))
    caption = str(table.get("title") or f"{table.get('split')} {table.get('metric')}")
    header = ["cell", "mean \u00b1 std", "95 % CI", "p (Holm)"]
    return PaperTable(caption, header, rows, bold, [str(n) for n in table.get("notes") or []])


def _cross_table(cross: dict[str, Any]) -> PaperTable:
    sets = [str(s) for s in cross.get("sets") or []]
    rows = [
        [str(row.get("cell")), *(mean_std(s) for s in row.get("values") or [])]
        for row in cross.get("rows") or []
    ]
    caption = f"Cross-evaluation: {cross.get('metric')} of every cell on every set"
    return PaperTable(caption, ["cell", *sets], rows)


def _ladder_table(ladder: dict[str, Any]) -> PaperTable:
    rows = []
    for step in ladder.get("steps") or []:
        delta = step.get("delta")
        rows.append(
            [
                str(step.get("name")),
                overrides_text(step.get("overrides")),
                mean_std(step.get("summary")),
                mean_std(step.get("reference")),
                MISSING if delta is None else f"{delta:+.4f}",
                "adopted" if step.get("adopted") else "rejected",
            ]
        )
    header = ["step", "overrides", "mean \u00b1 std", "reference", "delta", "decision"]
    final = ladder.get("final") or {}
    notes = []
    if final:
        test = mean_std((final.get("test") or {}).get("summary"))
        note = f"Final configuration {final.get('cell')}: test {test}. {final.get('note') or ''}"
        notes.append(note.strip())
    caption = (
        f"Ladder: a step is kept when mean {ladder.get('metric')} gains more than "
        f"min_delta = {ladder.get('min_delta')}"
    )
    return PaperTable(caption, header, rows, notes=notes, align="llrrrl")


def overrides_text(overrides: Any) -> str:
    if not isinstance(overrides, dict) or not overrides:
        return MISSING
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


def markdown(table: PaperTable) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"## {table.caption}", "", line(table.header)]
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in table.alignment()) + "|")
    for k, row in enumerate(table.rows):
        bold = k < len(table.bold) and table.bold[k]
        lines.append(line([f"**{c}**" if bold else c for c in row]))
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIAL.get(char, char) for char in text)


def latex(table: PaperTable) -> str:
    def line(cells: Sequence[str], bold: bool = False) -> str:
        escaped = [tex_escape(c) for c in cells]
        return " & ".join(rf"\textbf{{{c}}}" if bold else c for c in escaped) + r" \\"

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.caption)}}}",
        rf"\begin{{tabular}}{{{table.alignment()}}}",
        r"\toprule",
        line(table.header),
        r"\midrule",
        *(line(row, k < len(table.bold) and table.bold[k]) for k, row in enumerate(table.rows)),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    lines += [rf"\par\smallskip{{\footnotesize {tex_escape(note)}}}" for note in table.notes]
    return "\n".join([*lines, r"\end{table}"]) + "\n"


def latex_document(tables: Sequence[PaperTable]) -> str:
    """The tables as a file to \\input{study.tex}; it needs \\usepackage{booktabs}."""
    head = "% cnnlab study tables: \\usepackage{booktabs} in the preamble; \\input{study.tex}\n"
    return head + "\n".join(latex(table) for table in tables)
