"""Training follows the paper's recipe, resumes exactly after a kill, and stops on divergence."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch

from losslandscape import train as training
from losslandscape.checkpoints import list_checkpoints, load_model
from losslandscape.data import load_dataset
from losslandscape.evaluate import evaluate
from losslandscape.models import build_model
from losslandscape.train import TrainingDiverged, batch_size, lr_milestones, train


def _train(recipe, folder):
    return train(recipe, folder, folder / "final.pt", folder / "history.tsv", device="cpu", threads=1)


def test_lr_drops_at_the_papers_epochs():
    recipe = {"epochs": 300, "lr_milestones": [0.5, 0.75, 0.917]}
    assert lr_milestones(recipe) == [150, 225, 275]


def test_large_batch_is_the_papers_fraction_of_the_training_set():
    assert batch_size({"batch_fraction": 0.16384}, 50000) == 8192
    assert batch_size({"batch_fraction": 0.08192}, 50000) == 4096
    assert batch_size({"batch_fraction": 0.16384}, 1500) == 246
    assert batch_size({"batch_size": 128, "batch_fraction": None}, 50000) == 128


def test_training_writes_history_checkpoints_and_final(tiny_recipe, tmp_path):
    recipe = tiny_recipe("resnet20", epochs=4, save_epoch=2)
    history = _train(recipe, tmp_path)
    assert list(history.epoch) == [0, 1, 2, 3, 4]
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"epoch-000{e}.pt" for e in (0, 2, 4)]
    assert not (tmp_path / "checkpoints" / "resume.pt").exists()
    on_disk = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert list(on_disk.columns) == training.HISTORY_COLUMNS
    # the schedule: 4 epochs, drops at round(0.5*4)=2, 3, round(0.917*4)=4
    assert on_disk.lr.tolist()[1:] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    model, ckpt = load_model(tmp_path / "final.pt")
    assert ckpt["epoch"] == 4 and ckpt["recipe"] == recipe
    # the stored metrics are the model's own: re-evaluating the final weights gives the same test loss
    data = load_dataset(recipe["dataset"], recipe["data_settings"], seed=recipe["seed"])
    loss, acc = evaluate(model, data.test)
    assert loss == pytest.approx(on_disk.test_loss.iloc[-1], rel=1e-4)
    assert acc == pytest.approx(on_disk.test_acc.iloc[-1], abs=1e-3)
    assert on_disk.weight_norm.iloc[-1] == pytest.approx(training.weight_norms(model)[0], rel=1e-5)


def test_weight_norm_counts_conv_and_linear_weights_only():
    layer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        layer[0].weight.fill_(1.0)
        layer[0].bias.fill_(3.0)
    weights, params = training.weight_norms(layer)
    assert weights == pytest.approx(2.0)  # sqrt(4 * 1)
    assert params == pytest.approx(math.sqrt(4 + 2 * 9 + 2 * 1 + 0))


def test_killed_run_resumes_and_ends_identical_to_an_uninterrupted_one(tiny_recipe, tmp_path, monkeypatch):
    recipe = tiny_recipe("vgg9_sgd_bs128_wd5e-4", epochs=4)
    _train(recipe, tmp_path / "whole")

    real_epoch = training.train_one_epoch
    calls = {"n": 0}

    def dies_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed by the scheduler")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", dies_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(recipe, tmp_path / "killed")
    assert not (tmp_path / "killed" / "final.pt").exists(), "no final checkpoint before training finished"
    assert not (tmp_path / "killed" / "history.tsv").exists()

    calls["n"] = -100  # the rerun is not killed
    epochs_run = []
    monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: epochs_run.append(1) or real_epoch(*a, **k))
    _train(recipe, tmp_path / "killed")
    assert len(epochs_run) == 2, "only the two unfinished epochs are trained again"

    whole = torch.load(tmp_path / "whole" / "final.pt")["state_dict"]
    resumed = torch.load(tmp_path / "killed" / "final.pt")["state_dict"]
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "whole" / "history.tsv", sep="\t").drop(columns="seconds"),
        pd.read_csv(tmp_path / "killed" / "history.tsv", sep="\t").drop(columns="seconds"),
    )


def test_resume_state_of_another_recipe_is_not_reused(tiny_recipe, tmp_path, monkeypatch):
    recipe = tiny_recipe("resnet20", epochs=2)
    real_epoch = training.train_one_epoch

    def dies_in_second_epoch(*args, calls=[0], **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(recipe, tmp_path)
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    changed = dict(recipe, lr=0.05)
    history = _train(changed, tmp_path)
    assert history.lr.iloc[1] == pytest.approx(0.05), "training restarted with the new recipe"


def test_diverging_run_stops_with_run_and_epoch_named(tiny_recipe, tmp_path):
    recipe = tiny_recipe("resnet20_noshort", epochs=3, lr=1e6)
    with pytest.raises(TrainingDiverged) as info:
        _train(recipe, tmp_path)
    message = str(info.value)
    assert "resnet20_noshort" in message and re.search(r"at epoch [12]\b", message) and "lr" in message
    assert not (tmp_path / "final.pt").exists()


def test_warmup_runs_the_first_epochs_at_a_tenth_of_the_rate():
    recipe = {"epochs": 20, "lr_milestones": [0.5, 0.75, 0.917], "lr_gamma": 0.1, "warmup_epochs": 1}
    factors = [training.lr_factor(recipe, done) for done in range(20)]
    assert factors[:2] == pytest.approx([0.1, 1.0])
    assert factors[9:11] == pytest.approx([1.0, 0.1])  # epoch 11 runs after the drop at 10
    assert factors[-1] == pytest.approx(0.001)


def test_an_epoch_through_a_compiled_forward_matches_the_eager_one():
    """`training.compile`: the compiled forward trains the same weights and BN statistics (backend
    "eager" here, which captures the graph as inductor would, without minutes of C++ compiling)."""
    data = load_dataset("digits", {"train_size": 100}, seed=0)
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model({"model": "resnet", "depth": 8, "width_scale": 0.25}, 1, 8, 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        forward = torch.compile(model, backend="eager") if compiled else None
        metrics = training.train_one_epoch(model, optimizer, data.train, data.augmentation, 32,
                                           torch.Generator().manual_seed(3), forward)
        runs.append((metrics, model.state_dict()))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)
    for name, value in runs[0][1].items():
        torch.testing.assert_close(runs[1][1][name], value, rtol=1e-4, atol=1e-6, msg=name)
