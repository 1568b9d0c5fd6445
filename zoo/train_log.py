"""The Trainer's log: a CSV of one row per logged step that survives a resume, and its plot."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["CsvLog", "plot_training_curves"]


class CsvLog:
    """A CSV of dict rows; on resume, rows past the resumed step (written before a crash) are dropped."""

    def __init__(self, path: Path, keep_until: int | None):
        self.path, self.rows, self.fields = path, [], []
        if keep_until is not None and path.is_file():
            with path.open() as handle:
                reader = csv.DictReader(handle)
                self.fields = list(reader.fieldnames or [])
                self.rows = [r for r in reader if int(r["step"]) <= keep_until]
        self._rewrite()

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields)
            if self.fields:
                writer.writeheader()
            writer.writerows(self.rows)

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if any(k not in self.fields for k in row):
            self.fields += [k for k in row if k not in self.fields]
            return self._rewrite()
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.fields).writerow(row)


def plot_training_curves(csv_path: str | Path, png_path: str | Path) -> Path:
    """Loss (total and per head) and learning rate against step, from a Trainer's log.csv."""
    from matplotlib.figure import Figure

    with Path(csv_path).open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{csv_path} holds no rows to plot")
    steps = [int(r["step"]) for r in rows]
    fig = Figure(figsize=(10, 4), layout="tight")
    ax_loss, ax_lr = fig.subplots(1, 2)
    for key in [k for k in rows[0] if k == "loss" or k.startswith("loss_")]:
        values = [float(r[key]) if r[key] not in ("", "nan") else math.nan for r in rows]
        ax_loss.plot(steps, values, label=key, linewidth=1.5 if key == "loss" else 0.8)
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(steps, [float(r["lr"]) for r in rows])
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    fig.savefig(png_path, dpi=100)
    return Path(png_path)
