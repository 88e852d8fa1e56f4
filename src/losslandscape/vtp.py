"""ParaView export of a 2D loss surface: VTK XML PolyData (.vtp), one quad per grid cell.

Heights are log(z + 0.1) of the loss clipped at `zmax` (the reference tool's choice, which keeps
a chaotic surface readable); non-finite points are drawn at the clip. Works for any grid shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import atomic_path
from .surface import read_surface


def surface_heights(z: np.ndarray, zmax: float, log: bool = True) -> np.ndarray:
    clipped = np.where(np.isfinite(z), np.minimum(z, zmax), zmax)
    return np.log(clipped + 0.1) if log else clipped


def write_vtp(surface_path: str | Path, out: str | Path, zmax: float = 10.0, key: str = "train_loss",
              log: bool = True) -> None:
    """Write the 2D surface `key` of `surface_path` (laid out Z[iy, ix]) as a .vtp file."""
    surface = read_surface(surface_path)
    if "ycoordinates" not in surface:
        raise ValueError(f"{surface_path} is a 1D surface; a .vtp export needs a 2D one.")
    x, y, z = surface["xcoordinates"], surface["ycoordinates"], np.asarray(surface[key], dtype=float)
    ny, nx = z.shape
    heights = surface_heights(z, zmax, log)
    grid_x, grid_y = np.meshgrid(x, y)  # point k = iy * nx + ix, as Z[iy, ix] is stored
    points = np.column_stack([grid_x.ravel(), grid_y.ravel(), heights.ravel()])
    iy, ix = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    corner = (iy * nx + ix).ravel()
    quads = np.column_stack([corner, corner + 1, corner + nx + 1, corner + nx])
    finite = np.isfinite(z).ravel().astype(float)  # ParaView's ASCII reader takes no inf/NaN
    loss = surface_heights(z, zmax, log=False).ravel()
    with atomic_path(out) as tmp:
        tmp.write_text(_polydata(points, quads, {"height": heights.ravel(), key: loss, "finite": finite}))


def _polydata(points: np.ndarray, quads: np.ndarray, point_data: dict[str, np.ndarray]) -> str:
    def numbers(values, fmt="%.8g"):
        return " ".join(fmt % v for v in np.ravel(values))

    arrays = "\n".join(f'        <DataArray type="Float64" Name="{name}" format="ascii">{numbers(v)}</DataArray>'
                       for name, v in point_data.items())
    offsets = 4 * np.arange(1, len(quads) + 1)
    return f"""<?xml version="1.0"?>
<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian">
  <PolyData>
    <Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="{len(quads)}">
      <Points>
        <DataArray type="Float64" NumberOfComponents="3" format="ascii">{numbers(points)}</DataArray>
      </Points>
      <PointData Scalars="height">
{arrays}
      </PointData>
      <Polys>
        <DataArray type="Int64" Name="connectivity" format="ascii">{numbers(quads, "%d")}</DataArray>
        <DataArray type="Int64" Name="offsets" format="ascii">{numbers(offsets, "%d")}</DataArray>
      </Polys>
    </Piece>
  </PolyData>
</VTKFile>
"""
