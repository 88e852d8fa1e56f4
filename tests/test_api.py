"""A user's own model, loss and data: a surface in a few lines, from Python or the command line."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from losslandscape.api import loss_surface
from losslandscape.cli import main


def own_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def own_data() -> dict[str, DataLoader]:
    torch.manual_seed(1)
    x, y = torch.randn(96, 4), torch.randint(0, 3, (96,))
    return {"train": DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16),
            "test": DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16)}


def test_surface_of_own_model_with_dataloaders():
    model = own_model().eval()
    surface = loss_surface(model, own_data(), dims=2, points=5)
    assert surface["train_loss"].shape == (5, 5) and surface["test_acc"].shape == (5, 5)
    x, y = next(iter(own_data()["train"]))
    with torch.no_grad():
        centre = torch.nn.functional.cross_entropy(model(torch.cat([b[0] for b in own_data()["train"]])),
                                                   torch.cat([b[1] for b in own_data()["train"]]))
    assert surface["train_loss"][2, 2] == pytest.approx(centre.item(), rel=1e-5)
    assert surface["train_loss"][2, 2] <= surface["train_loss"].max()


def test_surface_with_own_loss_on_tensors_and_hdf5_output(tmp_path):
    model = own_model().eval()
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    surface = loss_surface(model, (x, y), loss_fn=torch.nn.MSELoss(), dims=1, points=7, out=tmp_path / "s.h5")
    assert np.isnan(surface["train_acc"]).all()
    with h5py.File(tmp_path / "s.h5") as f:
        np.testing.assert_array_equal(f["train_loss"][()], surface["train_loss"])
        assert f.attrs["norm"] == "filter"


def test_cli_surface_of_own_model(tmp_path, capsys):
    torch.save(own_model().state_dict(), tmp_path / "w.pt")
    code = main(["surface", "--model", "test_api:own_model", "--weights", str(tmp_path / "w.pt"),
                 "--data", "test_api:own_data", "--dims", "1", "--points", "5", "--out", str(tmp_path / "s.h5")])
    assert code == 0
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["train_loss"].shape == (5,) and f["test_loss"].shape == (5,)
    assert "train loss at the centre" in capsys.readouterr().err


def test_cli_names_a_bad_import():
    with pytest.raises(SystemExit, match="cannot import 'nowhere.module:f'"):
        main(["surface", "--model", "nowhere.module:f", "--data", "x:y", "--out", "s.h5"])
