"""Directions: filter / layer normalisation as Section 4 defines them, seeds, HDF5 round trip."""

from __future__ import annotations

import pytest
import torch

from losslandscape.directions import load_directions, model_weights, random_direction, save_directions
from losslandscape.models import build_model


@pytest.fixture
def weights():
    torch.manual_seed(0)
    model = build_model({"model": "resnet", "depth": 20, "width_scale": 0.25}, 1, 8, 10)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial BN and bias values too
            p.add_(torch.randn_like(p) * 0.1)
    return model_weights(model)


def test_filter_normalised_direction_has_each_filters_norm(weights):
    d = random_direction(weights, seed=3, norm="filter")
    for name, w in weights.items():
        if w.dim() > 1:
            for i in range(w.shape[0]):
                assert float(d[name][i].norm()) == pytest.approx(float(w[i].norm()), rel=1e-5), (name, i)
        else:
            assert torch.count_nonzero(d[name]) == 0, f"{name}: bias/BN entries are zeroed"


def test_layer_normalised_direction_has_each_tensors_norm(weights):
    d = random_direction(weights, seed=3, norm="layer")
    for name, w in weights.items():
        if w.dim() > 1:
            assert float(d[name].norm()) == pytest.approx(float(w.norm()), rel=1e-5)
            per_filter = d[name].flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1)
            assert per_filter.std() > 0.01, "layer normalisation does not equalise filters"


def test_unnormalised_direction_is_standard_gaussian(weights):
    d = random_direction(weights, seed=3, norm="none")
    flat = torch.cat([d[n].flatten() for n, w in weights.items() if w.dim() > 1])
    assert abs(flat.mean()) < 0.02 and flat.std() == pytest.approx(1.0, abs=0.03)


def test_keeping_biasbn_gives_their_weights_as_direction(weights):
    d = random_direction(weights, seed=3, norm="filter", ignore_biasbn=False)
    name = next(n for n, w in weights.items() if w.dim() == 1)
    assert torch.equal(d[name], weights[name])


def test_seed_fixes_the_direction_and_a_new_seed_changes_it(weights):
    a = random_direction(weights, seed=3)
    b = random_direction(weights, seed=3)
    c = random_direction(weights, seed=4)
    name = next(n for n, w in weights.items() if w.dim() > 1)
    assert torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])
    # the two axes of a plane are nearly orthogonal, as independent high-dimensional Gaussians are
    flat = lambda d: torch.cat([v.flatten() for v in d.values()])
    cosine = torch.nn.functional.cosine_similarity(flat(a), flat(c), dim=0)
    assert abs(cosine) < 0.1


def test_directions_round_trip_through_hdf5_and_catch_another_network(weights, tmp_path):
    made = [random_direction(weights, seed=1), random_direction(weights, seed=2)]
    save_directions(tmp_path / "d.h5", made, {"norm": "filter", "seeds": [1, 2]})
    loaded, attrs = load_directions(tmp_path / "d.h5", weights)
    assert attrs["norm"] == "filter" and list(attrs["seeds"]) == [1, 2] and attrs["dims"] == 2
    for a, b in zip(made, loaded):
        assert all(torch.equal(a[n], b[n]) for n in a)
    other = model_weights(build_model({"model": "resnet", "depth": 20, "width_scale": 0.5}, 1, 8, 10))
    with pytest.raises(ValueError, match="another network"):
        load_directions(tmp_path / "d.h5", other)


def test_unknown_normalisation_is_refused(weights):
    with pytest.raises(ValueError, match="filter, layer, none"):
        random_direction(weights, seed=0, norm="unit")
