"""Issue 7's matrix: bad files, interruptions (SIGKILL / SIGTERM of real jobs), non-finite values,
reproducibility and concurrency. Bad configs are the table in test_config.py; divergence, torn
journal lines and Lanczos non-convergence are pinned in test_train.py, test_surface.py and
test_hessian.py (README "Reliability" lists which test covers which case).

Everything runs on tiny networks and grids; the jobs killed here are the pipeline's own entry
points (losslandscape.jobs, losslandscape.train) run the way its scripts run them (inside `log_to`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from losslandscape import config as cfg
from losslandscape import jobs, surface
from losslandscape.checkpoints import load_model
from losslandscape.directions import save_directions
from losslandscape.hessian import HESSIAN_METRICS
from losslandscape.io import DamagedFileError, StaleFileError
from losslandscape.surface import make_grid, masked, read_surface, write_surface
from losslandscape.train import train

from conftest import REPO, SCHEMA


def _config(**preset) -> dict:
    raw = cfg.load_yaml(REPO / "config.yaml")
    raw.update(preset="tiny", device="cpu")
    raw["datasets"]["digits"]["train_size"] = 200
    raw["presets"]["tiny"].update(preset)
    return cfg.validate(raw, SCHEMA)


CONFIG = _config(epochs=4)
EVALUATION = cfg.evaluation_settings(CONFIG)
PLANE = cfg.plane_settings(CONFIG, "filter-2d")
GRID = dict(cfg.grid_settings(CONFIG), points_2d=11)  # 121 points: a shard takes a few seconds
SMALL_GRID = dict(GRID, points_2d=3)
HESSIAN = dict(cfg.hessian_settings(CONFIG), stride=1, train_subset=32, tol=1e-2)
HESSIAN_GRID = dict(GRID, points_2d=3)


def _train(run: str, folder: Path, **overrides) -> Path:
    recipe = dict(cfg.run_recipe(CONFIG, run), **overrides)
    train(recipe, folder, folder / "final.pt", folder / "history.tsv", device="cpu", threads=1)
    return folder / "final.pt"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A trained tiny ResNet-20 (4 epochs), its filter directions, and a trajectory run (VGG-9)."""
    root = tmp_path_factory.mktemp("made")
    final = _train("resnet20", root / "resnet20")
    jobs.make_directions(str(final), str(root / "filter.h5"), "filter", True, CONFIG["landscape"]["seed"])
    vgg = _train("vgg9_sgd_bs128_wd0", root / "vgg9", epochs=3)
    jobs.make_directions(str(vgg), str(root / "vgg9_filter.h5"), "filter", True, CONFIG["landscape"]["seed"])
    return {"root": root, "final": str(final), "directions": str(root / "filter.h5"),
            "vgg": str(vgg), "vgg_directions": str(root / "vgg9_filter.h5")}


# ----------------------------------------------------------------------------------------- helpers

JOB = """
import json, sys, torch
torch.set_num_threads(1)
from importlib import import_module
from losslandscape.io import log_to
spec, log, kwargs = json.loads(sys.argv[1])
module, name = spec.split(":")
with log_to(log):  # as workflow/scripts/*.py run every job
    getattr(import_module(module), name)(**kwargs)
"""


def start_job(spec: str, log: Path, **kwargs) -> subprocess.Popen:
    """A pipeline job in its own process, as Snakemake starts it."""
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps([spec, str(log), kwargs])],
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def interrupt(job: subprocess.Popen, ready, sig: int, timeout: float = 120) -> float:
    """Wait until `ready()` (the job has made progress), send `sig`; return how long it took to exit."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert job.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)
    sent = time.monotonic()
    job.send_signal(sig)
    job.wait(timeout=60)
    return time.monotonic() - sent


def journal_points(journal: Path) -> int:
    """Finished points in a shard's journal (complete lines after the settings header)."""
    return max(journal.read_text().count("\n") - 1, 0) if journal.exists() else 0


def no_partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.part")]


def assert_same_arrays(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        if name != "attrs":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


SIGNALS = [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGTERM, id="SIGTERM")]


# --------------------------------------------------------------------------------------- bad files


def _flip_byte_in_largest_tensor(path: Path) -> None:
    """Corrupt one byte inside a tensor's storage, as a bad disk or copy would (torch.load does not notice)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
        offset = info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize("damage", ["truncated", "byte_flipped", "foreign"])
def test_bad_checkpoint_is_refused_with_path_and_fix(made, tmp_path, damage):
    path = tmp_path / "train" / "resnet20" / "final.pt"
    path.parent.mkdir(parents=True)
    shutil.copy(made["final"], path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "byte_flipped":
        _flip_byte_in_largest_tensor(path)
    else:  # a bare state_dict where the pipeline expects its checkpoint
        torch.save(torch.load(made["final"], weights_only=False)["state_dict"], path)
    with pytest.raises(DamagedFileError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "Delete it" in message, message
    assert {"truncated": "truncated", "byte_flipped": "checksum", "foreign": "lacks"}[damage] in message


def test_damaged_checkpoint_of_an_epoch_says_to_retrain(made, tmp_path):
    """Intermediate checkpoints are no Snakemake output: deleting one alone would not bring it back."""
    run_dir = Path(made["vgg"]).parent
    epoch = tmp_path / "checkpoints" / "epoch-0001.pt"
    epoch.parent.mkdir()
    epoch.write_bytes((run_dir / "checkpoints" / "epoch-0001.pt").read_bytes()[:1000])
    with pytest.raises(DamagedFileError, match="final.pt too"):
        load_model(epoch)


def test_damaged_resume_state_restarts_training_with_a_log_line(tmp_path, capsys):
    folder = tmp_path / "vgg9"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "resume.pt").write_bytes(b"PK\x03\x04 half a file")
    _train("vgg9_sgd_bs128_wd0", folder, epochs=1)
    assert "resume.pt is truncated or corrupted: starting run vgg9_sgd_bs128_wd0 afresh" in capsys.readouterr().out
    assert pd.read_csv(folder / "history.tsv", sep="\t").epoch.tolist() == [0, 1]


def _edit_attrs(src: str, dst: Path, **attrs) -> str:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        f.attrs.update(attrs)
    return str(dst)


@pytest.mark.parametrize("case,words", [
    ("one_direction_for_a_plane", "holds 1 direction(s) and the plane needs 2"),
    ("other_normalisation", "norm = 'layer', the plane needs 'filter'"),
    ("other_seed", "drawn from seed 7, the config says 1"),
    ("other_run", "made for run 'resnet56', not 'resnet20'"),
    ("older_weights", "other weights than the current checkpoint"),
    ("other_network", "made for another network"),
])
def test_directions_file_that_does_not_fit_is_refused(made, tmp_path, case, words):
    path = tmp_path / "directions.h5"
    if case == "one_direction_for_a_plane":  # the reference tool crashed on a 1D file reused for 2D
        from losslandscape.directions import load_directions
        loaded, attrs = load_directions(made["directions"])
        save_directions(path, loaded[:1], {k: v for k, v in attrs.items() if k not in ("dims", "version")})
    elif case == "other_network":
        path = Path(made["vgg_directions"])
    else:
        edits = {"other_normalisation": {"norm": "layer"}, "other_seed": {"seeds": [7, 8]},
                 "other_run": {"run": "resnet56"}, "older_weights": {"weights_digest": "0123456789abcdef"}}[case]
        _edit_attrs(made["directions"], path, **edits)
    out = tmp_path / "shard.h5"
    with pytest.raises(StaleFileError) as info:
        jobs.surface_shard(made["final"], str(path), str(out), PLANE, SMALL_GRID, EVALUATION, 0, 1, "cpu", 1)
    message = str(info.value)
    assert str(path) in message and words in message and "Delete it and rerun" in message, message
    assert not out.exists() and not out.with_name(out.name + ".journal").exists(), "nothing was computed"


@pytest.mark.parametrize("damage", ["truncated", "byte_flipped"])
def test_damaged_hdf5_file_is_refused_with_path_and_fix(made, tmp_path, damage):
    """Directions, shards, surfaces and PCA files carry HDF5 Fletcher-32 checksums on every array."""
    path = tmp_path / "directions.h5"
    shutil.copy(made["directions"], path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with h5py.File(path, "r") as f:
            dataset = max((f["x"][n] for n in f["x"]), key=lambda d: d.size)
            offset = dataset.id.get_offset() if dataset.chunks is None else dataset.id.get_chunk_info(0).byte_offset
        with open(path, "r+b") as fh:
            fh.seek(offset + 8)
            byte = fh.read(1)[0]
            fh.seek(offset + 8)
            fh.write(bytes([byte ^ 0xFF]))
    with pytest.raises(DamagedFileError) as info:
        jobs.surface_shard(made["final"], str(path), str(tmp_path / "s.h5"), PLANE, SMALL_GRID, EVALUATION, 0, 1,
                           "cpu", 1)
    assert str(path) in str(info.value) and "Delete it and rerun" in str(info.value)


def _shards(made, folder: Path, grid=SMALL_GRID, evaluation=EVALUATION, checkpoint=None) -> list[str]:
    paths = [str(folder / f"shard-{i}-of-2.h5") for i in range(2)]
    for i, path in enumerate(paths):
        jobs.surface_shard(checkpoint or made["final"], made["directions"], path, PLANE, grid, evaluation, i, 2,
                           "cpu", 1)
    return paths


@pytest.mark.parametrize("change", ["other_grid", "other_evaluation", "retrained_checkpoint"])
def test_shards_from_other_settings_are_not_merged(made, tmp_path, change):
    """The reference tool silently reused a stale surface file; here a stale shard stops the gather."""
    checkpoint = tmp_path / "final.pt"
    shutil.copy(made["final"], checkpoint)
    shards = _shards(made, tmp_path, checkpoint=str(checkpoint))
    grid, evaluation = SMALL_GRID, EVALUATION
    if change == "other_grid":
        grid = dict(SMALL_GRID, points_2d=5)
    elif change == "other_evaluation":
        evaluation = dict(EVALUATION, train_subset=100)
    else:  # the run was retrained since: same path, other weights
        shutil.copy(Path(made["final"]).parent / "checkpoints" / "epoch-0002.pt", checkpoint)
    out = tmp_path / "surface.h5"
    with pytest.raises(StaleFileError) as info:
        jobs.surface(shards, str(checkpoint), made["directions"], str(out), PLANE, grid, evaluation)
    message = str(info.value)
    assert shards[0] in message and "does not belong to this surface" in message and "rerun" in message, message
    assert not out.exists()


def test_journal_left_by_an_older_checkpoint_is_discarded_with_a_log_line(made, tmp_path, capsys, monkeypatch):
    checkpoint, directions = tmp_path / "final.pt", tmp_path / "filter.h5"
    shutil.copy(Path(made["final"]).parent / "checkpoints" / "epoch-0002.pt", checkpoint)
    jobs.make_directions(str(checkpoint), str(directions), "filter", True, 1)
    out = tmp_path / "shard.h5"
    real = surface.Evaluator.__call__
    calls = []

    def killed_after_three(self, coords):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(coords)
        return real(self, coords)

    monkeypatch.setattr(surface.Evaluator, "__call__", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        jobs.surface_shard(str(checkpoint), str(directions), str(out), PLANE, SMALL_GRID, EVALUATION, 0, 1, "cpu", 1)
    assert journal_points(out.with_name(out.name + ".journal")) == 3
    monkeypatch.setattr(surface.Evaluator, "__call__", real)
    shutil.copy(made["final"], checkpoint)  # retrained: same path, new weights, new directions
    jobs.make_directions(str(checkpoint), str(directions), "filter", True, 1)
    capsys.readouterr()
    jobs.surface_shard(str(checkpoint), str(directions), str(out), PLANE, SMALL_GRID, EVALUATION, 0, 1, "cpu", 1)
    said = capsys.readouterr()
    assert "was written with other settings" in said.out and "starting this shard afresh" in said.out
    assert "resuming" not in said.out
    fresh = tmp_path / "fresh.h5"
    jobs.surface_shard(str(checkpoint), str(directions), str(fresh), PLANE, SMALL_GRID, EVALUATION, 0, 1, "cpu", 1)
    assert_same_arrays(read_surface(out), read_surface(fresh))


def test_surface_read_with_expected_settings_refuses_another(made, tmp_path):
    out = tmp_path / "surface.h5"
    jobs.surface([], made["final"], made["directions"], str(out), PLANE, SMALL_GRID, EVALUATION, "cpu", 1)
    assert read_surface(out, expect={"run": "resnet20", "norm": "filter"})["train_loss"].shape == (3, 3)
    with pytest.raises(StaleFileError, match=r"made with norm = 'filter', not 'layer'.*Delete it and rerun"):
        read_surface(out, expect={"norm": "layer"})


# ----------------------------------------------------------------------------------- interruptions


@pytest.mark.parametrize("sig", SIGNALS)
def test_killed_training_resumes_after_its_last_epoch_and_matches(made, tmp_path, sig, capsys):
    folder, log = tmp_path / "resnet20", tmp_path / "train.log"
    recipe = cfg.run_recipe(CONFIG, "resnet20")
    job = start_job("losslandscape.train:train", log, recipe=recipe, run_dir=str(folder),
                    final_path=str(folder / "final.pt"), history_path=str(folder / "history.tsv"),
                    device="cpu", threads=1)
    finished = lambda: log.exists() and "train resnet20: 1/4 epochs" in log.read_text()
    waited = interrupt(job, finished, sig)
    assert job.returncode == -sig if sig == signal.SIGKILL else job.returncode == 128 + sig
    if sig == signal.SIGTERM:
        assert waited < 10 and "terminated by SIGTERM" in log.read_text()
        assert not no_partial_files(folder), "SIGTERM unwinds: no temporary file is left"
    assert not (folder / "final.pt").exists() and not (folder / "history.tsv").exists(), "nothing looks complete"
    done = max(int(line.split("/")[0].split()[-1]) for line in log.read_text().splitlines() if "/4 epochs" in line)

    _train("resnet20", folder)
    resumed_after = int(capsys.readouterr().out.split("resuming run resnet20 after epoch ")[1].split()[0])
    assert resumed_after >= done, "finished epochs are not trained again"
    reference = torch.load(made["final"], weights_only=False)["state_dict"]
    for name, tensor in torch.load(folder / "final.pt", weights_only=False)["state_dict"].items():
        assert torch.equal(tensor, reference[name]), name
    pd.testing.assert_frame_equal(
        pd.read_csv(folder / "history.tsv", sep="\t").drop(columns="seconds"),
        pd.read_csv(Path(made["final"]).parent / "history.tsv", sep="\t").drop(columns="seconds"))


@pytest.fixture(scope="module")
def reference_shards(made, tmp_path_factory):
    """Shard 0 of 2 of an 11 x 11 surface and of a 3 x 3 Hessian map, computed without interruption."""
    folder = tmp_path_factory.mktemp("reference")
    jobs.surface_shard(made["final"], made["directions"], str(folder / "surface.h5"), PLANE, GRID, EVALUATION,
                       0, 2, "cpu", 1)
    jobs.hessian_shard(made["final"], made["directions"], str(folder / "hessian.h5"), HESSIAN_GRID, HESSIAN,
                       0, 2, "cpu", 1)
    return {"surface": folder / "surface.h5", "hessian": folder / "hessian.h5"}


@pytest.mark.parametrize("kind", ["surface", "hessian"])
@pytest.mark.parametrize("sig", SIGNALS)
def test_killed_shard_resumes_its_unfinished_points_and_matches(made, reference_shards, tmp_path, capsys, kind, sig):
    out, log = tmp_path / f"{kind}-shard-0-of-2.h5", tmp_path / f"{kind}.log"
    journal = out.with_name(out.name + ".journal")
    common = dict(checkpoint=made["final"], directions=made["directions"], out=str(out), shard=0, n_shards=2,
                  device="cpu", threads=1)
    if kind == "surface":
        args = dict(common, plane=PLANE, grid=GRID, evaluation=EVALUATION)
    else:
        args = dict(common, grid=HESSIAN_GRID, hessian=HESSIAN)
    job = start_job(f"losslandscape.jobs:{kind}_shard", log, **args)
    waited = interrupt(job, lambda: journal_points(journal) >= (10 if kind == "surface" else 2), sig)
    if sig == signal.SIGTERM:
        assert job.returncode == 128 + sig and waited < 10 and "terminated by SIGTERM" in log.read_text()
    assert not out.exists(), "no shard file before every point is done"
    assert not no_partial_files(tmp_path)
    done = journal_points(journal)
    lines = journal.read_text().split("\n")
    width = 1 + len(surface.METRICS if kind == "surface" else HESSIAN_METRICS)
    assert all(len(line.split("\t")) == width for line in lines[1:-1]), "every finished line is whole"

    getattr(jobs, f"{kind}_shard")(**args)
    resumed = int(capsys.readouterr().out.split("resuming with ")[1].split()[0])
    assert resumed >= done, "finished points are not computed again"
    assert_same_arrays(read_surface(out), read_surface(reference_shards[kind]))
    assert not journal.exists() and not out.with_name(out.name + ".lock").exists()


@pytest.mark.workflow
def test_snakemake_lock_refuses_a_second_run_and_a_killed_run_resumes_after_unlock(tmp_path):
    """A node dies mid-training (SIGKILL to Snakemake and its job): the lock stays, `--unlock` frees
    it, and the rerun resumes the run from its last finished epoch (that the resumed weights equal
    an uninterrupted run's is test_killed_training_resumes_after_its_last_epoch_and_matches)."""
    raw = cfg.load_yaml(REPO / "config.yaml")
    raw.update(preset="tiny", device="cpu", select=["resnet20"])
    raw["datasets"]["digits"]["train_size"] = 1000
    raw["presets"]["tiny"]["epochs"] = epochs = 40  # long enough that the lock check ends before training does
    (tmp_path / "config.yaml").write_text(json.dumps(raw))
    target = "results/tiny/train/resnet20/final.pt"
    log = tmp_path / "results/tiny/logs/train/resnet20.log"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1"]
    first = subprocess.Popen([*cmd, target], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_for(ready):
        deadline = time.monotonic() + 300
        while not ready():
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read().decode()[-3000:]
            time.sleep(0.05)

    wait_for(lambda: log.exists())  # the training job runs: the folder is locked
    second = subprocess.run([*cmd, target], capture_output=True, text=True, timeout=300)
    assert second.returncode != 0 and "LockException" in second.stdout + second.stderr
    wait_for(lambda: f"train resnet20: 1/{epochs} epochs" in log.read_text())
    os.killpg(first.pid, signal.SIGKILL)  # the node dies: Snakemake and its job at once
    first.wait(timeout=60)
    first.stdout.close()
    run_dir = tmp_path / "results/tiny/train/resnet20"
    assert not (run_dir / "final.pt").exists() and (run_dir / "checkpoints" / "resume.pt").exists()

    stale = subprocess.run([*cmd, target], capture_output=True, text=True, timeout=300)
    assert stale.returncode != 0 and "--unlock" in stale.stdout + stale.stderr
    unlock = subprocess.run([*cmd, "--unlock"], capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = subprocess.run([*cmd, target], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming run resnet20 after epoch" in log.read_text()
    history = pd.read_csv(run_dir / "history.tsv", sep="\t")
    assert history.epoch.tolist() == list(range(epochs + 1)), "every epoch once, the resumed ones included"


# ------------------------------------------------------------------------------- numerical failure


def test_nonfinite_points_are_counted_logged_and_masked_for_plots(tmp_path, capsys):
    grid = make_grid(-1, 1, 3, -1, 1, 2)
    loss = np.array([[0.5, np.inf, 0.2], [np.nan, 0.1, 0.3]])
    write_surface(tmp_path / "s.h5", grid, {"train_loss": loss, "train_acc": np.full((2, 3), 50.0)}, {"run": "r"})
    assert "2 of 6 points have an infinite or NaN value" in capsys.readouterr().out
    stored = read_surface(tmp_path / "s.h5")
    assert stored["attrs"]["nonfinite_points"] == 2
    assert stored["nonfinite"].tolist() == [[False, True, False], [True, False, False]]
    z = masked(stored)
    assert z.mask.tolist() == stored["nonfinite"].tolist() and z.max() == 0.5 and z.count() == 4
    assert masked(stored, "train_acc").mask.tolist() == stored["nonfinite"].tolist(), "a flagged point is masked"


# -------------------------------------------------------------------------------- reproducibility


def _all_outputs(made, folder: Path) -> dict[str, Path]:
    """Directions, a sharded surface, a Hessian map, an interpolation and a trajectory PCA, from the same inputs."""
    folder.mkdir()
    out = {name: folder / f"{name}.h5" for name in ("directions", "surface", "hessian", "interpolation", "pca")}
    jobs.make_directions(made["final"], str(out["directions"]), "filter", True, 1)
    shards = _shards(dict(made, directions=str(out["directions"])), folder)
    jobs.surface(shards, made["final"], str(out["directions"]), str(out["surface"]), PLANE, SMALL_GRID, EVALUATION)
    hessian = dict(HESSIAN, stride=2)
    parts = [str(folder / f"h-{i}.h5") for i in range(2)]
    for i, part in enumerate(parts):
        jobs.hessian_shard(made["final"], str(out["directions"]), part, SMALL_GRID, hessian, i, 2, "cpu", 1)
    jobs.hessian_map(parts, made["final"], str(out["directions"]), str(out["hessian"]), SMALL_GRID, hessian)
    earlier = str(Path(made["vgg"]).parent / "checkpoints" / "epoch-0001.pt")
    jobs.interpolate(earlier, made["vgg"], str(out["interpolation"]), {"min": -0.5, "max": 1.5, "points": 3},
                     EVALUATION, "cpu", 1)
    jobs.trajectory_pca(made["vgg"], made["vgg_directions"], str(out["pca"]), 0.2, 3)
    return out


def _arrays_and_attrs(path: Path) -> tuple[dict, dict]:
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None)
        attrs = dict(f.attrs)
    return arrays, attrs


def test_cpu_outputs_are_bit_identical_when_run_twice_and_record_seed_and_settings(made, tmp_path):
    first, second = _all_outputs(made, tmp_path / "first"), _all_outputs(made, tmp_path / "second")
    where = lambda value, folder: value.replace(str(tmp_path / folder), "<out>") if isinstance(value, str) else value
    for name in first:
        (a, attrs_a), (b, attrs_b) = _arrays_and_attrs(first[name]), _arrays_and_attrs(second[name])
        assert set(a) == set(b) and a, name
        for key in a:
            assert a[key].tobytes() == b[key].tobytes(), f"{name}/{key} differs between two runs"
        assert attrs_a.keys() == attrs_b.keys(), name
        for key in attrs_a:
            np.testing.assert_array_equal(where(attrs_a[key], "first"), where(attrs_b[key], "second"),
                                          err_msg=f"{name}.attrs[{key}]")
    wanted = {  # the attributes that say how each file was made
        "directions": {"run", "seeds", "norm", "ignore_biasbn", "weights_digest", "version"},
        "surface": {"run", "seeds", "norm", "subset_seed", "train_subset", "settings", "version"},
        "hessian": {"run", "seeds", "subset_seed", "tol", "maxiter", "settings", "version"},
        "interpolation": {"run_a", "run_b", "subset_seed", "train_subset", "settings", "version"},
        "pca": {"run", "seeds", "weights_digest", "settings", "explained_variance_ratio", "version"},
    }
    for name, keys in wanted.items():
        attrs = _arrays_and_attrs(first[name])[1]
        assert keys <= set(attrs), f"{name} lacks {keys - set(attrs)}"
    assert torch.load(made["final"], weights_only=False)["recipe"]["seed"] == CONFIG["training"]["seed"]


def test_training_twice_gives_bit_identical_weights(made, tmp_path):
    again = torch.load(_train("vgg9_sgd_bs128_wd0", tmp_path, epochs=3), weights_only=False)["state_dict"]
    first = torch.load(made["vgg"], weights_only=False)["state_dict"]
    assert all(torch.equal(again[name], first[name]) for name in first)


# ------------------------------------------------------------------------------------ concurrency


def test_two_shards_of_one_surface_run_at_once_into_their_own_files(made, tmp_path):
    grid = dict(GRID, points_2d=9)
    procs, paths = [], []
    for i in range(2):
        paths.append(tmp_path / f"shard-{i}-of-2.h5")
        procs.append(start_job("losslandscape.jobs:surface_shard", tmp_path / f"{i}.log", checkpoint=made["final"],
                               directions=made["directions"], out=str(paths[-1]), plane=PLANE, grid=grid,
                               evaluation=EVALUATION, shard=i, n_shards=2, device="cpu", threads=1))
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for i, path in enumerate(paths):
        assert list(read_surface(path)["indices"]) == list(range(i, 81, 2)), "each shard holds its own points"
    jobs.surface([str(p) for p in paths], made["final"], made["directions"], str(tmp_path / "sharded.h5"), PLANE,
                 grid, EVALUATION)
    jobs.surface([], made["final"], made["directions"], str(tmp_path / "whole.h5"), PLANE, grid, EVALUATION, "cpu", 1)
    assert_same_arrays(read_surface(tmp_path / "sharded.h5"), read_surface(tmp_path / "whole.h5"))


def test_the_same_shard_twice_at_once_is_refused(made, tmp_path):
    import fcntl

    out = tmp_path / "shard-0-of-2.h5"
    with open(tmp_path / "shard-0-of-2.h5.lock", "a") as held:  # as another process computing the shard would
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match=r"being computed by another process.*shard-0-of-2.h5.lock"):
            jobs.surface_shard(made["final"], made["directions"], str(out), PLANE, SMALL_GRID, EVALUATION, 0, 2,
                               "cpu", 1)
    assert not out.exists()
    jobs.surface_shard(made["final"], made["directions"], str(out), PLANE, SMALL_GRID, EVALUATION, 0, 2, "cpu", 1)
    assert out.exists(), "once the other process is gone, the shard runs"


def test_a_shard_interrupted_in_this_process_can_be_rerun_in_it(made, tmp_path, monkeypatch):
    """An interactive session keeps the interrupted call's traceback (and its lock) alive."""
    out, kept = tmp_path / "shard.h5", []
    real = surface.Evaluator.__call__

    def interrupted(self, coords):
        raise KeyboardInterrupt

    monkeypatch.setattr(surface.Evaluator, "__call__", interrupted)
    try:
        jobs.surface_shard(made["final"], made["directions"], str(out), PLANE, SMALL_GRID, EVALUATION, 0, 1, "cpu", 1)
    except KeyboardInterrupt as exc:
        kept.append(exc)  # the traceback, and the frame holding the shard's lock, stay alive
    monkeypatch.setattr(surface.Evaluator, "__call__", real)
    jobs.surface_shard(made["final"], made["directions"], str(out), PLANE, SMALL_GRID, EVALUATION, 0, 1, "cpu", 1)
    assert kept and out.exists()


def test_hessian_shard_killed_between_saving_warm_state_and_journaling_still_matches(made, reference_shards,
                                                                                     tmp_path, monkeypatch):
    """The narrowest window: the point is computed and its warm-start state saved, its journal line not."""
    from losslandscape.hessian import HessianEvaluator

    real, calls = HessianEvaluator.__call__, []

    def dies_after_second_point(self, coords):
        values = real(self, coords)
        calls.append(coords)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return values

    out = tmp_path / "hessian.h5"
    monkeypatch.setattr(HessianEvaluator, "__call__", dies_after_second_point)
    with pytest.raises(KeyboardInterrupt):
        jobs.hessian_shard(made["final"], made["directions"], str(out), HESSIAN_GRID, HESSIAN, 0, 2, "cpu", 1)
    assert journal_points(out.with_name(out.name + ".journal")) == 1
    monkeypatch.setattr(HessianEvaluator, "__call__", real)
    jobs.hessian_shard(made["final"], made["directions"], str(out), HESSIAN_GRID, HESSIAN, 0, 2, "cpu", 1)
    assert_same_arrays(read_surface(out), read_surface(reference_shards["hessian"]))
    assert not out.with_name(out.name + ".warm.npz").exists()
