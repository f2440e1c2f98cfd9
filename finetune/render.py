"""Reports as terminal tables (rich), shared by `finetune status`, `evaluate` and `report`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from app.core.schemas import DataReport, EvaluationReport


def print_evaluation(report: EvaluationReport, out: Console) -> None:
    """Scores beside the baseline, then (classification) per-class scores, the confusion
    matrix and, for two classes, the threshold table."""
    scores = Table("metric", "model", "baseline", title=f"evaluation on {report.rows} rows")
    for name, value in report.metrics.items():
        base = report.baseline.get(name)
        scores.add_row(name, f"{value:.4f}", f"{base:.4f}" if base is not None else "")
    out.print(scores)
    cutoffs = report.label_thresholds or {}
    if report.threshold is not None:
        out.print(
            f"decision thresholds per label, shared {report.threshold} (chosen on validation)"
            if cutoffs
            else f"decision threshold {report.threshold} (chosen on validation)"
        )
    if report.task in ("multi_label_classification", "token_classification"):
        name = "entity" if report.task == "token_classification" else "label"
        classes = Table(
            name, "precision", "recall", "f1", "support", *(["threshold"] * bool(cutoffs))
        )
        for row in report.per_class:
            classes.add_row(
                row.label, f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}",
                str(row.support), *([f"{cutoffs[row.label]:.2f}"] if cutoffs else []),
            )  # fmt: skip
        out.print(classes)
    if report.task == "classification":
        classes = Table("label", "precision", "recall", "f1", "support")
        for row in report.per_class:
            classes.add_row(
                row.label, f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}",
                str(row.support),
            )  # fmt: skip
        out.print(classes)
        matrix = Table("true \\ predicted", *report.labels, title="confusion matrix")
        for label, counts in zip(report.labels, report.confusion_matrix, strict=True):
            matrix.add_row(label, *(str(c) for c in counts))
        out.print(matrix)
    if report.binary is not None:
        b = report.binary
        auc = f"ROC AUC {b.roc_auc:.4f}, PR AUC {b.pr_auc:.4f}" if b.roc_auc is not None else ""
        thresholds = Table(
            "threshold", "precision", "recall", "f1", "accuracy", f"predicted {b.positive_label}",
            title=f"positive class '{b.positive_label}'  {auc}",
        )  # fmt: skip
        for t in b.thresholds:
            thresholds.add_row(
                f"{t.threshold:.1f}", f"{t.precision:.3f}", f"{t.recall:.3f}", f"{t.f1:.3f}",
                f"{t.accuracy:.3f}", str(t.predicted_positive),
            )  # fmt: skip
        out.print(thresholds)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")


def print_data_report(report: DataReport, out: Console) -> None:
    """Labels and their counts, lengths, then each finding with its rows."""
    checked = "" if report.rows_checked == report.rows else f" (first {report.rows_checked})"
    out.print(
        f"{report.filename}: {report.rows} rows{checked}, text '{report.text_column}'"
        + (f" + '{report.text_pair_column}'" if report.text_pair_column else "")
        + (f", label '{report.label_column}'" if report.label_column else "")
        + f" ({report.task})"
    )
    if report.label_counts:
        if report.task == "token_classification":
            entities = Table("entity", "entities")
            for kind, count in report.label_counts.items():
                entities.add_row(kind, str(count))
            out.print(entities)
        else:
            labels = Table("label", "rows", "share")
            for label, count in report.label_counts.items():
                labels.add_row(label, str(count), f"{count / max(report.rows_checked, 1):.1%}")
            out.print(labels)
    if report.rows_without_labels:
        out.print(f"{report.rows_without_labels} rows have no label")
    lengths = report.token_lengths
    if lengths is not None:
        out.print(
            f"tokens ({lengths.model}): median {lengths.p50}, p95 {lengths.p95}, max "
            f"{lengths.max}; {lengths.truncated_rows} rows ({lengths.truncated_share:.1%}) "
            f"longer than max_length {lengths.max_length}"
        )
    for problem in report.problems:
        out.print(f"[red]problem:[/red] {problem}", highlight=False)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if not report.problems and not report.warnings:
        out.print("no problems found")
