"""Smoke tests of the core benchmarks' --quick modes, run as a user would (subprocess)."""

import csv
import dataclasses
import json
import multiprocessing
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import torch

from safety_bhn.core.training import History

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def quick_rows(script, out, *args):
    """Run ``script --quick --out out *args``; it must succeed. Returns its CSV's rows."""
    res = run(script, "--out", out, *args)
    assert res.returncode == 0, res.stderr
    with open(out / script.replace(".py", ".csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_mnist5000_quick_writes_a_tidy_csv_table_and_plot(tmp_path):
    rows = quick_rows("mnist5000.py", tmp_path)
    assert {"method", "coupling_layers", "hidden", "seed", "test_acc", "test_nll", "ece",
            "train_seconds"} <= set(rows[0])  # fmt: skip
    assert {r["method"] for r in rows} == {"bhn", "mc_dropout", "factorial_vi", "map"}
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)
    assert {r["results_version"] for r in rows} == {"2"}  # read back as resumable rows
    assert "| hidden |" in (tmp_path / "mnist5000.md").read_text()
    assert (tmp_path / "mnist5000.png").stat().st_size > 1000


@pytest.mark.slow
def test_speed_quick_reports_ratios(tmp_path):
    rows = quick_rows("speed.py", tmp_path)
    maps = [r for r in rows if r["method"] == "map" and r["measurement"] == "predict, 1 samples"]
    assert float(maps[0]["ratio_to_map"]) == pytest.approx(1.0)
    assert "BHN training step / MC dropout's" in (tmp_path / "speed.md").read_text()


@pytest.mark.slow
def test_speed_quick_times_the_cnn_and_its_pooling(tmp_path):
    rows = quick_rows("speed.py", tmp_path, "--arch", "cnn", "--samples", "1", "3")
    measured = {(r["method"], r["measurement"]) for r in rows}
    assert ("bhn", "predict, 3 separate 1-sample calls") in measured
    assert ("factorial_vi", "predict, 3 samples, inputs not chunked") in measured
    assert sum(r["method"] == "kernel" for r in rows) == 4  # max_pool_2x2 and F.max_pool2d,
    report = (tmp_path / "speed.md").read_text()  # without and with autograd
    assert report.count("max_pool_2x2 / F.max_pool2d") == 2 and "(bar" not in report
    assert "max pool forward and backward of (1, 100, 4, 22, 22)" in report


@pytest.mark.slow
def test_bhn_prior_quick_reports_tuning_accuracy_and_active_units(tmp_path, shared_data_dir):
    rows = quick_rows("bhn_prior.py", tmp_path, "--data-dir", shared_data_dir)
    assert [(r["method"], r["prior_std"]) for r in rows] == [
        ("bhn", "1.0"),
        ("bhn", "3.0"),
        ("mc_dropout", ""),
    ]
    for r in rows[:2]:
        assert 0 <= int(r["active_units"]) <= int(r["units"]) == 32
    assert all(0.0 <= float(r["tune_acc"]) <= 1.0 for r in rows)
    assert "tuning set; not the test set" in (tmp_path / "bhn_prior.md").read_text()


@pytest.mark.slow
def test_bhn_prior_quick_with_the_init_centred_prior(tmp_path, shared_data_dir):
    rows = quick_rows("bhn_prior.py", tmp_path, "--data-dir", shared_data_dir,
              "--prior-mean", "init")  # fmt: skip
    means = [(r["method"], r["prior_mean"]) for r in rows]
    assert means == [("bhn", "init"), ("bhn", "init"), ("mc_dropout", "")]
    assert "N(g0, s^2)" in (tmp_path / "bhn_prior.md").read_text()


def test_bhn_prior_rejects_an_unknown_prior_mean(tmp_path):
    res = run("bhn_prior.py", "--out", tmp_path, "--prior-mean", "inti")
    assert res.returncode != 0
    assert "inti" in res.stderr and "init" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_al_recipe_quick_compares_schedules_on_the_tuning_set(tmp_path, shared_data_dir):
    rows = quick_rows("al_recipe.py", tmp_path, "--data-dir", shared_data_dir, "--recipes",
                      "constant", "cosine+warmup", "cosine+warmup+last")  # fmt: skip
    assert [(r["method"], r["recipe"], float(r["lr_warmup"]), r["select"]) for r in rows] == [
        ("bhn", "constant", 0.0, "nll"),
        ("bhn", "cosine+warmup", 0.05, "nll"),
        ("bhn", "cosine+warmup+last", 0.05, "last"),
        ("mc_dropout", "constant", 0.0, "nll"),
        ("mc_dropout", "cosine+warmup", 0.05, "nll"),
        ("mc_dropout", "cosine+warmup+last", 0.05, "last"),
    ]
    last = [r for r in rows if r["select"] == "last"]
    assert all(int(r["best_epoch"]) == int(r["epochs"]) - 1 for r in last)
    assert all(0.0 <= float(r["tune_acc"]) <= 1.0 for r in rows)
    assert "not the test set" in (tmp_path / "al_recipe.md").read_text()


def run_full(script, *args):
    """Run ``script`` without ``--quick`` (tiny budgets come from ``args``)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "tiny", "first", "more", "partly", "n_partly", "changed"),
    [("bhn_prior.py", ["--hidden", 16, "--coupling-layers", 2, "--epochs", 1, "--samples", 2],
      ["--prior-stds", 1.0], ["--prior-stds", 1.0, 3.0], ["--prior-mean", "init"], 2,
      ["--epochs", 2]),
     ("al_recipe.py", ["--methods", "mc_dropout", "--seeds", 0, "--labels", 40, "--train-steps",
      5, "--tune-size", 100, "--samples", 2], ["--recipes", "constant"],
      ["--recipes", "constant", "cosine"], ["--warmup", 0.1], 0, ["--lr", 0.01])],
)  # fmt: skip
def test_tuning_scripts_keep_finished_runs_and_cache_other_settings_apart(
    tmp_path, shared_data_dir, script, tiny, first, more, partly, n_partly, changed
):
    common = ["--data-dir", shared_data_dir, "--out", tmp_path, "--state", tmp_path / "state"]
    name = script.replace(".py", ".csv")

    def run_and_read(*flags):
        res = run_full(script, *common, *tiny, *flags)
        assert res.returncode == 0, res.stderr
        with open(tmp_path / name) as f:
            rows = list(csv.DictReader(f))
        files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "state").glob("*.json")}
        return rows, files

    before, cached = run_and_read(*first)
    assert len(cached) == len(before) > 0  # one file per finished run
    # one more run asked for: the finished ones are read back untouched, not retrained
    after, files = run_and_read(*more)
    assert all(files[k] == v for k, v in cached.items())
    assert len(files) == len(after) == len(before) + 1
    assert all(row in after for row in before)  # train_seconds and all: the cached rows
    assert not list((tmp_path / "state").glob("checkpoints/*.pt"))  # finished: none left
    # a setting that shapes only some runs (the BHN's prior; the warmup of +warmup recipes):
    # only those train again, into files of their own; the others are read back
    _, partly_files = run_and_read(*more, *partly)
    assert all(partly_files[k] == v for k, v in files.items())
    assert len(partly_files) == len(files) + n_partly
    # a setting that shapes every run: all train anew, none meets a cache it cannot use
    # (a run cached with other settings stopped the script halfway before)
    changed_rows, changed_files = run_and_read(*more, *changed)
    assert len(changed_files) == len(partly_files) + len(after)
    assert all(changed_files[k] == v for k, v in partly_files.items())
    assert not any(row in changed_rows for row in after)


@pytest.mark.parametrize(
    ("script", "flag", "good", "bad"),
    [("al_recipe.py", "--recipes", "cosine", "cosin+warmup"),
     ("al_recipe.py", "--recipes", "cosine+last", "cosine+last+last"),
     ("bhn_recipe.py", "--rows", "bhn-12:cos-200", "bhn-12:cos-2000")],
)  # fmt: skip
def test_recipe_scripts_reject_an_unknown_recipe_before_reading_data(
    tmp_path, script, flag, good, bad
):
    res = run(script, "--out", tmp_path, "--data-dir", tmp_path / "none", flag, good, bad)
    assert res.returncode != 0
    unknown = bad.partition(":")[2] or bad
    assert f"unknown recipe '{unknown}'" in res.stderr and "Traceback" not in res.stderr


def test_bhn_recipe_quick_scores_rows_on_the_tuning_set(tmp_path, shared_data_dir):
    rows = quick_rows("bhn_recipe.py", tmp_path, "--data-dir", shared_data_dir)
    assert [(r["method"], r["coupling_layers"], r["recipe"]) for r in rows] == [
        ("bhn", "2", "cos-200"),
        ("mc_dropout", "0", "const-200"),
    ]
    assert all(0.0 <= float(r["tune_acc"]) <= 1.0 for r in rows)
    assert 0 <= int(rows[0]["active_units"]) <= int(rows[0]["units"])
    assert "not the test set" in (tmp_path / "bhn_recipe.md").read_text()


def test_bhn_recipe_rows_parse_to_method_layers_and_recipe(benchmark_module):
    recipe = benchmark_module("bhn_recipe")
    assert recipe.parse_row("bhn-12:cos-200") == ("bhn", 12, "cos-200")
    assert recipe.parse_row("mc_dropout:const-200") == ("mc_dropout", 0, "const-200")
    with pytest.raises(ValueError, match="METHOD"):
        recipe.parse_row("dropout:cos-200")


def test_bhn_recipe_refuses_rows_of_other_settings_or_older_code(benchmark_module, tmp_path):
    recipe = benchmark_module("bhn_recipe")
    args = recipe.Args(rows=["bhn-12:cos-200"])
    row = {"row": "bhn-12:cos-200", "hidden": str(args.hidden), "seed": str(args.seed),
           "samples": str(args.samples), "epochs": "200", "results_version": "2"}  # fmt: skip
    recipe.check_resume([row], args, tmp_path / "bhn_recipe.csv")
    with pytest.raises(SystemExit, match=r"samples=100 \(asked: 5\)"):
        recipe.check_resume([row], recipe.Args(samples=5), tmp_path / "bhn_recipe.csv")
    older = {k: v for k, v in row.items() if k != "results_version"}
    with pytest.raises(SystemExit, match=r"bhn_recipe.csv \(row bhn-12:cos-200\) holds a run "
                                         "made by older code"):  # fmt: skip
        recipe.check_resume([older], args, tmp_path / "bhn_recipe.csv")


@pytest.mark.slow
def test_bhn_recipe_keeps_the_rows_of_recipes_it_was_not_asked_for(
    benchmark_module, tmp_path, shared_data_dir
):
    common = benchmark_module("common")
    other = {"row": "bhn-12:cos-200", "hidden": "8", "seed": "0", "samples": "2",
             "epochs": "200", "tune_acc": "0.9", "results_version": "2"}  # fmt: skip
    common.write_csv([other], tmp_path / "bhn_recipe.csv")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bhn_recipe.py"), "--rows", "map:const-200",
           "--hidden", "8", "--samples", "2", "--workers", "1", "--data-dir", str(shared_data_dir),
           "--out", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "bhn_recipe.csv") as f:
        rows = list(csv.DictReader(f))
    # the new row, and the other recipe's row as it was (rewritten without it before)
    assert [r["row"] for r in rows] == ["map:const-200", "bhn-12:cos-200"]
    assert {k: rows[1][k] for k in other} == other


def test_bhn_recipe_splits_keep_the_tuning_images_apart(benchmark_module, shared_data_dir):
    recipe = benchmark_module("bhn_recipe")
    args = recipe.Args(data_dir=str(shared_data_dir))
    key = lambda x: {bytes(img.flatten().numpy()) for img in (255 * x).round().byte()}  # noqa: E731
    for extra_val, n_train in ((False, 4500), (True, 5000)):
        (xtr, _), (xv, _), (xt, yt) = recipe.data(args, extra_val)
        assert (len(xtr), len(xv), len(xt)) == (n_train, 500, 2500)
        assert not key(xv) & key(xt) and not key(xtr) & key(xt)
        assert len(set(yt.tolist())) == 10  # a random half of a class-sorted file
    assert torch.equal(recipe.data(args, True)[2][0], recipe.data(args, False)[2][0])


def test_mnist5000_refuses_to_resume_runs_of_another_recipe(benchmark_module, tmp_path):
    m5k = benchmark_module("mnist5000")
    args = m5k.Args(epochs=200)
    same = {**m5k.recipe_of(args), "row": "bhn-12", "results_version": "2"}
    m5k.check_resume([same], args, tmp_path)
    # rows from before the version column (or the recipe columns) were made by older code,
    # before a fix that changed results
    for legacy in ({"row": "bhn-0"}, {k: v for k, v in same.items() if k != "results_version"}):
        with pytest.raises(SystemExit, match="made by older code .*delete its line"):
            m5k.check_resume([same, legacy], args, tmp_path)
    with pytest.raises(SystemExit, match=r"epochs=60 \(asked: 200\)"):
        m5k.check_resume([same, {**same, "epochs": "60"}], args, tmp_path)
    with pytest.raises(SystemExit, match="lr_schedule=cosine"):
        m5k.check_resume([{**same, "lr_schedule": "cosine"}], args, tmp_path)
    # rows from before the select / prior columns were trained with NLL selection, prior 1
    # and couplings' log-scales bounded by 3
    older = {k: v for k, v in same.items()
             if k not in ("select", "bhn_prior_std", "bhn_max_log_scale")}  # fmt: skip
    m5k.check_resume([older], args, tmp_path)
    with pytest.raises(SystemExit, match=r"bhn_max_log_scale=3.0 \(asked: 1.0\)"):
        m5k.check_resume([older], m5k.Args(epochs=200, bhn_max_log_scale=1.0), tmp_path)
    with pytest.raises(SystemExit, match=r"select=nll \(asked: accuracy\)"):
        m5k.check_resume([older], m5k.Args(epochs=200, select="accuracy"), tmp_path)
    with pytest.raises(SystemExit, match=r"bhn_prior_std=1.0 \(asked: 1.5\)"):
        m5k.check_resume([older], m5k.Args(epochs=200, bhn_prior_std=1.5), tmp_path)
    with pytest.raises(SystemExit, match=r"data_dir=None \(asked: /data\)"):  # mixed before
        m5k.check_resume([same], m5k.Args(epochs=200, data_dir="/data"), tmp_path)


def test_mnist5000_report_covers_the_seeds_its_command_names(benchmark_module):
    m5k = benchmark_module("mnist5000")
    rows = [{"row": "bhn-12", "method": "bhn", "coupling_layers": 12.0, "hidden": 800.0,
             "seed": float(seed), "test_acc": acc, "test_nll": 0.1, "ece": 0.01,
             "train_seconds": 1.0} for seed, acc in ((0, 0.97), (1, 0.90))]  # fmt: skip
    text = m5k.summarise(rows, m5k.Args(rows=["bhn-12"], hidden=[800], seeds=[0]), "cmd")
    assert "| 97.00 (one run) |" in text  # averaged with seed 1's 90% before
    assert "Retries of epochs" not in text  # no retried_epochs recorded: nothing to name
    retried = [{**rows[0], "retried_epochs": "8"}, {**rows[1], "retried_epochs": "0"}]
    named = m5k.summarise(retried, m5k.Args(rows=["bhn-12"], hidden=[800], seeds=[0, 1]), "c")
    assert "from its start (safety_bhn.fit): bhn-12 800 units seed 0: 8\n" in named
    assert "the 5000 MNIST training images embedded" in text
    other = m5k.summarise(rows, m5k.Args(rows=["bhn-12"], hidden=[800], data_dir="/d"), "cmd")
    assert "Data: the MNIST files in /d" in other
    rebuilt = m5k.summarise(rows, m5k.Args(rows=["bhn-12"], hidden=[800], report_only=True), "c")
    assert "Tables rebuilt on " in rebuilt and "Machine:" not in rebuilt  # not the runs' machine
    assert "run(s) in parallel" not in rebuilt and "run(s) in parallel" in text
    more = [*rows, {**rows[0], "hidden": 1200.0}, {**rows[0], "row": "mc_dropout"}]
    asked = m5k.asked_rows(more, m5k.Args(rows=["bhn-12"], hidden=[800], seeds=[0]))
    assert asked == [rows[0]]  # the plot drew every row of the CSV, the table these


def test_command_line_quotes_flags_so_the_shell_gives_them_back(benchmark_module, monkeypatch):
    common = benchmark_module("common")
    argv = ["--rows", "bhn-12", "--label", "Gal et al.'s CNN; 30 samples", "--report-only"]
    line = common.command_line("ood.py", argv, drop=["--report-only"])
    assert line.startswith("python benchmarks/ood.py ")
    assert shlex.split(line)[2:] == argv[:-1]
    monkeypatch.setattr(sys, "argv", ["ood.py", "--seeds", "0", "1"])
    assert common.command_line("ood.py") == "python benchmarks/ood.py --seeds 0 1"


def test_cached_runs_keep_their_settings_and_refuse_others(benchmark_module, tmp_path):
    common, ood = benchmark_module("common"), benchmark_module("ood")
    path = tmp_path / "state" / "run.json"
    settings = common.run_settings(ood.Args(samples=100), ood.RUN_IGNORE)
    assert "samples" in settings and "n_test" in settings
    assert "seeds" not in settings and "threads" not in settings
    assert common.load_run(path, settings) is None  # nothing cached yet
    result = {"detection": [{"auroc": 0.9}], "shift": [], "adversarial": []}
    common.save_run(path, result, settings)
    assert common.load_run(path, settings) == result
    # the same run asked for with 30 scoring samples: an error naming both counts
    fewer = common.run_settings(ood.Args(samples=30), ood.RUN_IGNORE)
    with pytest.raises(ValueError, match=r"samples=100, but this invocation asks for samples=30"):
        common.load_run(path, fewer)
    # runs made by code before a fix that changed results are refused, with the remedy: a
    # file from before settings were stored, or one from before versions were
    older = "made by older code (results version 1 (it records none: it was stored before "
    for stale in ('{"detection": [], "shift": [], "adversarial": []}',
                  json.dumps({"settings": settings, "result": result})):  # fmt: skip
        path.write_text(stale)
        with pytest.raises(ValueError, match=re.escape(older) + ".*is 2.*another --state folder"):
            common.load_run(path, settings)
    assert common.RESULTS_VERSION == 2  # a bump must update the message above
    path.write_text(json.dumps({"settings": settings, "result": result, "results_version": 3}))
    with pytest.raises(ValueError, match="made by newer code .*use that code"):
        common.load_run(path, settings)
    path.write_text(json.dumps({"results_version": 2, "settings": [1]}))  # a traceback before
    with pytest.raises(ValueError, match=r"run.json is damaged \(no settings and result\)"):
        common.load_run(path, settings)
    path.write_text(json.dumps({"settings": settings, "result": result, "results_version": "x"}))
    with pytest.raises(ValueError, match="run.json is damaged: its results version is 'x'"):
        common.load_run(path, settings)
    # an extra key does not make a cached run skip the settings check
    path.write_text(json.dumps({"settings": settings, "result": result, "note": 1,
                                "results_version": 2}))  # fmt: skip
    with pytest.raises(ValueError, match="samples=30"):
        common.load_run(path, fewer)
    path.write_text('{"settings": ')  # a JSONDecodeError before
    with pytest.raises(ValueError, match="run.json is damaged"):
        common.load_run(path, settings)
    for damage in (b"\xff\xfe\x00", b"{}", b"[1, 2]"):  # unnamed errors, or rows of nothing
        path.write_bytes(damage)
        with pytest.raises(ValueError, match="run.json is damaged"):
            common.load_run(path, settings)


def test_active_learning_report_names_diverged_retrains_from_fresh_and_read_back_rows(
    benchmark_module, tmp_path
):
    al = benchmark_module("active_learning")
    report = tmp_path / "active_learning.csv"
    head = "seed,step,n_labels,test_acc,method,acquisition"
    report.write_text(f"{head}\n0,0,20,0.5,map,random\n0,1,30,0.6,map,random\n")
    older = al.read_finished_csv(report, steps=1)[(0, "map", "random")]
    assert al.divergences(older) == []  # rows from before the columns: nothing to name
    report.write_text(f"{head},best_epoch,retried_epochs,diverged_epoch\n"
                      "0,0,20,0.5,map,random,5,0,\n0,1,30,0.6,map,random,1,3,2\n")  # fmt: skip
    rows = al.read_finished_csv(report, steps=1)[(0, "map", "random")]
    assert [(r["retried_epochs"], r["diverged_epoch"]) for r in rows] == [(0, None), (3, 2)]
    fresh = [{**rows[0], "retried_epochs": 1}, {**rows[1], "seed": 1}]
    (line,) = al.divergences(fresh)[1:]
    assert line.endswith(": map-random seed 0 step 0: 1 retries; "
                         "map-random seed 1 step 1: 3 retries, stopped at epoch 2")  # fmt: skip


def test_ood_report_names_runs_whose_training_diverged(benchmark_module):
    ood = benchmark_module("ood")
    history = History(retried_epochs=[4, 9, 9], diverged_epoch=9)
    assert ood.divergence(history) == {"retried_epochs": 3, "diverged_epoch": 9}
    rows = [{"method": "mc_dropout", "seed": 0, "ood_set": "noise"},  # cached before the record
            {"method": "bhn-12", "seed": 1, "ood_set": "noise", **ood.divergence(history)},
            {"method": "bhn-12", "seed": 1, "ood_set": "fashion", **ood.divergence(history)},
            {"method": "bhn-12", "seed": 2, "ood_set": "held_out_classes", "retried_epochs": 1,
             "diverged_epoch": None}]  # fmt: skip
    words = ood.divergence_words(rows)
    assert words.count("bhn-12 seed 1: 3 retries, stopped at epoch 9") == 1  # once per run
    assert "bhn-12 seed 2 (digits 0-4 model): 1 retries." in words and "mc_dropout" not in words
    assert ood.divergence_words(rows[:1]) == ""


def test_benchmarks_name_a_damaged_results_file(benchmark_module, tmp_path):
    al = benchmark_module("active_learning")
    report = tmp_path / "active_learning.csv"
    report.write_text("seed,step,n_labels,test_acc,method,acquisition\n0,0,20,0.5,map,random\n0,1")
    with pytest.raises(ValueError, match="active_learning.csv: line 3 is damaged"):
        al.read_finished_csv(report, steps=1)  # a TypeError traceback before
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text("{}")
    (run / al.TEST_SET_FILE).write_text('{"test_si')
    with pytest.raises(ValueError, match="benchmark_test_set.json is damaged"):
        al.check_test_size(run, 0)  # JSON's message without the file's name before
    m5k = benchmark_module("mnist5000")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mnist5000.csv").write_text("row,method,hidden,seed,test_acc\nmap,map,8")
    with pytest.raises(SystemExit, match="mnist5000.csv: line 2 is damaged"):
        m5k.main(["--rows", "map", "--hidden", "8", "--out", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "script, flags, message",
    [("mnist5000.py", ["--rows", "bhn-x"], "expected bhn-K"),
     ("speed.py", ["--repeats", "0"], "--repeats must be at least 1")],
)  # fmt: skip
def test_benchmarks_name_a_bad_value(script, flags, message):
    result = run(script, *flags)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_mnist5000_quick_keeps_the_rows_and_seeds_it_was_given(tmp_path):
    result = run("mnist5000.py", "--rows", "map", "--seeds", "7", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "mnist5000.csv") as f:
        assert [(r["row"], r["seed"]) for r in csv.DictReader(f)] == [("map", "7")]


def test_mnist5000_reads_back_only_rows_of_this_codes_results_version(benchmark_module, tmp_path):
    m5k, common = benchmark_module("mnist5000"), benchmark_module("common")
    argv = ["--rows", "map", "--hidden", "8", "--seeds", "7", "--epochs", "1", "--eval-samples",
            "2", "--out", str(tmp_path)]  # fmt: skip
    m5k.main(argv)
    with open(tmp_path / "mnist5000.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["row"], r["results_version"]) for r in rows] == [("map", "2")]
    m5k.main(argv)  # the row is read back, not retrained (its time would differ)
    with open(tmp_path / "mnist5000.csv") as f:
        assert list(csv.DictReader(f)) == rows
    # the same row without the version column: made before a fix that changed results
    common.write_csv([{k: v for k, v in rows[0].items() if k != "results_version"}],
                     tmp_path / "mnist5000.csv")  # fmt: skip
    with pytest.raises(SystemExit, match="made by older code .*delete its line to rerun"):
        m5k.main(argv)
    m5k.main([*argv, "--report-only"])  # a rebuilt report may show them as they are


def test_quick_runs_never_write_into_the_committed_results(benchmark_module):
    common = benchmark_module("common")
    root = common.RESULTS.parent.parent
    for spelt in ("benchmarks/results", "./benchmarks/results/", str(common.RESULTS)):
        assert not common.in_results(common.quick_out(str(root / spelt)))
    bandit = benchmark_module("bandit")
    args = common.quick_settings(bandit.Args(out=str(root / "benchmarks/results/")))
    assert args.out == "runs/bench-quick"  # the user's spelling kept the results folder before
    assert common.quick_out("/tmp/smoke") == "/tmp/smoke"


def test_parse_args_refuses_nan_floats_and_bad_or_repeated_seeds(benchmark_module, capsys):
    common, m5k = benchmark_module("common"), benchmark_module("mnist5000")
    for argv, message in [
        (["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
        (["--bhn-prior-std", "inf"], "expected a finite number, got 'inf'"),
        (["--seeds", "0", "-1"], "a seed must lie in 0..2**32 - 1, got -1"),  # NumPy's error
        (["--seeds", "0", "1", "0"], "seed 0 given more than once"),  # a "± 0.00" of 2 seeds
    ]:
        with pytest.raises(SystemExit):
            common.parse_args(m5k.Args, argv)
        assert message in capsys.readouterr().err
    assert common.parse_args(m5k.Args, ["--seeds", "3", "0", "--lr", "1e-4"]).lr == 1e-4


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [("active_learning", ["--acquire", "0"], "--acquire must be at least 1, got 0"),
     ("active_learning", ["--threads", "0"], "--threads must be at least 1"),
     ("active_learning", ["--test-size", "-5"], "--test-size must be at least 0, got -5"),
     ("active_learning", ["--deadline-minutes", "-1"], "--deadline-minutes must be non-negative"),
     ("active_learning", ["--methods", "map", "map", "--acquisitions", "random"],
      "--methods names map more than once"),
     ("active_learning", ["--finished-csv", "none.csv"], "--finished-csv: [Errno 2] No such file"),
     ("active_learning", ["--test-size", "20000"], "--test-size must be at most 10000"),
     ("active_learning", ["--methods", "mc_dropout", "--bhn-prior-mean", "foo"],
      "--bhn-prior-mean is a setting of bhn, which --methods leaves out"),  # accepted before
     ("active_learning", ["--arch", "cnn", "--hidden", "64"],
      "--hidden is a setting of mlp, which --arch leaves out"),
     ("active_learning", ["--max-labels", "45"], "--max-labels 45 must be initial (20) + "),
     ("al_recipe", ["--methods", "mc_dropout", "bnh"],
      "--methods bnh --recipes constant: unknown method 'bnh'"),
     ("al_recipe", ["--samples", "0"], "--samples must be at least 1, got 0"),
     ("al_recipe", ["--lr", "0"], "--methods bhn --recipes constant: lr must be a positive"),
     ("al_recipe", ["--tune-size", "0"], "--tune-size must be at least 1, got 0"),
     ("bhn_prior", ["--samples", "0"], "--samples must be at least 1, got 0"),
     ("bhn_prior", ["--prior-stds", "1.0", "0"], "--prior-stds must be positive, got 1.0 0.0"),
     ("bhn_prior", ["--lr-schedule", "cosin"], "unknown lr_schedule 'cosin'"),
     ("bhn_recipe", ["--samples", "0"], "--samples must be at least 1, got 0"),
     ("bhn_recipe", ["--device", "gpu"], "--device: unknown device 'gpu'"),
     ("bhn_recipe", ["--rows", "mc_dropout:cos-200", "mc_dropout:cos-200"],
      "--rows names mc_dropout:cos-200 more than once"),
     ("bhn_recipe", ["--rows", "mc_dropout:cos-200-anneal"],
      "row mc_dropout:cos-200-anneal: kl_anneal=0.25 ramps up the KL term"),
     ("ood", ["--arch", "cnnn"], "ood.py: error: unknown architecture 'cnnn'"),
     ("ood", ["--scores", "entropy"], "ood.py: error: --scores entropy lacks mutual_information"),
     ("ood", ["--samples", "0"], "--samples must be at least 1, got 0"),
     ("ood", ["--shift-n", "0"], "--shift-n must be at least 1, got 0"),
     ("ood", ["--epochs", "0"], "row bhn-2: epochs must be a positive integer, got 0"),
     ("ood", ["--rows", "map", "--hidden", "0"], "row map: hidden must be a non-empty list"),
     ("ood_noise_scores", ["--rows", "bnh"], "ood_noise_scores.py: error: --rows: row 'bnh'"),
     ("speed", ["--hidden", "0"], "speed.py: error: hidden must be a non-empty list"),
     ("mnist5000", ["--rows", "map", "map"], "--rows names map more than once"),
     ("mnist5000", ["--hidden", "64", "64"], "--hidden names 64 more than once")],
)  # fmt: skip
def test_benchmarks_refuse_a_bad_flag_before_any_work(
    benchmark_module, tmp_path, script, flags, message
):
    """Each gave a traceback before, most after reading the data or training other runs."""
    module = benchmark_module(script)
    where = {"active_learning": ["--runs-dir", tmp_path / "runs", "--out-dir", tmp_path],
             "speed": ["--out", tmp_path], "mnist5000": ["--out", tmp_path]}  # fmt: skip
    where = where.get(script, ["--out", tmp_path, "--data-dir", tmp_path / "none"])  # none read
    with pytest.raises(SystemExit, match=re.escape(message)):
        module.main(["--quick", *flags, *map(str, where)])
    assert not list(tmp_path.iterdir())  # nothing written


def test_ood_noise_scores_refuses_bad_samples_and_a_missing_reference(benchmark_module, tmp_path):
    ons = benchmark_module("ood_noise_scores")
    out = ["--out", str(tmp_path), "--state", str(tmp_path / "state")]
    with pytest.raises(SystemExit, match="--samples must be at least 1, got 30 0"):
        ons.main(["--samples", "30", "0", "--reference", "", *out])  # a traceback before
    with pytest.raises(SystemExit, match="--samples names 30 more than once"):
        ons.main(["--samples", "30", "30", "--reference", "", *out])
    with pytest.raises(SystemExit, match="--reference .*none.csv: no such file"):
        ons.main(["--reference", str(tmp_path / "none.csv"), *out])
    assert not list(tmp_path.iterdir())


def test_ood_noise_scores_reads_names_in_any_spelling(benchmark_module, monkeypatch, tmp_path):
    ons = benchmark_module("ood_noise_scores")
    seen = {}

    def stop(script, args, **kwargs):
        seen.update(arch=args.arch, select=args.select)
        raise SystemExit("stopped before any work")

    monkeypatch.setattr(ons.ood, "check_settings", stop)
    with pytest.raises(SystemExit, match="stopped"):  # "MLP" built the CNN's options before
        ons.main(["--arch", "MLP", "--select", "LAST", "--reference", "", "--out", str(tmp_path)])
    assert seen == {"arch": "mlp", "select": "last"}
    with pytest.raises(SystemExit, match="unknown architecture 'cnnn'"):
        ons.main(["--arch", "cnnn", "--out", str(tmp_path)])


def test_quick_runs_keep_run_folders_and_reports_out_of_the_results(benchmark_module):
    common, al = benchmark_module("common"), benchmark_module("active_learning")
    inside = str(common.RESULTS / "active_learning_full")
    args = al.quick_args(al.Args(runs_dir=inside))
    assert not common.in_results(args.runs_dir)  # its state folders went there before
    assert not common.in_results(args.out_dir)
    ons = benchmark_module("ood_noise_scores")
    for spelt in (str(common.RESULTS) + "/", str(common.RESULTS / "ood_noise_scores") + "/"):
        quick = ons.quick_args(ons.Args(out=spelt))  # a trailing slash wrote into them before
        assert not common.in_results(quick.out) and not common.in_results(quick.state)
    assert ons.quick_args(ons.Args()).out == "runs/bench-quick"
    assert ons.quick_args(ons.Args(out="/tmp/smoke")).out == "/tmp/smoke"


def test_active_learning_refuses_to_continue_a_run_on_another_test_set(benchmark_module, tmp_path):
    al = benchmark_module("active_learning")
    quick = ["--quick", "--methods", "map", "--acquisitions", "random", "--runs-dir",
             str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]  # fmt: skip
    args = al.quick_args(al.parse_args(al.Args, quick))  # test_size 1000
    al.run_one(args, 0, "map", "random")  # a finished run: resumed, it reports its curve
    folder = al.run_folder(args, 0, "map", "random")
    with pytest.raises(SystemExit, match="was started with --test-size 1000, but this invocation"):
        al.main([*quick, "--test-size", "2000"])  # reported as scored on 2000 images before
    with pytest.raises(ValueError, match="--test-size 1000"):
        al.run_one(dataclasses.replace(args, test_size=0), 0, "map", "random")
    al.check_test_size(folder, 1000)  # the same test set: continued
    saved = json.loads((folder / al.TEST_SET_FILE).read_text())
    assert saved == {"test_size": 1000, "results_version": 2}
    # a run started by code before a fix that changed results (or before versions were
    # saved, or before the file existed) is refused, naming the remedy, before any run trains
    for stale in ({"test_size": 1000}, None):
        (folder / al.TEST_SET_FILE).unlink()
        if stale is not None:
            (folder / al.TEST_SET_FILE).write_text(json.dumps(stale))
        with pytest.raises(ValueError, match="made by older code .*delete that folder"):
            al.check_test_size(folder, 1000)
    with pytest.raises(SystemExit, match="made by older code"):
        al.main(quick)


def test_active_learning_refuses_runs_of_other_settings_before_any_trains(
    benchmark_module, tmp_path
):
    al, common = benchmark_module("active_learning"), benchmark_module("common")
    quick = ["--quick", "--methods", "map", "--acquisitions", "random", "--runs-dir",
             str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]  # fmt: skip
    args = al.quick_args(al.parse_args(al.Args, quick))
    al.run_one(args, 0, "map", "random")
    runs = sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_dir())
    # before: max_entropy's run trained first, then map-random's resume failed with a traceback
    changed = ["--quick", "--methods", "map", "--acquisitions", "max_entropy", "random",
               "--train-steps", "25", *quick[5:]]  # fmt: skip
    with pytest.raises(SystemExit, match="settings differ from the saved run .train_steps: saved "
                                         "20, given 25"):  # fmt: skip
        al.main(changed)
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_dir()) == runs
    # the same test set, however it is spelt
    al.check_test_size(al.run_folder(args, 0, "map", "random"), 1000)
    # a report's runs taken from its CSV must have this invocation's settings
    report = tmp_path / "earlier"
    settings = dataclasses.asdict(dataclasses.replace(args, hidden=[64], test_size=10000))
    report.mkdir()
    (report / "active_learning.csv").write_text("")
    version = f"{al.VERSION_PREFIX}2 (of the code that made these runs)"
    (report / "active_learning.md").write_text(f"# x\n- settings: {settings}\n{version}\n")
    with pytest.raises(ValueError, match=r"--hidden: \[64\] there, \[32\] here"):
        al.check_finished_settings(report / "active_learning.csv", args)
    settings["hidden"] = [32]
    (report / "active_learning.md").write_text(f"- settings: {settings}\n{version}\n")
    al.check_finished_settings(
        report / "active_learning.csv", dataclasses.replace(args, test_size=0)
    )
    # a report from before the version line: its runs were made by older code
    (report / "active_learning.md").write_text(f"- settings: {settings}\n")
    with pytest.raises(ValueError, match="made by older code .*leave out --finished-csv"):
        al.check_finished_settings(report / "active_learning.csv", args)
    # the line the benchmark writes is the one it reads back
    al.main(quick)  # reports the finished run
    written = tmp_path / "out" / "active_learning.md"
    assert f"{al.VERSION_PREFIX}{common.RESULTS_VERSION} " in written.read_text()
    al.check_finished_settings(written.with_suffix(".csv"), args)
    (report / "active_learning.md").unlink()
    with pytest.raises(ValueError, match="active_learning.md is missing"):
        al.check_finished_settings(report / "active_learning.csv", args)
    assert common.MNIST_TEST_SIZE == 10_000


def test_benchmark_workers_end_once_their_parent_is_gone(benchmark_module):
    common = benchmark_module("common")
    fork = multiprocessing.get_context("fork")  # cheap here; two benchmarks spawn
    # the parent still there: the worker works
    with ProcessPoolExecutor(1, mp_context=fork, initializer=common.stop_with_parent,
                             initargs=(0.01,)) as pool:  # fmt: skip
        assert pool.submit(sum, [1, 2]).result(timeout=60) == 3
    # told its parent was another process, the worker sees its parent gone and ends itself
    # within a check, where before an orphaned worker ran its whole task
    with ProcessPoolExecutor(1, mp_context=fork, initializer=common.stop_with_parent,
                             initargs=(0.01, -1)) as pool:  # fmt: skip
        with pytest.raises(BrokenProcessPool):
            pool.submit(time.sleep, 600).result(timeout=60)


def test_benchmark_helpers_doctests(benchmark_module):
    import doctest

    result = doctest.testmod(benchmark_module("common"))
    assert result.attempted > 10 and result.failed == 0


def test_bhn_recipe_refuses_to_keep_rows_of_other_settings(benchmark_module, tmp_path, capsys):
    recipe = benchmark_module("bhn_recipe")
    committed = recipe.RESULTS / "bhn_recipe" / "bhn_recipe.csv"
    with open(committed) as f:
        row = next(r for r in csv.DictReader(f) if r["row"] == "mc_dropout:const-200")
    assert "samples" not in row  # written before the column: scored with the default 100

    def report(*flags, **changed):
        with open(tmp_path / "bhn_recipe.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys([*row, *changed])))
            writer.writeheader()
            writer.writerow({**row, **changed})
        recipe.main(["--report-only", "--rows", "mc_dropout:const-200", "--out", str(tmp_path),
                     *flags])  # fmt: skip

    report()  # the same settings: reported
    assert "MLP 784-800-10" in capsys.readouterr().out
    for flags, changed, message in [
        (["--hidden", "400"], {}, "hidden=800 (asked: 400)"),  # reported as 400 units before
        (["--seed", "3"], {}, "seed=0 (asked: 3)"),
        (["--samples", "10"], {}, "samples=100 (asked: 10)"),
        ([], {"samples": "5", "epochs": "1"}, "samples=5 (asked: 100), epochs=1 (recipe "),
    ]:
        with pytest.raises(SystemExit, match=re.escape(message)):
            report(*flags, **changed)


def test_mnist5000_targets_cover_only_the_widths_and_rows_its_command_names(benchmark_module):
    m5k = benchmark_module("mnist5000")
    rows = [{"row": row, "method": row.partition("-")[0], "coupling_layers": 12.0,
             "hidden": hidden, "seed": 0, "test_acc": 0.95, "test_nll": 0.1, "ece": 0.01,
             "train_seconds": 1.0}
            for hidden in (800, 1200) for row in ("bhn-12", "mc_dropout")]  # fmt: skip
    both = m5k.summarise(rows, m5k.Args(seeds=[0], rows=["bhn-12", "mc_dropout"]), "cmd")
    assert "- 800 units: BHN-12" in both and "- 1200 units: BHN-12" in both
    one = m5k.summarise(rows, m5k.Args(seeds=[0], rows=["bhn-12", "mc_dropout"], hidden=[800]),
                        "cmd")  # fmt: skip
    assert "- 800 units" in one and "1200 units" not in one  # a verdict on unasked runs before
    none = m5k.summarise(rows, m5k.Args(seeds=[0], rows=["mc_dropout"]), "cmd")
    assert "units: BHN-12" not in none
    assert "Stopped early" not in both  # rows without epochs_run (the oldest) ran them all
    rows[0]["epochs_run"], rows[3]["epochs_run"] = 30, 60  # bhn-12 800 stopped; the other not
    stopped = m5k.summarise(rows, m5k.Args(seeds=[0], rows=["bhn-12", "mc_dropout"]), "cmd")
    assert stopped.endswith("is kept): bhn-12 800 units seed 0 after 30 of 60 epochs\n")
    wide = m5k.summarise(rows, m5k.Args(seeds=[0], rows=["bhn-12", "mc_dropout"], hidden=[1200]),
                         "cmd")  # fmt: skip
    assert "Stopped early" not in wide  # a run the command did not ask for


def test_ood_report_says_which_requested_runs_it_lacks(benchmark_module):
    ood = benchmark_module("ood")
    rows = [{"method": "map", "seed": 0, "ood_set": "fashion_mnist", "score": score,
             "auroc": 0.7, "fpr95": 0.5, "in_accuracy": 0.9, "train_seconds": 1.0, "threads": 1}
            for score in ood.BENCHMARK_SCORES]  # fmt: skip
    full = ood.summarise(rows, [], [], ood.Args(rows=["map"], seeds=[0]), "cmd", 1.0, 1)
    assert "Incomplete" not in full
    cached = ood.Args(rows=["map", "mc_dropout"], seeds=[0, 1], cached_only=True)
    text = ood.summarise(rows, [], [], cached, "cmd", 1.0, 1)
    assert "**Incomplete:** 3 of 4 requested (method, seed) runs" in text
    assert "map seed 1; mc_dropout seed 1" in text and "mc_dropout seed 0" in text


def test_ood_report_takes_one_accuracy_per_seed(benchmark_module):
    ood = benchmark_module("ood")
    rows = [{"method": "map", "seed": seed, "ood_set": ood_set, "score": score, "auroc": 0.7,
             "fpr95": 0.5, "in_accuracy": acc, "train_seconds": 1.0, "threads": 1}
            for seed, acc in ((0, 0.90), (1, 0.94))
            for ood_set in ("fashion_mnist", "uniform_noise", "inverted")
            for score in ood.BENCHMARK_SCORES]  # fmt: skip
    text = ood.summarise(rows, [], [], ood.Args(rows=["map"], seeds=[0, 1]), "cmd", 1.0, 1)
    # the sample std of two seeds, not of the six rows that repeat them (0.0219)
    assert f"0.9200 ± {np.std([0.90, 0.94], ddof=1):.4f}" in text and "0.0219" not in text


def test_ood_report_only_rebuilds_the_tables_from_the_csvs(benchmark_module, tmp_path):
    """A committed report rebuilt from its own CSVs: every table the same as committed, but
    the accuracy column, which is the mean ± std over seeds of the CSV's accuracies (each
    seed once; it is blanked in the copy first), and its header kept."""
    ood = benchmark_module("ood")
    src = ood.RESULTS / "ood-mlp-last"
    shutil.copytree(src, tmp_path / "r")
    old = (src / "ood.md").read_text()
    blanked = re.sub(r"^(\| [^|]+ \| \d+ \| )[^|]+ \|", r"\1 ? |", old, flags=re.M)
    assert blanked.count(" ? |") == 2  # the accuracy cells of bhn-12 and mc_dropout
    (tmp_path / "r" / "ood.md").write_text(blanked)
    ood.main(["--report-only", "--out", str(tmp_path / "r")])
    new = (tmp_path / "r" / "ood.md").read_text()
    assert new.startswith(ood.REBUILT.sub("", old.split(ood.TABLES)[0]) + "Tables rebuilt on ")
    acc = {}
    for r in csv.DictReader(open(src / "ood.csv")):
        if r["ood_set"] != "held_out_classes":
            acc.setdefault(r["method"], {})[r["seed"]] = float(r["in_accuracy"])
    checked = []
    for before, after in zip(old.split(ood.TABLES)[1].splitlines(),
                             new.split(ood.TABLES)[1].splitlines(), strict=True):  # fmt: skip
        cells, old_cells = after.split(" | "), before.split(" | ")
        method = cells[0].strip("| ")
        if method in acc and len(cells) > 3 and cells[1].isdigit():  # the best-score table
            values = list(acc[method].values())
            assert cells[2] == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
            cells[2] = old_cells[2]
            checked.append(method)
        assert cells == old_cells
    assert sorted(checked) == sorted(acc)
    ood.main(["--report-only", "--out", str(tmp_path / "r")])  # again: one note, not two
    assert (tmp_path / "r" / "ood.md").read_text().count("Tables rebuilt on ") == 1
    for argv, message in [(["--epochs", "3"], "--epochs would be ignored"),
                          (["--out", str(tmp_path)], "ood.md, which does not exist")]:  # fmt: skip
        with pytest.raises(SystemExit, match=message):
            ood.main(["--report-only", *argv])


def test_step_rebuilding_scripts_check_runs_and_steps_before_retraining(benchmark_module, tmp_path):
    from safety_bhn.cli import main as cli

    runs = tmp_path / "runs"
    assert cli(["active-learn", "--method", "mc_dropout", "--acquisition", "random", "--out",
                str(runs / "al"), "--hidden", "8", "--steps", "1", "--acquire", "5",
                "--train-steps", "2", "--eval-samples", "2", "--no-progress",
                "--device", "cpu"]) == 0  # fmt: skip
    where = ["--runs-dir", str(runs), "--out-dir", str(tmp_path / "out")]
    for script, flags, message in [  # each retrained the steps before it first (a traceback)
        ("al_class_accuracy", ["--runs", "al", "gone", "--steps", "1"],
         "run gone: no active-learning state"),
        ("al_class_accuracy", ["--runs", "al", "--steps", "1", "5"],
         "--steps 5: run al has finished steps 0..1"),
        ("al_class_accuracy", ["--runs", "al", "--steps", "1", "--threads", "0"],
         "--threads must be at least 1, got 0"),
        ("al_class_accuracy", ["--runs", "al", "--steps", "1", "--device", "gpu"],
         "--device: unknown device 'gpu'"),
        ("al_score_noise", ["--runs", "al", "--steps", "1", "--methods", "mc_dropout", "bnh"],
         "--methods bnh: unknown method 'bnh'"),
        ("al_score_noise", ["--runs", "al", "--steps", "1", "--methods", "map"],
         "method 'map' is a single network"),  # its BALD is 0: a table of ties before
        ("al_score_noise", ["--runs", "al", "--steps", "1", "--subset", "20", "--top-k", "30"],
         "--top-k 30 must be at most --subset 20"),
        ("al_score_noise", ["--runs", "al", "--steps", "1", "--samples", "1"],
         "--samples and --reference-samples must be at least 2"),
        ("al_score_noise", ["--runs", "al", "--steps", "0", "2"],
         "--steps 2: run al has finished steps 0..1"),
        ("fvi_kl", ["--run", "al", "--steps", "1"], "--run al is a mc_dropout run"),
        ("fvi_kl", ["--run", "al", "--steps", "1", "--kl-weights", "1", "-1"],
         "--kl-weights must be non-negative, got 1.0 -1.0"),  # ran silently before
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as err:
            benchmark_module(script).main([*where, *flags])
        assert str(err.value).startswith(f"{script}.py: error: ") and message in str(err.value)
    assert not (tmp_path / "out").exists()
    # a run the active-learning benchmark started records its code's results version; one
    # made by older code is refused before any step is retrained (a CLI run records none)
    common = benchmark_module("common")
    made_by = runs / "al" / common.AL_RUN_FILE
    for saved, message in [({"test_size": 0}, "run al holds a run made by older code"),
                           ([], "benchmark_test_set.json is damaged")]:  # fmt: skip
        made_by.write_text(json.dumps(saved))
        with pytest.raises(SystemExit, match=message):
            benchmark_module("al_class_accuracy").main([*where, "--runs", "al", "--steps", "1"])
    made_by.write_text(json.dumps({"test_size": 0, "results_version": common.RESULTS_VERSION}))
    assert common.check_al_steps("x", str(runs), ["al"], [1])["al"]["method"] == "mc_dropout"
    # a CLI run (no benchmark file) is checked by the model version its state began with
    made_by.unlink()
    assert common.check_al_steps("x", str(runs), ["al"], [1])["al"]["method"] == "mc_dropout"
    state_file = runs / "al" / "state.json"
    state = json.loads(state_file.read_text())
    del state["model_version"]  # as every state begun before 2026-12-07
    state_file.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match=r"run al was begun by code of an older model version \(1"):
        common.check_al_steps("x", str(runs), ["al"], [1])


def test_quick_keeps_every_flag_typed_even_at_its_default(benchmark_module):
    """quick_settings kept only flags that differed from their defaults, so '--quick --seeds
    0 1 2 --epochs 60' (the defaults) ran one seed for one epoch."""
    common, mnist5000 = benchmark_module("common"), benchmark_module("mnist5000")
    argv = ["--quick", "--seeds", "0", "1", "2", "--epochs", "60"]
    args = common.parse_args(mnist5000.Args, argv)
    assert args.given_flags == {"quick", "seeds", "epochs"}
    quick = common.quick_settings(args, seeds=[0], epochs=1, hidden=[64])
    assert (quick.seeds, quick.epochs, quick.hidden) == ([0, 1, 2], 60, [64])


@pytest.mark.parametrize("script, argv, message", [
    ("speed", ["--out", "FILE"], "--out FILE is a file, not a folder"),  # after all timings
    ("ood", ["--state", "FILE"], "--state FILE is a file, not a folder"),  # after training
    ("mnist5000", ["--val-size", "5000", "--out", "DIR"], "--val-size must be below 5000"),
    ("ood", ["--n-test", "20000", "--out", "DIR"], "--n-test must be at most 10000"),
])  # fmt: skip
def test_benchmarks_refuse_bad_folders_and_sizes_before_any_work(
    benchmark_module, tmp_path, capsys, script, argv, message
):
    (tmp_path / "afile").write_text("")
    names = {"FILE": str(tmp_path / "afile"), "DIR": str(tmp_path / "out")}
    argv = [names.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exit_:  # argparse's error, or fail()'s one line
        benchmark_module(script).main(argv)
    said = str(exit_.value) + capsys.readouterr().err
    assert message.replace("FILE", names["FILE"]) in said
    assert not (tmp_path / "out").exists()


def test_ood_keeps_a_trained_model_until_its_results_are_saved(
    benchmark_module, tmp_path, shared_data_dir, monkeypatch, capsys
):
    """The checkpoint went as soon as training ended: an interruption while the run was
    scored (the long part at full size) lost its training."""
    ood = benchmark_module("ood")
    argv = ["--quick", "--rows", "map", "--no-held-out", "--out", str(tmp_path / "out"),
            "--data-dir", str(shared_data_dir)]  # fmt: skip
    real = ood.evaluate_ood

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ood, "evaluate_ood", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ood.main(argv)
    kept = list((tmp_path / "out" / "state" / "checkpoints").glob("*.pt"))
    assert len(kept) == 1 and "map__" in kept[0].name
    monkeypatch.setattr(ood, "evaluate_ood", real)
    capsys.readouterr()
    ood.main(argv)
    assert "resuming the training saved in" in capsys.readouterr().err  # scored, not retrained
    assert not kept[0].exists()  # the results saved: the checkpoint goes
    args = ood.parse_args(ood.Args, ["--state", str(tmp_path / "s")])
    other = dataclasses.replace(args, lr=0.01)  # other settings: another file, no refusal
    assert ood.checkpoint_path("map", 10, 0, args) != ood.checkpoint_path("map", 10, 0, other)
