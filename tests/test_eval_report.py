"""Summary tables and plots of benchmark records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.evaluation.attacks import score_attack
from miniunlearn.evaluation.plots import (
    plot_all,
    plot_dist_to_retrain,
    plot_mia_auc,
    plot_roc,
    plot_test_accuracy,
    plot_time,
    plot_ulira_auc,
)
from miniunlearn.evaluation.report import markdown_table, summarise


def record(method: str, ratio: float, seed: int, **overrides: object) -> dict:
    rec = {
        "dataset": "digits",
        "model": "mlp",
        "method": method,
        "ratio": ratio,
        "seed": seed,
        "n_train": 1000,
        "n_forget": int(1000 * ratio),
        "time_s": 1.0 + seed,
        "grad_evals": 100 * (seed + 1),
        "history_bytes": None,
        "dist_to_retrain": 0.0 if method == "retrain" else 1.0 + ratio + seed,
        "test_acc": 0.9 + 0.01 * seed,
        "retain_acc": 1.0,
        "forget_acc": 0.95,
        "mia_auc": 0.5 + 0.1 * (method != "retrain"),
        "ulira_auc": None,
    }
    rec.update(overrides)
    return rec


def records() -> list[dict]:
    return [record(m, r, s) for m in ("retrain", "finetune") for r in (0.01, 0.1) for s in range(3)]


def test_summarise_groups_and_statistics() -> None:
    recs = records()
    recs[0]["test_acc"] = float("nan")  # skipped
    summary = summarise(recs)
    assert len(summary) == 4
    assert [(r["method"], r["ratio"]) for r in summary] == [
        ("finetune", 0.01),
        ("finetune", 0.1),
        ("retrain", 0.01),
        ("retrain", 0.1),
    ]
    row = summary[2]  # retrain, 1 %
    assert row["n_runs"] == 3 and row["dataset"] == "digits" and row["model"] == "mlp"
    assert row["test_acc_n"] == 2
    assert row["test_acc_mean"] == pytest.approx(0.915)
    assert row["test_acc_std"] == pytest.approx(np.std([0.91, 0.92], ddof=1))
    assert row["time_s_mean"] == pytest.approx(2.0)
    assert row["time_s_std"] == pytest.approx(1.0)
    assert row["ulira_auc_n"] == 0 and math.isnan(row["ulira_auc_mean"])  # all None
    assert "seed_mean" not in row and "dataset_mean" not in row


def test_summarise_handles_missing_values() -> None:
    recs = [record("a", 0.1, 0, ulira_auc=0.6), record("a", 0.1, 1), record("b", 0.1, 0)]
    del recs[2]["mia_auc"]
    summary = summarise(recs, metrics=["ulira_auc", "mia_auc"])
    a, b = summary
    assert a["ulira_auc_mean"] == 0.6 and math.isnan(a["ulira_auc_std"]) and a["ulira_auc_n"] == 1
    assert math.isnan(b["ulira_auc_mean"]) and math.isnan(b["mia_auc_mean"])
    assert set(a) == {
        "dataset",
        "model",
        "method",
        "ratio",
        "n_runs",
        "ulira_auc_mean",
        "ulira_auc_std",
        "ulira_auc_n",
        "mia_auc_mean",
        "mia_auc_std",
        "mia_auc_n",
    }


def test_markdown_table() -> None:
    table = markdown_table(summarise(records()))
    lines = table.strip().splitlines()
    assert lines[0].startswith("| dataset | model | method | ratio | runs | test_acc")
    assert len(lines) == 2 + 4
    assert "| digits | mlp | finetune | 1% | 3 | 0.91 ± 0.01 |" in table
    assert "ulira_auc" in lines[0] and "–" in table  # no values -> dash
    single = markdown_table(summarise([record("a", 0.05, 0)]), metrics=["test_acc"])
    assert single.strip().splitlines()[-1] == "| digits | mlp | a | 5% | 1 | 0.9 |"
    assert markdown_table([]) == ""


def test_plots_write_png(tmp_path: Path) -> None:
    recs = records()
    for fn in (plot_test_accuracy, plot_dist_to_retrain, plot_mia_auc, plot_time):
        path = fn(recs, tmp_path / f"{fn.__name__}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    written = plot_all(recs, tmp_path / "all")
    assert sorted(p.name for p in written) == [
        "dist_to_retrain.png",
        "mia_auc.png",
        "test_acc.png",
        "time.png",
    ]  # no ulira values
    rng = np.random.default_rng(0)
    res = score_attack("loss", rng.normal(1, 1, 200), rng.normal(0, 1, 200))
    roc = plot_roc({"loss": (res.fpr, res.tpr)}, tmp_path / "roc.png")
    assert roc.stat().st_size > 5000
    with pytest.raises(ValueError, match="ulira_auc"):
        plot_ulira_auc(recs, tmp_path / "u.png")


def test_importing_and_plotting_leaves_the_global_backend_alone(tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "from miniunlearn.evaluation.plots import plot_roc; "
        f"plot_roc({{'a': ([0, 1], [0, 1])}}, {str(tmp_path / 'roc.png')!r}); "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "roc.png").stat().st_size > 0


# -- readable figures: bars for one ratio, honest value axes, ROC legends outside -----------


def single_ratio_records(seeds: int = 3) -> list[dict]:
    """One ratio, four methods; the AUCs differ only by noise (0.500 .. 0.511)."""
    methods = ("retrain", "mini", "finetune", "neggrad")
    return [
        record(m, 0.1, s, mia_auc=0.5 + 0.001 * (i + s), test_acc=0.95 + 0.001 * s)
        for i, m in enumerate(methods)
        for s in range(seeds)
    ]


def _labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_single_ratio_gets_bars_per_method_with_reference_and_chance() -> None:
    from matplotlib.container import BarContainer

    from miniunlearn.evaluation.plots import AUC_MIN_RANGE, metric_figure

    fig = metric_figure(single_ratio_records(), "mia_auc", "AUC", "MIA")
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3  # one bar per method, retraining excepted
    assert [t.get_text() for t in ax.get_xticklabels()] == ["finetune", "mini", "neggrad"]
    assert bars.errorbar is not None  # std over 3 seeds
    assert {"retrain (reference)", "retrain ± std over 3 seeds", "chance (0.5)"} <= set(_labels(ax))
    chance = [ln for ln in ax.get_lines() if ln.get_label() == "chance (0.5)"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [0.5, 0.5]
    lo, hi = ax.get_ylim()
    assert lo <= AUC_MIN_RANGE[0] and hi >= AUC_MIN_RANGE[1]  # no zoom into 0.500 .. 0.511
    labels = [t for t in ax.texts if t.get_text()[:1].isdigit()]
    assert len(labels) == 3  # each bar's value, written once
    _assert_apart(fig, labels)


def _assert_apart(fig, texts) -> None:
    """No two of ``texts`` overlap once drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in texts]
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :])


def test_single_seed_bars_have_no_error_bars_and_accuracy_spans_zero_to_one() -> None:
    from matplotlib.container import BarContainer

    from miniunlearn.evaluation.plots import metric_figure

    fig = metric_figure(single_ratio_records(seeds=1), "test_acc", "acc", "Accuracy")
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and bars.errorbar is None
    assert "retrain ± std over 1 seeds" not in _labels(ax) and "chance (0.5)" not in _labels(ax)
    lo, hi = ax.get_ylim()
    assert lo <= 0.0 and hi >= 1.0


def test_multi_ratio_keeps_lines_with_a_minimum_span() -> None:
    from miniunlearn.evaluation.plots import metric_figure, value_limits
    from miniunlearn.evaluation.report import FRACTION_METRICS

    recs = [r | {"mia_auc": 0.5 + 0.002 * r["seed"]} for r in records()]
    fig = metric_figure(recs, "mia_auc", "AUC", "MIA")
    (ax,) = fig.axes
    assert not ax.containers or all(type(c).__name__ == "ErrorbarContainer" for c in ax.containers)
    assert {"finetune", "retrain (reference)", "chance (0.5)"} <= set(_labels(ax))
    lo, hi = ax.get_ylim()
    assert lo <= 0.4 and hi >= 0.6
    lo, hi = metric_figure(recs, "test_acc", "acc", "Accuracy").axes[0].get_ylim()
    assert hi - lo >= 0.1 and hi <= 1.01
    assert value_limits("other", 0.0, 1.0) is None and "mia_efficacy" in FRACTION_METRICS
    assert value_limits("auc", 0.7, 0.9) == pytest.approx((0.4 - 0.03 * 0.51, 0.91 + 0.03 * 0.51))


def test_roc_has_a_panel_per_ratio_and_legends_outside_the_axes() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from miniunlearn.evaluation.plots import MAX_ROC_CURVES, roc_figure

    rng = np.random.default_rng(0)
    methods = [
        "retrain",
        "mini",
        "deltagrad",
        "warmstart",
        "finetune",
        "neggrad",
        "newton",
        "l1sparse",
        "salun",
    ]
    curves = {}
    for ratio in ("1%", "10%", "30%"):
        for i, m in enumerate(methods):
            res = score_attack("c", rng.normal(0.1 * i, 1, 100), rng.normal(0, 1, 100))
            curves[f"{m} @ {ratio}"] = (res.fpr, res.tpr)
    fig = roc_figure(curves)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["forget ratio 1%", "forget ratio 10%", "forget ratio 30%"]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in axes:
        legend = ax.get_legend()
        labels = [t.get_text() for t in legend.get_texts()]
        assert len(labels) == MAX_ROC_CURVES + 1 and labels[0].startswith("retrain (AUC ")  # + chance
        assert "salun" in legend.get_title().get_text()  # the curve left out is named
        box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(frame) and not box.overlaps(title)
        assert not ax.title.get_window_extent(renderer).overlaps(title)
