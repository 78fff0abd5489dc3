"""The `safety-bhn` console script: train / evaluate / quickstart, and clear errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import safety_bhn

EXE = shutil.which("safety-bhn") or f"{sys.executable} -m safety_bhn.cli"


def run(*args, timeout=300):
    cmd = [*EXE.split(), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_train_then_evaluate(tmp_path):
    out = tmp_path / "runs" / "tiny"
    res = run("train", "--method", "bhn", "--hidden", 32, "--coupling-layers", 2, "--epochs", 1,
              "--eval-samples", 5, "--out", out, "--no-progress", "--device", "cpu",
              "--lr-schedule", "cosine", "--lr-warmup", 0.1, "--select", "accuracy",
              "--local-draws")  # fmt: skip
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["method"] == "bhn" and 0.5 < metrics["test"]["accuracy"] <= 1
    assert metrics["config"]["lr_schedule"] == "cosine"
    assert metrics["config"]["lr_warmup"] == 0.1 and metrics["config"]["select"] == "accuracy"
    assert metrics["config"]["options"] == {"local_draws": True}
    assert safety_bhn.load(out / "model.pt").local_draws
    res = run("evaluate", out, "--samples", 5, "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert set(again) == {"accuracy", "nll", "ece", "brier"}
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=0.02)


def test_evaluate_repeats_the_runs_own_figures_from_the_test_files_alone(tmp_path, shared_data_dir):
    from safety_bhn.runs import TrainConfig, evaluate_run, train_and_evaluate

    test_only = tmp_path / "data" / "mnist"  # evaluation needs no training files
    test_only.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_data_dir / "mnist" / name, test_only / name)
    config = TrainConfig(method="bhn", hidden=[16], coupling_layers=1, epochs=1, seed=3,
                         eval_samples=4, classes=[7, 3], device="cpu")  # fmt: skip
    run = train_and_evaluate(config, tmp_path / "run", progress=False)
    again = evaluate_run(tmp_path / "run", data_dir=str(tmp_path / "data"))
    assert again["accuracy"] == run.metrics["test"]["accuracy"]  # the run's seed and samples
    (tmp_path / "run" / "metrics.json").unlink()
    with pytest.raises(ValueError, match="model has 2 classes, but no metrics.json"):
        evaluate_run(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"it holds runs in .*run"):
        evaluate_run(tmp_path)  # the folder above the run


@pytest.mark.slow
def test_train_on_five_digits_then_score_the_held_out_five(tmp_path):
    out = tmp_path / "digits04"
    res = run("train", "--method", "mc_dropout", "--hidden", 32, "--epochs", 2, "--classes",
              0, 1, 2, 3, 4, "--eval-samples", 5, "--out", out, "--no-progress", "--device",
              "cpu")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert safety_bhn.load(out).n_classes == 5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["classes"] == [0, 1, 2, 3, 4] and metrics["test"]["accuracy"] > 0.8
    res = run("evaluate", out, "--samples", 5, "--json", "--device", "cpu")
    assert json.loads(res.stdout)["accuracy"] == pytest.approx(
        metrics["test"]["accuracy"], abs=0.02
    )
    report = tmp_path / "report"
    res = run("ood", out, "--suite", "held_out_classes,uniform_noise", "--n", 200,
              "--samples", 5, "--scores", "max_softmax", "--out", report, "--no-progress",
              "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = (report / "ood.md").read_text()
    assert "held_out_classes" in text and "uniform_noise" in text


@pytest.mark.slow
def test_quickstart_with_one_epoch(tmp_path):
    res = run("quickstart", "--epochs", 1, "--out", tmp_path / "qs", "--no-progress",
              "--device", "cpu")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "mc_dropout" in res.stdout and "What to try next" in res.stdout
    assert (tmp_path / "qs" / "reliability.png").stat().st_size > 1000
    record = json.loads((tmp_path / "qs" / "quickstart.json").read_text())["runs"]
    assert set(record) == {"bhn", "mc_dropout"}
    # a run the quickstart did not write (here: its metrics changed) is refused, not replaced
    metrics = tmp_path / "qs" / "bhn" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"epochs": 1', '"epochs": 2'))
    res = run("quickstart", "--epochs", 1, "--out", tmp_path / "qs", "--no-progress")
    assert res.returncode == 2 and "holds a run the quickstart did not write" in res.stderr


@pytest.mark.slow
def test_an_interrupted_quickstart_continues_where_it_stopped(tmp_path, monkeypatch):
    from safety_bhn import runs
    from safety_bhn.core.bhn import BHN
    from safety_bhn.quickstart import quickstart

    real_predictive = runs.predictive

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # while BHN's test set is scored, after its training

    monkeypatch.setattr(runs, "predictive", interrupted)
    out = tmp_path / "qs"
    with pytest.raises(KeyboardInterrupt):
        quickstart(out, epochs=1, device="cpu", progress=False)
    assert (out / "bhn" / runs.FIT_CHECKPOINT).is_file() and not (out / "mc_dropout").exists()
    monkeypatch.setattr(runs, "predictive", real_predictive)
    steps, real_loss = [], BHN.loss
    monkeypatch.setattr(
        BHN, "loss", lambda self, *a, **k: steps.append(1) or real_loss(self, *a, **k)
    )
    results = quickstart(out, epochs=1, device="cpu", progress=False)
    assert steps == []  # BHN's training was not repeated (it was: overwrite=True deleted it)
    assert set(results) == {"bhn", "mc_dropout"} and results["bhn"]["test"]["accuracy"] > 0.8
    assert not (out / "bhn" / runs.FIT_CHECKPOINT).exists()


def test_quickstart_still_replaces_its_runs_from_before_it_recorded_them(tmp_path):
    from dataclasses import asdict

    from safety_bhn.quickstart import _is_quickstart_run
    from safety_bhn.runs import TrainConfig

    ours = TrainConfig(method="bhn", epochs=3, eval_samples=100)
    users = TrainConfig(method="bhn", hidden=[16], eval_samples=100)
    for config, theirs in [(ours, True), (users, False)]:
        (tmp_path / "metrics.json").write_text(json.dumps({"config": asdict(config)}))
        assert _is_quickstart_run(tmp_path / "metrics.json", "bhn") is theirs


def test_train_refuses_a_folder_another_process_is_writing(tmp_path):
    from safety_bhn._io import FolderInUseError, folder_lock
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    config = TrainConfig(method="map", hidden=[8], epochs=1, eval_samples=1, device="cpu")
    with folder_lock(tmp_path / "run"), pytest.raises(FolderInUseError, match="in use"):
        train_and_evaluate(config, tmp_path / "run", progress=False)  # both finished before
    assert not (tmp_path / "run" / "model.pt").exists()


def interrupt_training(model_cls, monkeypatch, after: int = 20) -> None:
    """Make ``model_cls.loss`` raise KeyboardInterrupt at its ``after``-th call (20: in the
    third epoch of a 4500-image run at batch 500, 9 steps an epoch), as a Ctrl-C would."""
    loss, calls = model_cls.loss, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(model_cls, "loss", interrupted)


def test_an_interrupted_train_run_continues_when_started_again(tmp_path, monkeypatch):
    import safety_bhn.runs as runs

    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 0.0)
    config = runs.TrainConfig(method="mc_dropout", hidden=[16], epochs=3, eval_samples=2,
                              device="cpu", batch_size=500)  # fmt: skip
    whole = runs.train_and_evaluate(config, tmp_path / "whole", progress=False)
    model_cls = type(whole.model)
    with monkeypatch.context() as patch:
        interrupt_training(model_cls, patch)
        with pytest.raises(KeyboardInterrupt):
            runs.train_and_evaluate(config, tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / "fit-checkpoint.pt").is_file()
    again = runs.train_and_evaluate(config, tmp_path / "cut", progress=False)  # lost all before
    assert again.metrics["test"] == whole.metrics["test"]
    assert not (tmp_path / "cut" / "fit-checkpoint.pt").exists()


def test_a_train_run_interrupted_while_it_scores_the_test_set_keeps_its_training(
    tmp_path, monkeypatch
):
    """fit deleted its checkpoint before the test set was scored, and model.pt is written
    after that: an interruption there (minutes for a CNN) lost the whole training."""
    import safety_bhn.runs as runs

    config = runs.TrainConfig(method="mc_dropout", hidden=[16], epochs=2, eval_samples=2,
                              device="cpu", batch_size=500)  # fmt: skip
    whole = runs.train_and_evaluate(config, tmp_path / "whole", progress=False)
    predictive, model_cls = runs.predictive, type(whole.model)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "predictive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.train_and_evaluate(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(runs, "predictive", predictive)
    assert (tmp_path / "cut" / "fit-checkpoint.pt").is_file()
    loss, calls = model_cls.loss, []
    monkeypatch.setattr(model_cls, "loss", lambda *a, **kw: calls.append(1) or loss(*a, **kw))
    again = runs.train_and_evaluate(config, tmp_path / "cut", progress=False)
    assert not calls  # trained already: only scored
    assert again.metrics["test"] == whole.metrics["test"]
    assert again.metrics["history"]["train_loss"] == whole.metrics["history"]["train_loss"]
    assert not (tmp_path / "cut" / "fit-checkpoint.pt").exists()


def test_an_interrupted_overwrite_continues_and_an_old_runs_state_gives_way(
    tmp_path, monkeypatch, capsys
):
    """--overwrite deleted the checkpoint, so an interrupted overwrite could never continue
    (without --overwrite the old run's files refuse the folder)."""
    import safety_bhn.runs as runs

    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 0.0)
    old = runs.TrainConfig(method="mc_dropout", hidden=[16], epochs=1, eval_samples=2,
                           device="cpu", batch_size=500)  # fmt: skip
    config = runs.TrainConfig(**{**old.__dict__, "epochs": 3})
    whole = runs.train_and_evaluate(config, tmp_path / "whole", progress=False)
    runs.train_and_evaluate(old, tmp_path / "cut", progress=False)  # the run to replace
    model_cls = type(whole.model)
    with monkeypatch.context() as patch:
        interrupt_training(model_cls, patch)
        with pytest.raises(KeyboardInterrupt):
            runs.train_and_evaluate(config, tmp_path / "cut", progress=False, overwrite=True)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["config"]["epochs"] == 1
    capsys.readouterr()
    again = runs.train_and_evaluate(config, tmp_path / "cut", progress=False, overwrite=True)
    assert "resuming the training saved in" in capsys.readouterr().err
    assert again.metrics["test"] == whole.metrics["test"]
    assert not (tmp_path / "cut" / "fit-checkpoint.pt").exists()
    # a checkpoint of other settings gives way to a new overwrite rather than refusing it
    with monkeypatch.context() as patch:
        interrupt_training(model_cls, patch)
        with pytest.raises(KeyboardInterrupt):
            runs.train_and_evaluate(config, tmp_path / "cut", progress=False, overwrite=True)
    other = runs.TrainConfig(**{**config.__dict__, "seed": 3})
    seeded = runs.train_and_evaluate(other, tmp_path / "cut", progress=False, overwrite=True)
    assert seeded.metrics["config"]["seed"] == 3
    assert seeded.metrics["history"]["epochs_run"] == 3


def test_fit_refuses_to_resume_a_checkpoint_into_a_model_of_another_seed(tmp_path):
    x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
    path = tmp_path / "c.pt"
    first = safety_bhn.build_model("map", hidden=[8], in_shape=(4,), n_classes=2, seed=0)
    safety_bhn.fit(first, (x, y), epochs=2, progress=False, checkpoint=path, keep_checkpoint=True)
    other = safety_bhn.build_model("map", hidden=[8], in_shape=(4,), n_classes=2, seed=3)
    with pytest.raises(ValueError, match="was saved by another training run .init: saved"):
        safety_bhn.fit(other, (x, y), epochs=2, progress=False, checkpoint=path)  # took it before


def test_evaluate_refuses_a_model_and_metrics_from_different_runs(tmp_path):
    from safety_bhn.runs import TrainConfig, evaluate_run, train_and_evaluate

    config = TrainConfig(method="map", hidden=[8], epochs=1, eval_samples=1, device="cpu",
                         classes=[0, 1, 2])  # fmt: skip
    train_and_evaluate(config, tmp_path, progress=False)
    safety_bhn.build_model("map", hidden=[8], device="cpu").save(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="names 3 classes .* but the model has 10"):
        evaluate_run(tmp_path)  # scored a 10-class model on digits 0-2 before
    for damaged in ("[]", '{"config": []}'):  # AttributeErrors before
        (tmp_path / "metrics.json").write_text(damaged)
        with pytest.raises(ValueError, match="metrics.json is damaged"):
            evaluate_run(tmp_path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--method", "bhnn", "--out", "x"], "Did you mean 'bhn'"),
        (["train", "--arch", "transformer", "--out", "x"], "unknown architecture"),
        (["train", "--hidden", "-3", "--out", "x"], "must be positive"),
        (["train", "--epochs", "0", "--out", "x"], "must be positive"),
        (["train", "--lr-schedule", "linear", "--out", "x"], "unknown lr_schedule 'linear'"),
        (["train", "--lr-warmup", "2", "--out", "x"], "lr_warmup must lie in [0, 1]"),
        (["train", "--select", "acuracy", "--out", "x"], "Did you mean 'accuracy'"),
        (["active-learn", "--select", "lst", "--out", "x"], "Did you mean 'last'"),
        (["train", "--method", "map", "--local-draws", "--out", "x"], "--local-draws does not"),
        (["train", "--arch", "cnn", "--hidden", "8", "--out", "x"], "--hidden does not apply"),
        (
            ["train", "--method", "mc_dropout", "--coupling-layers", "3", "--out", "x"],
            "--coupling-layers does not apply to --method mc_dropout",
        ),
        (["evaluate", "runs/does-not-exist"], "no checkpoint"),
        (["evaluate", "x", "--samples", "0"], "must be positive"),
        (["train", "--device", "gpu", "--out", "x"], "did you mean 'cuda'"),
        (["train", "--out", "afile"], "afile is a file, not a run folder"),
        (["quickstart", "--out", "afile"], "afile is a file, not a folder"),
        (["train", "--epochs", "0", "--out", "x"], "must be positive"),
        (["train", "--classes", "3", "--out", "x"], "at least 2 distinct digits 0-9"),
        (["train", "--classes", "3", "12", "--out", "x"], "at least 2 distinct digits 0-9"),
        (["train", "--out", "done"], "holds a run already"),
        (["evaluate", "broken"], "broken/metrics.json is damaged (not valid JSON"),
        (
            ["train", "--method", "mc-dropout", "--coupling-layers", "3", "--out", "x"],
            "--coupling-layers does not apply to --method mc_dropout",  # trained, ignoring it
        ),
        # the run folder was created (and left) before the data was read
        (["train", "--data-dir", "nodata", "--out", "new"], "split not found"),
        (["train", "--val-size", "5000", "--out", "new"], "val_size must lie in [0, 5000)"),
        # failed at the first validation, inside the new folder, naming no seed
        (
            ["train", "--seed", str(2**64 - 1), "--out", "new"],
            "argument --seed: must be at most 9223372036854775807",
        ),
        # failed in torch ('Overflow when unpacking long long'), naming no flag
        (["explore", "--seed", str(2**64), "--steps", "5", "--out", "new"], "must be at most 9"),
        # wrote state.json, then failed in torch on every step: neither resumable nor restartable
        (
            ["active-learn", "--seed", "200000000000000", "--hidden", "8", "--out", "new"],
            "seed must be at most 92230953439942 (torch seeds hold 64 bits)",
        ),
        # trained into the working folder, clearing its hidden temp files
        (["train", "--out", ""], "--out is empty; name a run folder"),
        (["quickstart", "--out", ""], "--out is empty; name a run folder"),  # filled "."
        # trained on the embedded copy (train) or read $SAFETY_BHN_DATA (active-learn)
        (["train", "--data-dir", "", "--out", "x"], "must name a folder, got an empty string"),
        (["active-learn", "--extra", "--data-dir", " ", "--out", "x"], "must name a folder"),
        (["explore", "--steps", "5", "--out", " "], "--out is empty; name a run folder"),
        (["active-learn", "--hidden", "8", "--out", ""], "--out is empty; name a run folder"),
        # trained as without it (no KL term to anneal), before the folder was made
        (["train", "--method", "map", "--kl-anneal", "0.5", "--out", "new"], "has no KL term"),
    ],
)
def test_bad_input_gives_one_clear_line_and_nonzero_exit(args, message, tmp_path):
    (tmp_path / "afile").write_text("")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "model.pt").write_text("a run the user wants to keep")
    safety_bhn.build_model("map", hidden=[8], device="cpu").save(tmp_path / "broken" / "model.pt")
    (tmp_path / "broken" / "metrics.json").write_text("{")
    res = subprocess.run([*EXE.split(), *args], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "done" / "model.pt").read_text() == "a run the user wants to keep"
    assert not (tmp_path / "new").exists()


def test_version():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.startswith("safety-bhn 0.")


def test_help_shows_defaults():
    res = run("train", "--help")
    assert "--epochs EPOCHS       (default: 100)" in res.stdout
    assert "--seed SEED           (default: 0)" in res.stdout  # 0 is a default too


def test_evaluate_help_says_where_its_defaults_come_from():
    text = " ".join(run("evaluate", "--help").stdout.split())
    assert "(default: the run's own, with its seed" in text  # "posterior samples" before
    assert "(default: the run's own, as its metrics.json says)" in text  # nothing before


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished training run (a 784-8-10 MAP net, one epoch), to copy and damage."""
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    out = tmp_path_factory.mktemp("tiny") / "run"
    config = TrainConfig(method="map", hidden=[8], epochs=1, eval_samples=1, device="cpu")
    train_and_evaluate(config, out, progress=False)
    return out


def test_train_config_saves_names_in_canonical_spelling_and_honours_them(tmp_path):
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    # "BHN" and "MLP" passed the name check, but model_options compared them with "bhn" and
    # "mlp": a BHN of 12 couplings and 800 units trained, with metrics.json saying 1 and [8]
    config = TrainConfig(method="BHN", arch="MLP", hidden=[8], coupling_layers=1, epochs=1,
                         eval_samples=1, device="cpu", lr_schedule="Cosine",
                         select="NLL")  # fmt: skip
    run = train_and_evaluate(config, tmp_path / "run", progress=False)
    assert run.model.config["options"] == {"hidden": [8], "coupling_layers": 1}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    names = [saved[key] for key in ("method", "arch", "lr_schedule", "select")]
    assert names == ["bhn", "mlp", "cosine", "nll"]


def test_train_config_makes_paths_and_devices_plain_strings():
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from safety_bhn.runs import TrainConfig

    # both trained, then failed metrics.json after writing model.pt (over a saved run's)
    config = TrainConfig(data_dir=Path("data"), device=torch.device("cpu")).validate()
    assert (config.data_dir, config.device) == ("data", "cpu")
    json.dumps(asdict(config))
    for bad, message in [({"device": 0.5}, "device must be"), ({"data_dir": 3}, "data_dir must"),
                         ({"options": None}, "options must be a dict")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad).validate()


def test_a_failed_overwrite_leaves_the_saved_run_as_it_was(tmp_path, tiny_run, monkeypatch):
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = {name: (out / name).read_bytes() for name in ("model.pt", "metrics.json")}

    def disk_full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(
        type(safety_bhn.build_model("map", hidden=[8], device="cpu")), "save", disk_full
    )
    config = TrainConfig(method="map", hidden=[8], epochs=1, eval_samples=1, device="cpu", seed=1)
    with pytest.raises(OSError, match="No space left"):
        train_and_evaluate(config, out, progress=False, overwrite=True)
    # the old metrics.json was deleted before the new model was written
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob(".*.tmp"))


def test_train_refuses_another_commands_run_folder_and_a_runs_metrics(tmp_path):
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    config = TrainConfig(method="map", hidden=[8], epochs=1, eval_samples=1, device="cpu")
    for name, kind in [
        ("state.json", "an active-learning run"),
        ("summary.json", "an exploration run"),
    ]:
        (tmp_path / name[:-5]).mkdir()
        (tmp_path / name[:-5] / name).write_text("{}")
        for overwrite in (False, True):  # model.pt and metrics.json were written beside them
            with pytest.raises(ValueError, match=f"holds {kind}"):
                train_and_evaluate(config, tmp_path / name[:-5], False, overwrite=overwrite)
        assert sorted(p.name for p in (tmp_path / name[:-5]).iterdir()) == [name]
    (tmp_path / "kept").mkdir()  # a run whose model.pt was moved away: its figures stay
    (tmp_path / "kept" / "metrics.json").write_text('{"test": {"accuracy": 0.97}}')
    with pytest.raises(ValueError, match="holds a run already"):
        train_and_evaluate(config, tmp_path / "kept", progress=False)
    assert "0.97" in (tmp_path / "kept" / "metrics.json").read_text()


def test_train_and_evaluate_refuses_a_checkpoint_or_overwrite_it_would_ignore(tmp_path):
    """With out, the checkpoint argument was ignored (state went to out/fit-checkpoint.pt);
    without out, overwrite=True was, and a checkpoint was resumed rather than started afresh."""
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    config = TrainConfig(method="map", hidden=[8], epochs=1, eval_samples=1, device="cpu")
    with pytest.raises(ValueError, match="is for runs without out; .* drop checkpoint"):
        train_and_evaluate(config, tmp_path / "run", False, checkpoint=tmp_path / "fit.pt")
    with pytest.raises(ValueError, match="overwrite=True replaces a run saved in out, but out"):
        train_and_evaluate(config, None, False, overwrite=True, checkpoint=tmp_path / "fit.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "damage, message",
    [({"seed": None}, "seed must be a non-negative integer, got None"),
     ({"seed": 2.5}, "seed must be"), ({"eval_samples": 0}, "eval_samples must be"),
     ({"classes": 5}, "classes must be at least 2 distinct digits"),
     ({"classes": [0, 12]}, "classes must be"), ({"data_dir": 3}, "data_dir must be")],
)  # fmt: skip
def test_evaluate_names_a_damaged_setting_in_metrics_json(damage, message, tmp_path, tiny_run):
    from safety_bhn.runs import evaluate_run

    shutil.copytree(tiny_run, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    saved["config"].update(damage)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(saved))
    # "int() argument must be ... not 'NoneType'", "object of type 'int' has no len()", or a
    # silent int(2.5) before
    with pytest.raises(ValueError, match=rf"metrics.json is damaged: its config's {message}"):
        evaluate_run(tmp_path / "run")


def test_evaluate_names_the_runs_own_data_folder_when_it_is_gone(tmp_path, tiny_run):
    from safety_bhn.runs import evaluate_run

    shutil.copytree(tiny_run, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    saved["config"]["data_dir"] = str(tmp_path / "gone")  # trained on another machine
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="its metrics.json says so.*pass --data-dir") as err:
        evaluate_run(tmp_path / "run")  # "(from the data_dir argument)" before: none was given
    assert "data_dir argument" not in str(err.value) and "\n" not in str(err.value)


def test_evaluate_reads_a_checkpoint_file_without_a_suffix(tmp_path, tiny_run):
    from safety_bhn.runs import evaluate_run

    shutil.copy(tiny_run / "model.pt", tmp_path / "mymodel")  # "no checkpoint mymodel/model.pt"
    scores = evaluate_run(tmp_path / "mymodel", n_samples=1)
    assert set(scores) == {"accuracy", "nll", "ece", "brier"}


def test_train_reads_a_tilde_in_data_dir_as_the_home_folder(tmp_path, monkeypatch):
    import safety_bhn.runs as runs
    from safety_bhn.cli import main

    seen = []

    def capture(config, *args, **kwargs):
        seen.append(config.data_dir)
        raise ValueError("stop")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(runs, "train_and_evaluate", capture)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data-dir=~/data", "--out", "x"]) == 2  # the shell leaves ~ here
    assert seen == [str(tmp_path / "data")]  # "<cwd>/~/data" before


def test_active_learn_reads_a_tilde_in_data_dir_as_the_home_folder(tmp_path, monkeypatch, capsys):
    from safety_bhn.cli import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    argv = ["active-learn", "--extra", "--data-dir=~/data", "--hidden", "8", "--out", "run"]
    assert main(argv) == 2  # no data there: the error names the folder it looked in
    err = capsys.readouterr().err
    assert str(tmp_path / "home" / "data") in err and "/~/" not in err  # "<cwd>/~/data" before


@pytest.mark.parametrize(
    "record, bhn_metrics, message",
    [("[]", None, "quickstart.json is damaged"),  # AttributeError before
     ('{"runs": []}', None, "quickstart.json is damaged"),  # TypeError after training bhn
     (None, "[]", "holds a run the quickstart did not write"),  # AttributeError before
     (None, None, "mc_dropout is a file, not a folder")],  # after training bhn before
)  # fmt: skip
def test_quickstart_refuses_damaged_or_foreign_files_before_training(
    record, bhn_metrics, message, tmp_path
):
    from safety_bhn.quickstart import quickstart

    out = tmp_path / "qs"
    out.mkdir()
    if record is not None:
        (out / "quickstart.json").write_text(record)
    if bhn_metrics is not None:
        safety_bhn.build_model("map", hidden=[8], device="cpu").save(out / "bhn" / "model.pt")
        (out / "bhn" / "metrics.json").write_text(bhn_metrics)
    if record is None and bhn_metrics is None:
        (out / "mc_dropout").write_text("")
    with pytest.raises(ValueError, match=message):
        quickstart(out, epochs=1, device="cpu", progress=False)
    assert bhn_metrics is not None or not (out / "bhn").exists()


def test_importing_the_plot_modules_keeps_the_users_matplotlib_backend():
    """They switched it to Agg on import, so a notebook's inline figures stopped showing."""
    code = ("import matplotlib, safety_bhn.plots, safety_bhn.active.plots, safety_bhn.ood.plots, "
            "safety_bhn.explore.plots; print(matplotlib.get_backend())")  # fmt: skip
    env = {**os.environ, "MPLBACKEND": "svg"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "svg"


def test_train_and_evaluate_can_keep_a_finished_state_for_its_caller(tmp_path, capsys):
    """mnist5000.py's workers deleted it before the parent wrote the run's row: a parent
    stopped in between lost the run."""
    from safety_bhn.runs import TrainConfig, train_and_evaluate

    config = TrainConfig(method="map", hidden=[16], epochs=1, eval_samples=1, device="cpu")
    path = tmp_path / "state.pt"
    first = train_and_evaluate(config, progress=False, checkpoint=path, keep_checkpoint=True)
    assert path.is_file()
    capsys.readouterr()
    again = train_and_evaluate(config, progress=False, checkpoint=path)  # only scores
    assert "resuming the training saved in" in capsys.readouterr().err
    assert again.metrics["test"] == first.metrics["test"] and not path.exists()
    with pytest.raises(ValueError, match="keep_checkpoint=True keeps the file checkpoint names"):
        train_and_evaluate(config, progress=False, keep_checkpoint=True)
