"""Loss at points θ(c) = θ₀ + Σ c_k d_k of a line or plane in weight space: evaluation, shards, gather.

The same machinery serves the random-direction plots (θ₀ = the minimiser, d = filter-normalised
directions over the parameters) and the 1D interpolation between two minimisers (θ₀ = θ_a,
d = θ_b − θ_a over parameters *and* BatchNorm running statistics).

A grid is split into shards (point k belongs to shard k mod n) that run as separate jobs. Each
shard appends every finished point to a journal, so a killed shard, rerun, computes only the
points it had not finished; the shard's HDF5 file is written once, complete, at the end.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .io import StaleFileError, atomic_path, h5_array, h5_read, recipe_hash, settings_json
from .progress import Progress

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class Grid:
    """Coordinates of a 1D line (y is None) or a 2D plane; point k is (x[k % nx], y[k // nx])."""

    x: np.ndarray
    y: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coords(self, k: int) -> tuple[float, ...]:
        nx = len(self.x)
        return (float(self.x[k]),) if self.y is None else (float(self.x[k % nx]), float(self.y[k // nx]))


def make_grid(xmin: float, xmax: float, xnum: int, ymin=None, ymax=None, ynum=None) -> Grid:
    """Evenly spaced coordinates, as the reference tool's `--x=min:max:num`."""
    if xnum < 2 or (ynum is not None and ynum < 2):
        raise ValueError(f"a grid needs at least 2 points per axis (got {xnum}, {ynum})")
    if xmin >= xmax or (ynum is not None and ymin >= ymax):
        raise ValueError(f"a grid's minimum must be below its maximum (x {xmin}..{xmax}, y {ymin}..{ymax})")
    y = None if ynum is None else np.linspace(ymin, ymax, ynum)
    return Grid(np.linspace(xmin, xmax, xnum), y)


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Batches:
    """Batches over data already in memory (on the evaluation device)."""
    return lambda: ((images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size))


class PlaneMover:
    """Moves a model's own tensors to θ(c) = θ₀ + Σ c_k d_k in place (no copy of the model per point).

    `directions` name the tensors they move (parameters, and BatchNorm buffers for interpolation);
    θ₀ is `origin` where given, else the model's current values. `restore()` puts θ₀ back.
    """

    def __init__(self, model: nn.Module, directions: Sequence[dict[str, torch.Tensor]],
                 origin: dict[str, torch.Tensor] | None = None):
        self.model = model.eval()
        live = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        names = list(directions[0])
        unknown = [n for n in names if n not in live]
        if unknown:
            raise ValueError(f"directions name tensors the model does not have: {unknown[:3]}")
        self.names = names
        self.tensors = [live[n] for n in names]
        self.origin = [(origin or {}).get(n, live[n]).detach().to(live[n].device).clone() for n in names]
        self.directions = [[d[n].to(device=live[n].device, dtype=live[n].dtype) for n in names] for d in directions]

    @torch.no_grad()
    def move_to(self, coords: Sequence[float]) -> None:
        torch._foreach_copy_(self.tensors, self.origin)
        for c, direction in zip(coords, self.directions):
            if c:
                torch._foreach_add_(self.tensors, direction, alpha=float(c))

    def restore(self) -> None:
        self.move_to([0.0] * len(self.directions))


class Evaluator(PlaneMover):
    """Loss and accuracy of `model` at the points of a line or plane, over fixed data.

    The network is in eval mode, BatchNorm using its stored statistics; with `fold_bn` each
    conv/linear + BatchNorm pair is evaluated as one layer, which is exact in eval mode and
    cuts the work of a CPU forward pass (benchmarks/README.md). A model that torch.fx cannot
    trace is evaluated unfolded.

    `points_per_call` > 1 evaluates that many points per pass over the data (`many`, through
    batched.StackedPoints); `"auto"` times a few values on a GPU and takes 1 on a CPU. A model
    that cannot be batched is evaluated one point at a time, with a warning. `precision` is
    `float32` (the reference), `tf32` or `bf16` (see batched.precision_context).
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Sequence[dict[str, torch.Tensor]],
        data: dict[str, Batches],
        origin: dict[str, torch.Tensor] | None = None,
        loss_fn: Callable = F.cross_entropy,
        fold_bn: bool = True,
        channels_last: bool = False,
        points_per_call: int | str = 1,
        precision: str = "float32",
    ):
        from .batched import PRECISIONS

        super().__init__(model, directions, origin)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if not (points_per_call == "auto" or (isinstance(points_per_call, int) and points_per_call >= 1)):
            raise ValueError(f"points_per_call must be 'auto' or an integer >= 1, not {points_per_call!r}")
        self.data, self.loss_fn, self.channels_last = data, loss_fn, channels_last
        self.precision = precision
        self.device = self.origin[0].device if self.origin else torch.device("cpu")
        self.forward = model
        if fold_bn:
            from .fold import FoldedNetwork

            try:
                self.forward = FoldedNetwork(model, channels_last=channels_last)
            except Exception as exc:  # torch.fx cannot trace every user model (data-dependent control flow)
                warnings.warn(f"evaluating without folding BatchNorm: the model could not be traced ({exc})")
        self._asked_points = points_per_call
        self._points: int | None = 1 if points_per_call == 1 else None
        self._stacked = None

    def move_to(self, coords: Sequence[float]) -> None:
        super().move_to(coords)
        if hasattr(self.forward, "refresh"):
            self.forward.refresh()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def __call__(self, coords: Sequence[float]) -> dict[str, float]:
        """`{split}_loss` (mean over the split) and `{split}_acc` (percent) at the point `coords`."""
        self.move_to(coords)
        return self._over_splits(lambda x, y: self._sums(self.forward(x), y))[0]

    def _sums(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[loss summed over the batch, correct predictions] of one point's outputs."""
        return torch.stack([self.loss_fn(out, y).double() * len(y), _correct(out, y)])

    def _over_splits(self, batch_sums: Callable) -> list[dict[str, float]]:
        """Per point, `{split}_loss` (mean over the split) and `{split}_acc` (percent), from
        `batch_sums(x, y)`: a batch's [loss sum, correct] of one point ([2]) or of K points ([K, 2])."""
        from .batched import precision_context

        results: list[dict[str, float]] = []
        with precision_context(self.precision, self.device):
            for split, batches in self.data.items():
                sums, count = [], 0
                for x, y in batches():
                    sums.append(batch_sums(self._inputs(x), y))
                    count += len(y)
                totals = torch.stack(sums).sum(0).reshape(-1, 2).tolist()
                results = results or [{} for _ in totals]
                for result, (loss_sum, correct) in zip(results, totals):
                    result[f"{split}_loss"] = loss_sum / count
                    result[f"{split}_acc"] = 100.0 * correct / count if correct >= 0 else math.nan
        return results

    @property
    def points_per_call(self) -> int:
        """K, the points evaluated per pass over the data (resolved, and checked, on first use)."""
        if self._points is None:
            self._points = self._resolve_points()
        return self._points

    def _resolve_points(self) -> int:
        """Build the batched evaluation, check it against the point-by-point one on a few images,
        and pick K; any failure falls back to K = 1 with a warning."""
        from .batched import StackedPoints, choose_points_per_call, precision_context

        asked = self._asked_points
        if asked == "auto" and self.device.type != "cuda":
            return 1  # a CPU gains nothing from batching points (benchmarks/README.md)
        module = getattr(self.forward, "graph_module", self.forward)
        try:
            self._stacked = StackedPoints(module, self.tensors, self.origin, self.directions,
                                          getattr(self.forward, "_triples", ()))
            x, y = next(iter(next(iter(self.data.values()))()))
            x, y = self._inputs(x[:8]), y[:8]
            probe = [[0.5 * (-1) ** i] * len(self.directions) for i in range(2)]
            with torch.inference_mode(), precision_context("float32", self.device):
                batched = self._stacked.sums(self._stacked.weights(torch.tensor(probe)), x, y, self.loss_fn, _correct)
                single = []
                for c in probe:
                    self.move_to(c)
                    single.append(self._sums(self.forward(x), y))
                self.restore()
            if not torch.allclose(batched, torch.stack(single), rtol=1e-3, atol=1e-6, equal_nan=True):
                raise ValueError(f"batched losses {batched[:, 0].tolist()} differ from one-point ones "
                                 f"{[s[0].item() for s in single]}")
        except Exception as exc:
            warnings.warn(f"evaluating one grid point at a time: this model cannot be batched over points ({exc})")
            self._stacked = None
            return 1
        if asked != "auto":
            return int(asked)
        x, y = next(iter(next(iter(self.data.values()))()))
        x = self._inputs(x)

        def run(k: int) -> None:
            with torch.inference_mode(), precision_context(self.precision, self.device):
                coeffs = torch.zeros(k, len(self.directions), device=self.device)
                self._stacked.sums(self._stacked.weights(coeffs), x, y, self.loss_fn, _correct)

        return choose_points_per_call(run, self.device, log=lambda line: print(line, flush=True))

    @torch.inference_mode()
    def many(self, points: Sequence[Sequence[float]]) -> list[dict[str, float]]:
        """The values of `__call__` at several points, in one pass over the data when batching is on.

        Call with at most `points_per_call` points: all of them are held in memory at once.
        """
        if len(points) == 1 or self.points_per_call == 1 or self._stacked is None:
            return [self(c) for c in points]
        weights = self._stacked.weights(torch.tensor([list(map(float, c)) for c in points], device=self.device))
        return self._over_splits(lambda x, y: self._stacked.sums(weights, x, y, self.loss_fn, _correct))


def _correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct predictions for a classifier's logits; -inf marks a task without accuracy."""
    if out.dim() == 2 and not y.is_floating_point() and y.dim() == 1:
        return (out.argmax(1) == y).sum().double()
    return torch.tensor(-math.inf, dtype=torch.float64, device=out.device)


def shard_points(grid: Grid, shard: int, n_shards: int) -> list[int]:
    """Point indices of one shard: every n-th point, so shards cost about the same."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    return list(range(shard, grid.size, n_shards))


def compute_shard(
    evaluator: Callable[[Sequence[float]], dict[str, float]],
    grid: Grid,
    shard: int,
    n_shards: int,
    out_path: str | Path,
    settings: dict,
    desc: str = "surface",
    metrics: Sequence[str] = METRICS,
) -> None:
    """Evaluate one shard's points, resuming from its journal, and write the shard's HDF5 file.

    `evaluator(coords)` returns a dict holding at least `metrics` (floats; NaN and inf are kept).
    """
    out_path = Path(out_path)
    journal = out_path.with_name(out_path.name + ".journal")
    key = recipe_hash({"settings": settings, "metrics": list(metrics)})
    claim = _claim(out_path)  # a second process on the same shard is refused, never interleaved
    done = _read_journal(journal, key, metrics)
    todo = [k for k in shard_points(grid, shard, n_shards) if k not in done]
    progress = Progress(len(done) + len(todo), desc, "points", initial=len(done))
    if done:
        print(f"{desc}: resuming with {len(done)} points already computed", flush=True)
    per_call = _points_per_call(evaluator) if todo else 1
    with open(journal, "a") as fh:
        if not done:
            fh.write(f"# settings {key}\n")
        for start in range(0, len(todo), per_call):
            chunk = todo[start : start + per_call]
            for k, values in zip(chunk, _evaluate(evaluator, [grid.coords(k) for k in chunk])):
                done[k] = values
                fh.write("\t".join([str(k)] + [repr(float(values[m])) for m in metrics]) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            progress.update(len(chunk), **{metrics[0]: f"{values[metrics[0]]:.4g}"})
    if hasattr(evaluator, "restore"):
        evaluator.restore()  # the model back at θ₀ for whoever uses it next
    indices = np.array(sorted(done), dtype=np.int64)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        h5_array(f, "indices", indices)
        for m in metrics:
            h5_array(f, m, np.array([done[k][m] for k in indices], dtype=np.float64))
        _write_grid(f, grid)
        f.attrs.update(settings_hash=key, shard=shard, n_shards=n_shards, metrics=list(metrics),
                       settings=settings_json(settings))
    journal.unlink()
    _release(claim, out_path)


_HELD: dict[str, object] = {}  # this process's shard locks, by lock path


def _claim(out_path: Path):
    """An exclusive lock on a shard (`<shard>.lock`), held until the shard is written or the process ends.

    A lock this process still holds from an interrupted call (a traceback kept alive by an
    interactive session) is taken over: one process never computes the same shard twice at once.
    """
    name = str(out_path.with_name(out_path.name + ".lock"))
    if name in _HELD:
        _HELD.pop(name).close()
    lock = open(name, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise RuntimeError(f"{out_path} is being computed by another process right now (it holds "
                           f"{lock.name}); wait for it to finish, or stop it, then rerun.") from None
    _HELD[name] = lock
    return lock


def _release(lock, out_path: Path) -> None:
    Path(lock.name).unlink(missing_ok=True)
    _HELD.pop(lock.name, None)
    lock.close()


def _write_grid(f, grid: Grid) -> None:
    """The shard's grid, so that a gather over another grid is refused."""
    h5_array(f, "xcoordinates", grid.x)
    if grid.y is not None:
        h5_array(f, "ycoordinates", grid.y)


def _points_per_call(evaluator) -> int:
    """K of an evaluator with a `many` method (e.g. Evaluator), else 1."""
    return max(1, int(getattr(evaluator, "points_per_call", 1))) if hasattr(evaluator, "many") else 1


def _evaluate(evaluator, points: list[tuple[float, ...]]) -> list[dict[str, float]]:
    """Values at `points`, in one batched call where the evaluator has one."""
    return evaluator.many(points) if len(points) > 1 else [evaluator(points[0])]


def _read_journal(journal: Path, key: str, metrics: Sequence[str]) -> dict[int, dict[str, float]]:
    """Points finished by an earlier attempt with the same settings (a torn last line is dropped)."""
    if not journal.exists():
        return {}
    lines = journal.read_text().split("\n")
    if not lines or lines[0] != f"# settings {key}":
        print(f"{journal} was written with other settings ({lines[0][11:] or 'none'} != {key}): "
              "discarding its points and starting this shard afresh", flush=True)
        journal.unlink()  # made with other settings: nothing in it can be reused
        return {}
    done = {}
    for line in lines[1:-1]:  # the text after the last newline is an unfinished line
        fields = line.split("\t")
        if len(fields) == 1 + len(metrics):
            done[int(fields[0])] = dict(zip(metrics, map(float, fields[1:])))
    return done


SHARD_FIX = "Delete the shard file and rerun the pipeline: Snakemake computes the shard again."


def gather(shard_paths: Sequence[str | Path], grid: Grid, out_path: str | Path, attrs: dict,
           expect: dict | None = None) -> dict[str, np.ndarray]:
    """Merge shard files into one surface file in the reference tool's layout, Z[iy, ix].

    Every shard must be readable, of this grid, one of the same `n` shards, and made with the same
    settings, and with the values in `expect` (a part of the settings the shard was computed with):
    a shard left from other settings is refused with its path, never merged.
    """
    values: dict[str, np.ndarray] = {}
    seen = np.zeros(grid.size, dtype=bool)
    keys, shards = {}, {}
    for path in shard_paths:
        with h5_read(path, fix=SHARD_FIX) as f:
            _check_shard(path, f, grid, expect)
            keys[str(path)] = f.attrs["settings_hash"]
            shards.setdefault((int(f.attrs.get("shard", -1)), int(f.attrs.get("n_shards", -1))), []).append(str(path))
            idx = f["indices"][()]
            seen[idx] = True
            for m in f.attrs["metrics"]:
                values.setdefault(m, np.full(grid.size, np.nan))[idx] = f[m][()]
    if len(set(keys.values())) > 1:
        raise StaleFileError(f"the shards of {out_path} were computed with different settings "
                             f"({', '.join(f'{p}: {k}' for p, k in keys.items())}). {SHARD_FIX}")
    repeated = [paths for paths in shards.values() if len(paths) > 1]
    if repeated:
        raise StaleFileError(f"{repeated[0]} are the same shard; a surface needs each shard once.")
    if len({n for _, n in shards}) > 1:
        raise StaleFileError(f"the shards of {out_path} come from splits into different numbers of shards "
                             f"({', '.join(f'{p[0]}: {n}' for (_, n), p in shards.items())}). {SHARD_FIX}")
    if not seen.all():
        raise ValueError(f"{np.count_nonzero(~seen)} grid points are missing from the shards of {out_path}.")
    surface = {m: v.reshape(grid.shape) for m, v in values.items()}
    write_surface(out_path, grid, surface, attrs)
    return surface


def _check_shard(path, f, grid: Grid, expect: dict | None) -> None:
    """Refuse a shard of another grid or other settings than the surface being gathered."""
    problems = []
    for axis, coords in (("xcoordinates", grid.x), ("ycoordinates", grid.y)):
        stored = f[axis][()] if axis in f else None
        if stored is not None and (coords is None or stored.shape != coords.shape or not np.array_equal(stored, coords)):
            problems.append(f"its {axis} differ from this surface's grid")
    if f["indices"].size and (f["indices"][()].max() >= grid.size or f["indices"][()].min() < 0):
        problems.append(f"its point indices do not fit a grid of {grid.size} points")
    if expect:
        made = json.loads(f.attrs["settings"]) if "settings" in f.attrs else {}
        wanted = json.loads(settings_json(expect))
        for key, value in wanted.items():
            if key in made and made[key] != value:
                problems.append(f"it was computed with {key} = {made[key]}, this surface needs {value}")
    if problems:
        raise StaleFileError(f"{path} does not belong to this surface: {'; '.join(problems)}. {SHARD_FIX}")


def write_surface(path: str | Path, grid: Grid, surface: dict[str, np.ndarray], attrs: dict) -> None:
    """The reference tool's names (xcoordinates, train_loss, ...), 2D arrays as Z[iy, ix], provenance in attrs.

    Points where the loss is not finite are kept as inf/NaN and flagged in `nonfinite`.
    """
    checked = [v for k, v in surface.items() if k.endswith("_loss") or k.endswith("_eig")] or list(surface.values())
    nonfinite = np.logical_or.reduce([~np.isfinite(v) for v in checked])
    if nonfinite.any():
        print(f"{path}: {int(nonfinite.sum())} of {nonfinite.size} points have an infinite or NaN value; "
              "they are kept as such and flagged in `nonfinite`", flush=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        h5_array(f, "xcoordinates", grid.x)
        if grid.y is not None:
            h5_array(f, "ycoordinates", grid.y)
        for name, values in surface.items():
            h5_array(f, name, values)
        h5_array(f, "nonfinite", nonfinite)
        f.attrs.update({k: v for k, v in attrs.items() if v is not None})
        f.attrs["layout"] = "Z[ix]" if grid.y is None else "Z[iy, ix]: rows follow ycoordinates, columns xcoordinates"
        f.attrs["nonfinite_points"] = int(nonfinite.sum())
        f.attrs["loss"] = "mean over the split"
        f.attrs["acc_unit"] = "percent"
        f.attrs["version"] = __version__


def read_surface(path: str | Path, expect: dict | None = None) -> dict:
    """A surface file as a dict of arrays plus `attrs`.

    A damaged file raises `DamagedFileError`; with `expect` ({attribute: value}), a file whose
    attributes say it was made with other settings raises `StaleFileError`, both naming the path.
    """
    with h5_read(path) as f:
        surface = {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset)}
        surface["attrs"] = dict(f.attrs)
    for key, value in (expect or {}).items():
        have = surface["attrs"].get(key)
        if have is None or json.loads(settings_json({"v": have})) != json.loads(settings_json({"v": value})):
            raise StaleFileError(f"{path} was made with {key} = {have!r}, not {value!r}: it is left from other "
                                 "settings. Delete it and rerun the pipeline: Snakemake computes it again.")
    return surface


def masked(surface: dict, name: str = "train_loss") -> np.ma.MaskedArray:
    """`surface[name]` with its infinite or NaN points masked (and those flagged in `nonfinite`), for plots."""
    values = np.ma.masked_invalid(np.asarray(surface[name], dtype=np.float64))
    if "nonfinite" in surface:
        values = np.ma.masked_where(np.asarray(surface["nonfinite"], dtype=bool) | np.ma.getmaskarray(values), values)
    return values


def compute_surface(evaluator, grid: Grid, desc: str = "surface") -> dict[str, np.ndarray]:
    """All points of a grid in this process (no shards, no journal): the library's simple path."""
    values: dict[str, np.ndarray] = {}
    progress = Progress(grid.size, desc, "points")
    per_call = _points_per_call(evaluator)
    try:
        for start in range(0, grid.size, per_call):
            chunk = range(start, min(start + per_call, grid.size))
            for k, point in zip(chunk, _evaluate(evaluator, [grid.coords(k) for k in chunk])):
                for m, v in point.items():
                    values.setdefault(m, np.full(grid.size, np.nan))[k] = v
            progress.update(len(chunk))
    finally:
        evaluator.restore()
    return {m: v.reshape(grid.shape) for m, v in values.items()}
