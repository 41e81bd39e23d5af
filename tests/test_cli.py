"""The command line end to end on bundled data, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miniunlearn.cli import main
from miniunlearn.experiment.bench import RECORD_KEYS

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--epochs",
    "200",
    "--lr",
    "1.0",
    "--lam",
    "0.02",
    "--history",
    "both",
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["-q", *TRAIN, "--out", str(out)]) == 0
    return out


def test_train_twice_with_the_same_seed_gives_byte_identical_models(tmp_path: Path, cli_run: Path) -> None:
    assert main(["-q", *TRAIN, "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        cli_run / "model.safetensors"
    ).read_bytes()
    manifest = json.loads((cli_run / "manifest.json").read_text())
    roles = {f["role"] for f in manifest["files"]}
    assert {"config", "model", "schedule", "history-mini", "history-full"} <= roles
    assert all(set(f) == {"path", "sha256", "bytes", "role"} for f in manifest["files"])


def test_forget_ledger_evaluate_and_audit(
    cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = Path(shutil.copytree(cli_run, tmp_path / "run"))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(0, 60))))
    assert main(["-q", "forget", str(run), "--ids", str(ids), "--request-id", "t1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and out["model_version"] == 1 and out["record"]["method"] == "mini"
    assert main(["-q", "forget", str(run), "--ratio", "0.05", "--seed", "1", "--method", "deltagrad"]) == 0
    capsys.readouterr()
    assert main(["ledger", str(run), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    keys = {
        "request_id",
        "state",
        "n_ids",
        "ids_sha256",
        "method",
        "model_sha256_before",
        "model_sha256_after",
        "reason",
    }
    assert len(records) == 2 and all(keys <= set(r) for r in records)
    assert main(["-q", "evaluate", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["model_version"] == 2 and abs(metrics["test_acc_gap"]) < 0.02
    assert (
        main(["-q", "audit", str(run), "--request", "t1", "--with-metrics", "--out", str(tmp_path / "a")])
        == 0
    )
    report = (tmp_path / "a" / "audit_t1.md").read_text()
    assert records[0]["ids_sha256"] in report and "60" in report
    assert (tmp_path / "a" / "audit_t1.png").stat().st_size > 5000


def test_bench_writes_records_with_every_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    code = main(
        [
            "-q",
            "bench",
            "--dataset",
            "digits",
            "--ratios",
            "0.1,0.5",
            "--methods",
            "retrain,deltagrad,warmstart,mini",
            "--seeds",
            "1",
            "--epochs",
            "200",
            # the sketch, whose bytes the 5 % budget below holds (an exact Hessian is exempt)
            "--exact-curvature-dim",
            "0",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    records = json.loads(out.read_text())
    assert len(records) == 8
    for record in records:
        assert set(RECORD_KEYS) <= set(record)
        assert record["ulira_auc"] is None
        assert record["passes"] == record["grad_evals"] / (record["n_train"] - record["n_forget"])
        assert record["dist_to_optimum"] >= 0
    retrained = [r for r in records if r["method"] == "retrain"]
    assert all(r["passes"] == 200 and r["dist_to_optimum"] > 0 for r in retrained)
    mini = {r["ratio"]: r for r in records if r["method"] == "mini"}
    delta = {r["ratio"]: r for r in records if r["method"] == "deltagrad"}
    assert mini[0.5]["dist_to_retrain"] < delta[0.5]["dist_to_retrain"]
    assert mini[0.5]["history_bytes"] < 0.05 * delta[0.5]["history_bytes"]
    # every certificate is checked against the float64 retain optimum, and holds
    assert all(r["certificate_holds"] and r["dist_to_optimum"] <= r["certified_distance"] for r in records)
    # recording is charged to the methods that read it, and bench says when it pays back
    assert mini[0.5]["recording_passes"] > 0 and retrained[0]["recording_passes"] == 0
    printed = capsys.readouterr().out
    assert "| mini |" in printed
    assert "certificates checked against the float64 retain optimum: 8 of 8 held" in printed
    assert "| 50% | warmstart |" in printed and "paid back after" in printed
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "dist_to_retrain.png",
        "mia_auc.png",
        "roc.png",
        "test_acc.png",
        "time.png",
    ]


def test_user_errors_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cli_run: Path
) -> None:
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(tmp_path / "empty-cache"))
    assert main(["-q", "train", "--dataset", "mnist", "--out", str(tmp_path / "m")]) == 2
    assert "miniunlearn fetch mnist" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert main(["-q", "forget", str(tmp_path / "nope"), "--ratio", "0.1"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["-q", "forget", str(cli_run), "--ratio", "0.1", "--method", "magic"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["-q", "forget", str(cli_run), "--ratio", "0.1", "-o", "max_steps"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["-q", "forget", str(cli_run)]) == 2
    assert "--ids FILE" in capsys.readouterr().err
    assert main(["-q", "forget", str(cli_run), "--ratio", "1.0"]) == 2
    assert "ratio" in capsys.readouterr().err
    assert main(["ledger", str(tmp_path / "nope")]) == 2  # a trained run has an (empty) ledger
    assert "not a run directory" in capsys.readouterr().err
    assert main(["-q", "bench", "--dataset", "digits", "--methods", "mini,nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["-q", "forget", str(cli_run), "--ratio", "0.1", "--ids", str(tmp_path / "ids")]) == 2
    assert "not both" in capsys.readouterr().err
    assert (
        main(
            [
                "-q",
                "train",
                "--dataset",
                "digits",
                "--model",
                "mlp",
                "--hidden",
                "8,x",
                "--out",
                str(tmp_path / "h"),
            ]
        )
        == 2
    )
    assert "--hidden" in capsys.readouterr().err
    assert main(["-q", "forget", str(cli_run), "--ratio", "0.1", "-o", "rtol=tiny"]) == 2
    assert "must be of type float" in capsys.readouterr().err
    assert main(["-q", "bench", "--dataset", "digits", "--attacks", "ulira", "--ulira-shadows", "1"]) == 2
    assert "ulira" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "imagenet", "--out", str(tmp_path / "x")])
    # non-finite numbers are refused, not turned into a NaN model or a request that does nothing
    assert main(["-q", "forget", str(cli_run), "--ratio", "0.1", "-o", "rtol=nan"]) == 2
    assert "rtol" in capsys.readouterr().err
    for flag, value in (("--lr", "inf"), ("--lam", "nan")):
        out = tmp_path / f"bad{flag}"
        assert main(["-q", "train", "--dataset", "digits", flag, value, "--out", str(out)]) == 2
        assert flag[2:] in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "forget", str(cli_run), "--ratio", "0.1", "--wait", "nan"])
    assert exit_info.value.code == 2 and "seconds" in capsys.readouterr().err


def test_methods_lists_every_method_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("mini", "deltagrad", "retrain", "finetune", "neggrad", "newton", "warmstart"):
        assert f"{name}:" in out
    # every option with its type, default, range and a line of help
    assert "max_steps (int, default 50, >= 0): step budget" in out
    assert "T0 (int, default 5, >= 1):" in out


def test_train_ends_with_accuracy_loss_gradient_convergence_and_minis_mode(tmp_path, capsys) -> None:
    from miniunlearn.experiment.summary import run_summary
    from miniunlearn.training import open_run

    assert main(["-q", "train", "--dataset", "digits", "--out", str(tmp_path / "r"), "--epochs", "30"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "gradient norm" in out and "stopped before convergence" in out
    assert "trajectory mode" in out
    summary = run_summary(open_run(tmp_path / "r"))
    assert 0.8 < summary["test_acc"] <= 1 and summary["converged"] is False
    # the reported gradient is the objective's own at the trained model
    run = open_run(tmp_path / "r")
    grad = run.objective.value_and_grad(run.load_model_params())[1]
    assert abs(summary["grad_norm"] - float(grad.norm())) < 1e-9
