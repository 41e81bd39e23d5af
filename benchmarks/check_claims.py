"""Check the project's claims against the sweep records in docs/results/*.json.

Reads the JSON written by `miniunlearn bench` (see benchmarks/run_all.sh) and prints,
per dataset/model and ratio, Mini-Unlearning next to DeltaGrad and retraining: distance
to the retrained parameters, test-accuracy gap, MIA AUC gaps, speed-ups and history
bytes (means over seeds), then a pass/fail line per claim.

    python benchmarks/check_claims.py [docs/results]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from miniunlearn.experiment.assess import PER_EXAMPLE_GAP_METRICS, average_gap


def mean(records: list[dict], key: str) -> float:
    """Mean of ``key`` over records, ignoring missing values (NaN when none)."""
    values = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def add_exact_curvature_bytes(record: dict) -> None:
    """Add ``exact_curvature_bytes``: the bytes of the exact Hessian a small model's run records
    in place of the sketch (0 for a sketch; absent for records of methods that read neither)."""
    if "diag_exact_curvature" in record:
        exact = bool(record["diag_exact_curvature"])
        record["exact_curvature_bytes"] = record.get("diag_curvature_bytes", 0) if exact else 0


def add_per_example_gaps(records: list[dict]) -> None:
    """Give each record of a sweep with the per-example attack ``pe_avg_gap``: the average gap
    whose privacy terms are U-LiRA's AUC and TPR at 1 % FPR against its cell's retrained
    model (``assess.average_gap``; sweeps recorded before it carry the population score in
    ``avg_gap``)."""
    retrained = {(r["seed"], r["ratio"]): r for r in records if r["method"] == "retrain"}
    for r in records:
        reference = retrained.get((r["seed"], r["ratio"]))
        if reference is None or r.get("ulira_auc") is None or reference.get("ulira_auc") is None:
            continue
        paired = {**r, **{f"retrain_{k}": reference.get(k) for k in PER_EXAMPLE_GAP_METRICS}}
        r["pe_avg_gap"] = average_gap(paired)


def privacy_checks(tag: str, ratio: float, groups: dict[tuple, list[dict]]) -> list[tuple[str, bool]]:
    """The per-example privacy score against the original model: on every seed, U-LiRA's AUC
    separates ``none`` from retraining (by at least 0.1) where the population attack's MIA
    efficacy may not, and the average gap built on it ranks ``none`` last."""
    retrained = {r["seed"]: r for r in groups[(ratio, "retrain")]}
    pairs = [(r, retrained[r["seed"]]) for r in groups[(ratio, "none")] if r["seed"] in retrained]
    auc_gaps = [n["ulira_auc"] - t["ulira_auc"] for n, t in pairs]
    efficacy_gaps = [n["mia_efficacy"] - t["mia_efficacy"] for n, t in pairs]
    checks = [
        (
            f"{tag}: U-LiRA AUC separates none from retraining on every seed (gaps "
            f"{', '.join(f'{g:+.3f}' for g in auc_gaps)}; MIA efficacy gaps "
            f"{', '.join(f'{g:+.3f}' for g in efficacy_gaps)})",
            bool(auc_gaps) and min(auc_gaps) >= 0.1,
        )
    ]
    gaps = {m: mean(g, "pe_avg_gap") for (q, m), g in groups.items() if q == ratio and m != "retrain"}
    gaps = {m: v for m, v in gaps.items() if not np.isnan(v)}
    if len(gaps) > 1 or "none" in gaps:
        worst = max(gaps, key=gaps.get)
        listed = ", ".join(f"{m} {v:.2f}" for m, v in sorted(gaps.items(), key=lambda kv: kv[1]))
        checks.append((f"{tag}: the per-example average gap ranks none last ({listed})", worst == "none"))
    return checks


def add_accuracy_gap(record: dict) -> None:
    """Add ``acc_gap``: the mean absolute retain/forget/test accuracy gap to retraining, in
    points (the average gap without its MIA-efficacy term, which is noisy on these models)."""
    gaps = [record.get(f"{split}_acc_gap") for split in ("retain", "forget", "test")]
    if all(g is not None for g in gaps):
        record["acc_gap"] = 100 * float(np.mean(np.abs(gaps)))


def cell(records: list[dict], key: str, spec: str, scale: float = 1.0) -> str:
    """The formatted mean of ``key`` (times ``scale``), or "–" when it was not measured."""
    value = mean(records, key)
    return "–" if np.isnan(value) else format(scale * value, spec)


# mini's mean distance to retraining before the curvature sketch (MNIST preset, 3 seeds;
# the mini rows of docs/results/mnist-logreg.json)
PREVIOUS_DISTANCE = {("mnist", 0.1): 0.000581, ("mnist", 0.5): 0.001529}


def peer_checks(
    tag: str, dataset: str, ratio: float, mini: list[dict], peers: dict[str, list[dict]]
) -> list[tuple[str, bool]]:
    """The targets of the flagship against its strongest history-free peers (``peers``: the
    records of warmstart, nystrom and exact-newton present): at most 5 passes a request, at least 3x fewer
    passes and 2x less time than the peer with the fewest passes, the same or a smaller
    distance to retraining, retraining's test accuracy, recording at most 5 % of training's
    passes, paid back within 10 requests at 10 %, and a float64 warmstart that converged."""
    passes = mean(mini, "passes")
    dist = mean(mini, "dist_to_retrain")
    name, peer = min(peers.items(), key=lambda kv: mean(kv[1], "passes"))
    peer_passes, peer_dist = mean(peer, "passes"), mean(peer, "dist_to_retrain")
    speed = min(mean(p, "time_s") for p in peers.values()) / mean(mini, "time_s")
    checks = [
        (f"{tag}: mini uses <= 5 passes ({passes:.1f})", passes <= 5),
        (
            f"{tag}: mini uses >= 3x fewer passes than {name} ({peer_passes / passes:.1f}x)",
            peer_passes >= 3 * passes,
        ),
        (f"{tag}: mini >= 2x faster than the fastest peer in wall time ({speed:.1f}x)", speed >= 2),
        (
            f"{tag}: mini no farther from retraining than {name} ({dist:.3g} vs {peer_dist:.3g})",
            dist <= peer_dist * 1.05,
        ),
        (
            f"{tag}: mini test accuracy within 0.1 points of retraining "
            f"({100 * mean(mini, 'test_acc_gap'):+.2f})",
            abs(mean(mini, "test_acc_gap")) <= 0.001,
        ),
    ]
    recording, training = mean(mini, "recording_passes"), mean(mini, "train_passes")
    if not np.isnan(recording) and not np.isnan(training):
        checks.append(
            (
                f"{tag}: recording <= 5 % of training's passes ({recording / training:.1%})",
                recording <= 0.05 * training,
            )
        )
        if ratio == 0.1:
            saved = mean(peer, "grad_evals") - mean(mini, "grad_evals")
            cost = mean(mini, "recording_grad_evals") - mean(peer, "recording_grad_evals")
            requests = cost / saved if saved > 0 else float("inf")
            checks.append((f"{tag}: recording paid back within 10 requests ({requests:.1f})", requests <= 10))
    if "warmstart" in peers:
        converged = [bool(r.get("diag_converged")) for r in peers["warmstart"]]
        checks.append(
            (
                f"{tag}: warmstart converged in every cell ({sum(converged)} of {len(converged)})",
                all(converged),
            )
        )
    previous = PREVIOUS_DISTANCE.get((dataset, ratio))
    if previous is not None:
        checks.append(
            (f"{tag}: mini distance no larger than before ({dist:.3g} vs {previous})", dist <= previous)
        )
    checks.extend(history_share_check(tag, mini))
    return checks


APPROXIMATE = ("retrain", "none")  # the reference rows; every other method approximates


def history_share_check(tag: str, mini: list[dict]) -> list[tuple[str, bool]]:
    """Checkpoints plus sketch at most 5 % of a per-step (DeltaGrad) history, from the records'
    ``full_history_bytes`` (none when absent); a small model's exact Hessian is exempt, its bytes shown."""
    if not any(r.get("full_history_bytes") for r in mini):
        return []
    exact = mean(mini, "exact_curvature_bytes")
    exempt = 0.0 if np.isnan(exact) else exact
    share = (mean(mini, "history_bytes") - exempt) / mean(mini, "full_history_bytes")
    text = f"{tag}: mini reads <= 5 % of a per-step (DeltaGrad) history ({share:.3%}"
    if exempt:
        text += f", besides the exempt exact Hessian of {exempt:,.0f} bytes"
    return [(text + ")", share <= 0.05)]


def leaky_checks(tag: str, ratio: float, groups: dict[tuple, list[dict]]) -> list[tuple[str, bool]]:
    """The targets for networks that memorise (sweeps with a ``none`` row and ``avg_gap``)."""
    mini, ref = groups[(ratio, "mini")], groups[(ratio, "retrain")]
    gaps = {m: mean(g, "avg_gap") for (q, m), g in groups.items() if q == ratio and m not in APPROXIMATE}
    best = min(gaps, key=lambda m: gaps[m])
    checks = [
        (f"{tag}: mini average gap <= 1.0 point ({gaps['mini']:.2f})", gaps["mini"] <= 1.0),
        (
            f"{tag}: mini has the smallest average gap of the approximate methods "
            f"(best: {best} {gaps[best]:.2f})",
            best == "mini",
        ),
        (
            f"{tag}: mini >= 5x faster than retraining ({mean(mini, 'speedup_vs_retrain'):.1f}x)",
            mean(mini, "speedup_vs_retrain") >= 5,
        ),
    ]
    if any(r.get("ulira_auc") is not None for r in mini):
        diff = mean(mini, "ulira_auc") - mean(ref, "ulira_auc")
        text = f"{tag}: mini U-LiRA AUC within 0.03 of retraining's ({diff:+.3f})"
        checks.append((text, abs(diff) <= 0.03))
    checks.extend(history_share_check(tag, mini))
    return checks


# DeltaGrad's distances to retraining logged by its authors in their MNIST logistic-regression
# regime (batch 16,384, 128 steps, lr 0.1, lam 0.005, float64): our `--preset deltagrad-paper`
AUTHORS_LOGGED = {0.01: 0.00024, 0.1: 0.00104, 0.2: 0.00184}


def paper_checks(tag: str, ratio: float, mini: list[dict], delta: list[dict]) -> list[tuple[str, bool]]:
    """The targets in DeltaGrad's own regime (sweeps whose file name holds "dgpaper")."""
    dist, delta_dist = mean(mini, "dist_to_retrain"), mean(delta, "dist_to_retrain")
    checks = []
    if ratio in AUTHORS_LOGGED:
        logged = AUTHORS_LOGGED[ratio]
        checks.append(
            (
                f"{tag}: DeltaGrad within 30 % of its authors' logged distance "
                f"({delta_dist:.5f} vs {logged:.5f})",
                abs(delta_dist - logged) <= 0.3 * logged,
            )
        )
    if ratio >= 0.2:
        text = f"{tag}: mini closer to retraining than DeltaGrad ({dist:.4g} vs {delta_dist:.4g})"
        checks.append((text, dist < delta_dist))
    else:
        text = f"{tag}: mini within 2x of DeltaGrad's distance ({dist:.4g} vs {delta_dist:.4g})"
        checks.append((text, dist <= 2 * delta_dist))
    return checks


def main() -> None:
    """Print the comparison tables and the claim checks."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    checks: list[tuple[str, bool]] = []
    for path in sorted(folder.glob("*.json")):
        records = json.loads(path.read_text())
        if not isinstance(records, list) or not records or "seed" not in records[0]:
            continue  # not a `miniunlearn bench` sweep (the frontier records, a stream)
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in records:
            add_accuracy_gap(r)
            add_exact_curvature_bytes(r)
            groups[(r["ratio"], r["method"])].append(r)
        add_per_example_gaps(records)
        ratios = sorted({r["ratio"] for r in records})
        print(
            f"\n### {path.stem} ({records[0]['dataset']}, {records[0]['model']}, "
            f"{len({r['seed'] for r in records})} seed(s))\n"
        )
        print(
            "| ratio | method | dist to retrain | test acc gap (pts) | acc gap (pts) | avg gap (pts) | "
            "avg gap, per-example (pts) | "
            "MIA efficacy (retrain) | MIA AUC (retrain) | U-LiRA AUC (retrain) | speed-up vs retrain | "
            "time (s) | passes | history bytes |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for ratio in ratios:
            for method in sorted({m for (q, m) in groups if q == ratio}):
                g = groups[(ratio, method)]
                print(
                    f"| {ratio:.0%} | {method} | {cell(g, 'dist_to_retrain', '.4g')} | "
                    f"{cell(g, 'test_acc_gap', '+.2f', 100)} | {cell(g, 'acc_gap', '.2f')} | "
                    f"{cell(g, 'avg_gap', '.2f')} | {cell(g, 'pe_avg_gap', '.2f')} | "
                    f"{cell(g, 'mia_efficacy', '.3f')} "
                    f"({cell(g, 'retrain_mia_efficacy', '.3f')}) | {cell(g, 'mia_auc', '.3f')} "
                    f"({cell(g, 'retrain_mia_auc', '.3f')}) | {cell(g, 'ulira_auc', '.3f')} "
                    f"({cell(groups.get((ratio, 'retrain'), []), 'ulira_auc', '.3f')}) | "
                    f"{cell(g, 'speedup_vs_retrain', '.1f')}x | {cell(g, 'time_s', '.2f')} | "
                    f"{cell(g, 'passes', '.1f')} | {cell(g, 'history_bytes', ',.0f')} |"
                )
            tag = f"{path.stem} @ {ratio:.0%}"
            none, retrained = groups.get((ratio, "none"), []), groups.get((ratio, "retrain"))
            if retrained and any(r.get("ulira_auc") is not None for r in none):
                checks.extend(privacy_checks(tag, ratio, groups))
            mini, delta = groups.get((ratio, "mini")), groups.get((ratio, "deltagrad"))
            if not mini:
                continue
            checks.append(
                (
                    f"{tag}: mini test accuracy within 0.3 points of retraining "
                    f"({100 * mean(mini, 'test_acc_gap'):+.2f})",
                    abs(mean(mini, "test_acc_gap")) <= 0.003,
                )
            )
            checks.append(
                (
                    f"{tag}: mini population-MIA AUC within 0.02 of retraining's "
                    f"({mean(mini, 'mia_auc') - mean(mini, 'retrain_mia_auc'):+.4f})",
                    abs(mean(mini, "mia_auc") - mean(mini, "retrain_mia_auc")) <= 0.02,
                )
            )
            if any(r.get("ulira_auc") is not None for r in mini):
                checks.append(
                    (
                        f"{tag}: mini U-LiRA AUC within 0.03 of 0.5 ({mean(mini, 'ulira_auc'):.3f})",
                        abs(mean(mini, "ulira_auc") - 0.5) <= 0.03,
                    )
                )
            if ratio >= 0.1:
                checks.append(
                    (
                        f"{tag}: mini >= 10x faster than retraining "
                        f"({mean(mini, 'speedup_vs_retrain'):.1f}x)",
                        mean(mini, "speedup_vs_retrain") >= 10,
                    )
                )
            if groups.get((ratio, "none")) and groups.get((ratio, "retrain")) and "avg_gap" in mini[0]:
                checks.extend(leaky_checks(tag, ratio, groups))
            peers = {
                m: groups[(ratio, m)]
                for m in ("warmstart", "nystrom", "exact-newton")
                if groups.get((ratio, m))
            }
            if peers:
                checks.extend(peer_checks(tag, records[0]["dataset"], ratio, mini, peers))
            if delta and "dgpaper" in path.stem:
                checks.extend(paper_checks(tag, ratio, mini, delta))
            if delta:
                speed = mean(delta, "time_s") / mean(mini, "time_s")
                if ratio >= 0.1:
                    checks.append((f"{tag}: mini >= 5x faster than DeltaGrad ({speed:.1f}x)", speed >= 5))
                if ratio >= 0.3:
                    checks.append(
                        (
                            f"{tag}: mini closer to retraining than DeltaGrad "
                            f"({mean(mini, 'dist_to_retrain'):.4g} vs {mean(delta, 'dist_to_retrain'):.4g})",
                            mean(mini, "dist_to_retrain") < mean(delta, "dist_to_retrain"),
                        )
                    )
                exact = mean(mini, "exact_curvature_bytes")
                exempt = 0.0 if np.isnan(exact) else exact
                share = (mean(mini, "history_bytes") - exempt) / mean(delta, "history_bytes")
                checks.append(
                    (f"{tag}: mini reads <= 5 % of DeltaGrad's history bytes ({share:.2%})", share <= 0.05)
                )
    print("\n### Claims\n")
    for text, ok in checks:
        print(f"- {'PASS' if ok else 'FAIL'}: {text}")


if __name__ == "__main__":
    main()
