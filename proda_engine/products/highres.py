"""High-resolution gridded products in bounded memory: a Dask-chunked path (spec §(n) at scale).

A 0.05-degree world has 100 times the cells of the 0.5-degree one (26 million grid cells globally,
about 6 million on land), far too many to hold as (12, 20, cells) forcing arrays. Here the fine grid
is never materialised: the product maps are a lazy ``dask.array`` assembled from one delayed task
per tile, and each task builds only its tile's forcing, solves it with the structured solver and
returns the tile's 2-D products. Writing the Dataset (netCDF, or Zarr when installed) streams the
tiles, so peak memory is set by the tile size and the number of workers, not by the grid.

**The demonstration world.** No 0.05-degree CLM5 climatology is available offline, so the fine
forcing is *derived* from a 0.5-degree world by nearest-neighbour refinement (every coarse cell
becomes ``factor`` x ``factor`` fine cells with its forcing, parameters and coarse fragments) plus
synthetic sub-grid variability that is deterministic per fine cell (a hash of its global index, so
it does not depend on the tiling):

* carbon inputs x exp(sigma n1 - sigma^2/2), sigma = 0.2 (log-normal, mean preserving), and
* soil temperature - Gamma dz_e, with a sub-grid elevation anomaly dz_e = 100 m x n2 and the
  environmental lapse rate Gamma = 6.5 K km-1 (all layers and months),

with n1, n2 independent standard normals. Everything else (water, oxygen and N scalars, active
layer, bedrock, parameters) is the parent cell's. Set ``subgrid=None`` for pure refinement, in
which case the fine totals equal the coarse totals up to the cell-area quadrature (tested).

Example
-------
>>> from proda_engine.products.gridded import load_grid_world              # doctest: +SKIP
>>> from proda_engine.products.highres import highres_products             # doctest: +SKIP
>>> w = load_grid_world("europe")                                           # doctest: +SKIP
>>> ds = highres_products(w, w.truth, factor=10)    # lazy (dask) Dataset   # doctest: +SKIP
>>> write_highres(ds, "europe_0p05.nc")                                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from proda_engine.data.parameter_files import parameter_file_attrs
from proda_engine.data.writers import write_product
from proda_engine.grid import Grid
from proda_engine.physics import Forcing
from proda_engine.products.gridded import (
    DIAGNOSTICS,
    INTERVALS,
    CellSolver,
    GridWorld,
    ParameterSet,
    _attrs,
    coarse_fragment_stocks,
    suffix,
)
from proda_engine.products.multipliers import MECHANISMS, NO_CHANGE, multiplier_key
from proda_engine.products.regions import PG, cell_area

#: Product bands of the high-resolution path, in order.
BANDS: tuple[str, ...] = (*(f"soc_stock_{suffix(k)}" for k in INTERVALS), "turnover",
                          *(f"turnover_{suffix(k)}" for k in INTERVALS[:-1]), *DIAGNOSTICS, "status")


@dataclass(frozen=True)
class SubGrid:
    """Synthetic sub-grid variability of the refined forcing (see the module docstring)."""

    input_sigma: float = 0.2
    elevation_sd_m: float = 100.0
    lapse_k_per_km: float = 6.5
    seed: int = 0


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-mixed 64-bit hash of each integer (wrap-around arithmetic)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hash_normal(iy: np.ndarray, ix: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Standard normals that depend only on (global fine row, column, seed, stream) (Box-Muller)."""
    key = (iy.astype(np.uint64) << np.uint64(32)) | ix.astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix64(key ^ _splitmix64(np.uint64(seed * 1000 + stream)))
        u1 = ((base >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
        u2 = ((_splitmix64(base) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def fine_coords(coarse: np.ndarray, factor: int) -> np.ndarray:
    """Centres of the fine cells that split each coarse cell (ascending coarse centres) ``factor`` ways."""
    d = float(np.abs(np.diff(coarse)).mean()) if coarse.size > 1 else 0.5
    off = (np.arange(factor) + 0.5) / factor - 0.5
    return (coarse[:, None] + off[None, :] * d).reshape(-1)


def _tile_products(arrays: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int],
                   origin: tuple[int, int], factor: int, subgrid: SubGrid | None, grid: Grid, closure: str,
                   is_default: bool, multipliers: tuple[float, ...] | None = None) -> np.ndarray:
    """Products (len(BANDS), fy, fx) float32 of one fine tile from its coarse cells.

    ``arrays`` holds the coarse cells' forcing (cells last, float32), ``theta`` (n, 21) and ``cf``
    (3, n); ``rows``/``cols`` are the cells' positions in the coarse tile of ``shape``; ``origin``
    is the global fine (row, column) of the tile's corner; ``multipliers`` the what-if's bulk
    multipliers (:mod:`proda_engine.products.multipliers`; None: none).
    """
    fy, fx = shape[0] * factor, shape[1] * factor
    out = np.full((len(BANDS), fy * fx), np.nan, np.float32)
    n = rows.size
    if n == 0:
        return out.reshape(len(BANDS), fy, fx)
    a, b = np.meshgrid(np.arange(factor), np.arange(factor), indexing="ij")
    frow = (rows[:, None] * factor + a.reshape(-1)[None, :]).reshape(-1)  # fine cells of each coarse cell
    fcol = (cols[:, None] * factor + b.reshape(-1)[None, :]).reshape(-1)
    parent = np.repeat(np.arange(n), factor * factor)
    take = lambda x: np.ascontiguousarray(x[..., parent], dtype=np.float64)  # noqa: E731
    t = {k: take(v) for k, v in arrays.items() if k not in ("theta", "cf")}
    if subgrid is not None:
        gy, gx = frow + origin[0], fcol + origin[1]
        n1 = hash_normal(gy, gx, subgrid.seed, 1)
        n2 = hash_normal(gy, gx, subgrid.seed, 2)
        s = subgrid.input_sigma
        t["inputs"] = t["inputs"] * np.exp(s * n1 - 0.5 * s * s)[None]
        t["tsoi"] = t["tsoi"] - (subgrid.lapse_k_per_km / 1000.0 * subgrid.elevation_sd_m * n2)[None, None]
    tt = {k: torch.from_numpy(v) for k, v in t.items()}
    forcing = Forcing(tsoi=tt["tsoi"], w_scalar=tt["w_scalar"], o_scalar=tt["o_scalar"], fpi=tt["fpi"],
                      altmax=tt["altmax"], altmax_lastyear=tt["altmax_lastyear"],
                      nbedrock=tt["nbedrock"].round().to(torch.int64), inputs=tt["inputs"],
                      sand=tt.get("sand"))
    theta = None if is_default else np.ascontiguousarray(arrays["theta"][parent], dtype=np.float64)
    sol = CellSolver(forcing, grid, closure).solve(theta, multipliers=multipliers)
    cf = arrays.get("cf")
    corr = coarse_fragment_stocks(sol.stocks, None if cf is None else cf[:, parent])
    ok = sol.valid
    vals = ([corr[k] / 1000.0 for k in INTERVALS] + [sol.turnover("whole")]
            + [sol.turnover(k) for k in INTERVALS[:-1]] + [sol.diagnostics[k] for k in DIAGNOSTICS])
    flat = frow * fx + fcol
    for i, v in enumerate(vals):
        out[i, flat] = np.where(ok, v, np.nan)
    out[len(BANDS) - 1, flat] = np.where(ok, sol.status, -2)  # -2: solved but implausible
    return out.reshape(len(BANDS), fy, fx)


class TileCache:
    """Least-recently-used store of computed tiles, bounded in bytes (thread-safe).

    A tile's key is a digest of everything it is computed from (its coarse cells' forcing, parameters
    and coarse fragments, position, refinement, sub-grid settings, multipliers, soil grid, closure), so
    a hit is the same numbers by construction: panning or zooming a map back over a tile reuses it.
    """

    def __init__(self, max_bytes: int = 128 * 1024**2) -> None:
        self.max_bytes = max_bytes
        self._tiles: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = {"hits": 0, "misses": 0}

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
                self.stats["hits"] += 1
            return tile

    def put(self, key: str, tile: np.ndarray) -> None:
        with self._lock:
            if key in self._tiles:
                return
            self.stats["misses"] += 1
            self._tiles[key] = tile
            self._bytes += tile.nbytes
            while self._bytes > self.max_bytes and len(self._tiles) > 1:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._tiles)

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self._bytes = 0


#: The process's tile cache (used by ``highres_products(..., cache=True)``, e.g. the dashboard's detail).
TILE_CACHE = TileCache()


def _tile_key(sub: dict[str, np.ndarray], settings: tuple) -> str:
    """Digest of a tile's inputs and settings (the :class:`TileCache` key)."""
    h = hashlib.blake2b(repr(settings).encode(), digest_size=20)
    for k in sorted(sub):
        h.update(k.encode())
        h.update(np.ascontiguousarray(sub[k]).tobytes())
    return h.hexdigest()


def _cached_tile(key: str, *args) -> np.ndarray:
    """:func:`_tile_products` through :data:`TILE_CACHE`."""
    tile = TILE_CACHE.get(key)
    if tile is None:
        tile = _tile_products(*args)
        TILE_CACHE.put(key, tile)
    return tile


def fine_window(world: GridWorld, factor: int, bbox: tuple[float, float, float, float] | None
                ) -> tuple[slice, slice]:
    """(rows, columns) of the fine grid whose cells intersect ``bbox = (lon0, lon1, lat0, lat1)`` (degrees, the
    world's longitude convention); the whole grid for None. An empty window is an error."""
    ny, nx = world.shape[0] * factor, world.shape[1] * factor
    if bbox is None:
        return slice(0, ny), slice(0, nx)
    lon0, lon1, lat0, lat1 = (float(v) for v in bbox)
    if not (np.isfinite([lon0, lon1, lat0, lat1]).all() and lon0 < lon1 and lat0 < lat1):
        raise ValueError(f"bbox must be (lon0, lon1, lat0, lat1) with lon0 < lon1 and lat0 < lat1, found {bbox}")
    out = []
    for coarse, lo, hi in ((world.cells.lat, lat0, lat1), (world.cells.lon, lon0, lon1)):
        fine = fine_coords(coarse, factor)
        half = 0.5 * (float(np.abs(np.diff(fine)).mean()) if fine.size > 1 else 0.0)
        idx = np.flatnonzero((fine + half > lo) & (fine - half < hi))  # cells that intersect [lo, hi]
        if idx.size == 0:
            raise ValueError(f"bbox {bbox} does not intersect the world {world.name!r} "
                             f"(lon {world.cells.lon.min():.2f}..{world.cells.lon.max():.2f}, "
                             f"lat {world.cells.lat.min():.2f}..{world.cells.lat.max():.2f})")
        out.append(slice(int(idx.min()), int(idx.max()) + 1))
    return out[0], out[1]


def highres_products(world: GridWorld, params: ParameterSet | np.ndarray | xr.DataArray | str, *, factor: int = 10,
                     tile: int = 16, subgrid: SubGrid | None = SubGrid(), member: int = 0,
                     grid: Grid | None = None, closure: str | None = None, coarse_fragments: bool = True,
                     member_dim: str = "member", bbox: tuple[float, float, float, float] | None = None,
                     multipliers: Mapping[str, float] | tuple[float, ...] | None = None,
                     cache: bool = False) -> xr.Dataset:
    """Lazy (dask-backed) products of one parameter set on the grid refined ``factor`` times.

    Args:
        world: the coarse world (its cells are refined; see the module docstring).
        params: parameters of the coarse cells (one member is used: ``member``).
        factor: refinement (10: 0.5 -> 0.05 degrees).
        tile: coarse cells per tile side; a task solves up to (tile x factor)^2 fine cells
            (16 x 10 -> 25,600 cells, a few hundred MB in float64).
        subgrid: synthetic sub-grid variability, or None for pure nearest-neighbour refinement.
        grid, closure: None: the defaults, refusing parameters recorded with another closure or
            soil grid; given explicitly: used (a warning if the parameters record another).
        bbox: (lon0, lon1, lat0, lat1), degrees: only the fine cells intersecting it (a view); only the
            tiles under it are ever computed. The tiling stays global, so a view's cells are
            bit-identical to the same cells of the whole product (same ``tile``).
        multipliers: bulk what-if multipliers (mechanism -> m or a tuple in
            :data:`~proda_engine.products.multipliers.MECHANISMS` order), applied to every fine cell as
            the what-if engine applies them (:func:`~proda_engine.products.multipliers.multiplied_operator`).
        cache: keep computed tiles in :data:`TILE_CACHE` (LRU, bounded bytes) and reuse them.

    Returns:
        Dataset on the fine (lat, lon) grid with the bands of :data:`BANDS` as float32 dask arrays
        (``status``: solver status, -2 implausible, NaN outside land), chunked by tile. Nothing is
        computed until written or reduced.
    """
    import dask
    import dask.array as da

    ps = params if isinstance(params, ParameterSet) else ParameterSet(params, world, member_dim=member_dim)
    closure = ps.resolve_closure(closure)
    grid = ps.resolve_grid(grid)
    mult = None if multipliers is None else multiplier_key(multipliers)
    mult = None if mult == NO_CHANGE else mult  # one cache key for "no what-if" (the numbers are the same)
    theta = ps.member(member)
    f = world.cells.forcing
    ny, nx = world.shape
    rows_f, cols_f = fine_window(world, factor, bbox)
    row, col = np.divmod(world.cells.cells, nx)
    tensors = {"tsoi": f.tsoi, "w_scalar": f.w_scalar, "o_scalar": f.o_scalar, "fpi": f.fpi, "altmax": f.altmax,
               "altmax_lastyear": f.altmax_lastyear, "nbedrock": f.nbedrock, "inputs": f.inputs}
    if f.sand is not None:
        tensors["sand"] = f.sand
    cf = world.coarse_fragments() if coarse_fragments else None
    task = dask.delayed(_tile_products, pure=True)
    cached_task = dask.delayed(_cached_tile, pure=True)
    settings = (factor, subgrid, grid.name, closure, ps.is_default, mult)
    # tiles on the global tiling that the fine window touches (all of them without a bbox)
    ty = range((rows_f.start // factor) // tile * tile, (rows_f.stop - 1) // factor + 1, tile)
    tx = range((cols_f.start // factor) // tile * tile, (cols_f.stop - 1) // factor + 1, tile)
    block_rows = []
    for y0 in ty:
        y1 = min(y0 + tile, ny)
        brow = []
        for x0 in tx:
            x1 = min(x0 + tile, nx)
            sel = np.flatnonzero((row >= y0) & (row < y1) & (col >= x0) & (col < x1))
            # only this tile's cells are gathered (float32: the tile converts to float64 for its solve)
            sub = {k: v[..., sel].to(torch.float32).numpy() for k, v in tensors.items()}
            if theta is not None:
                sub["theta"] = np.asarray(theta[sel], dtype=np.float64)
            if cf is not None:
                sub["cf"] = cf[:, sel]
            shape = (y1 - y0, x1 - x0)
            args = (sub, row[sel] - y0, col[sel] - x0, shape, (y0 * factor, x0 * factor), factor, subgrid, grid,
                    closure, ps.is_default, mult)
            fshape = (len(BANDS), shape[0] * factor, shape[1] * factor)
            if cache:
                key = _tile_key(sub, (*settings, y0, x0, shape))
                done = TILE_CACHE.get(key)
                d = da.from_array(done, chunks=fshape) if done is not None else da.from_delayed(
                    cached_task(key, *args), shape=fshape, dtype=np.float32)
            else:
                d = da.from_delayed(task(*args), shape=fshape, dtype=np.float32)
            brow.append(d)
        block_rows.append(brow)
    arr = da.block(block_rows)
    oy, ox = ty.start * factor, tx.start * factor
    arr = arr[:, rows_f.start - oy:rows_f.stop - oy, cols_f.start - ox:cols_f.stop - ox]
    lat = fine_coords(world.cells.lat, factor)
    lon = fine_coords(world.cells.lon, factor)
    res = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else float("nan")
    lat, lon = lat[rows_f], lon[cols_f]
    ds = xr.Dataset(coords={"lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})})
    for i, b in enumerate(BANDS):
        attrs = ({"long_name": "solver status (0 ok; -2 implausible; NaN not land)", "units": "1"}
                 if b == "status" else _attrs("turnover_whole" if b == "turnover" else b))
        ds[b] = (("lat", "lon"), arr[i], attrs)
    ds.attrs.update({
        "title": "PRODA / CLM5 matrix model high-resolution steady-state products (derived forcing)",
        "Conventions": "CF-1.8", "world": world.name, "refinement_factor": factor,
        "resolution_deg": res,
        "parameters": ps.label, "member": member,
        "forcing": forcing_note(subgrid),
        "tile_cells": f"{tile * factor} x {tile * factor}",
        **parameter_file_attrs(closure, grid.name, lat=lat, lon=lon),
    })
    if bbox is not None:
        ds.attrs["bbox"] = ", ".join(f"{v:g}" for v in bbox)
    if mult is not None:
        ds.attrs["multipliers"] = ", ".join(f"{m}={v:.6g}" for m, v in zip(MECHANISMS, mult))
    return ds


def forcing_note(subgrid: SubGrid | None) -> str:
    """How the fine forcing was derived (for attributes and the dashboard's provenance)."""
    return "nearest-neighbour refinement of the coarse world" + (
        "" if subgrid is None else f" + synthetic sub-grid variability: inputs x lognormal(sigma="
        f"{subgrid.input_sigma}), TSOI - {subgrid.lapse_k_per_km} K/km x N(0, {subgrid.elevation_sd_m} m), "
        f"seed {subgrid.seed}")


def write_highres(ds: xr.Dataset, path: str | PathLike, *, scheduler: str = "threads", n_workers: int = 1) -> Path:
    """Compute and write the lazy products tile by tile (netCDF; Zarr for a ``.zarr`` path when the
    optional ``zarr`` package is installed). ``scheduler``: a dask scheduler name (``threads``,
    ``synchronous``, ``processes``) or ``"distributed"`` to use the active ``dask.distributed``
    client (e.g. from :func:`proda_engine.distributed.get_client`)."""
    import dask

    p = Path(path)
    kw = {} if scheduler == "distributed" else {"scheduler": scheduler, "num_workers": n_workers}
    enc = {v: {"zlib": True, "complevel": 4, "chunksizes": tuple(c[0] for c in ds[v].chunks)} for v in ds.data_vars}
    with dask.config.set(**kw) if kw else _null():
        if p.suffix == ".zarr":
            ds.to_zarr(p, mode="w")
            return p
        # computed tile by tile inside the atomic writer: a failed tile leaves no partial file
        write_product(ds, p, encoding=enc)
    return p


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def highres_totals(ds: xr.Dataset, regions: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Area-weighted totals (Pg C) of the stock bands and the carbon input (Pg C yr-1), reduced lazily
    tile by tile (works on a freshly opened, chunked file or on the lazy Dataset)."""
    import dask

    area = xr.DataArray(cell_area(ds["lat"].values, ds["lon"].values), dims=("lat", "lon"))
    if ds.chunks:
        area = area.chunk({d: ds.chunks[d] for d in ("lat", "lon")})
    lazy = {f"soc_{k}": (ds[f"soc_stock_{suffix(k)}"] * area).sum() * 1000.0 / PG for k in INTERVALS}
    lazy["input"] = (ds["input"] * area).sum() / PG
    lazy["n_cells"] = ds["soc_stock_whole"].notnull().sum()
    lazy["turnover_mean"] = ds["turnover"].mean()
    vals = dask.compute(*lazy.values())
    return {k: float(v) for k, v in zip(lazy, vals)}


def run_highres(world: GridWorld, params, out: str | PathLike, *, factor: int = 10, tile: int = 16,
                subgrid: SubGrid | None = SubGrid(), n_workers: int = 1, scheduler: str = "threads") -> dict:
    """Build, write and total the high-resolution products; returns timings, totals and sizes."""
    t0 = time.perf_counter()
    ds = highres_products(world, params, factor=factor, tile=tile, subgrid=subgrid)
    write_highres(ds, out, scheduler=scheduler, n_workers=n_workers)
    t1 = time.perf_counter()
    with xr.open_dataset(out, chunks={"lat": tile * factor, "lon": tile * factor}) as f:
        tot = highres_totals(f)
    return {"grid_cells": int(ds.sizes["lat"] * ds.sizes["lon"]), "land_cells": world.n_cells * factor**2,
            "seconds_write": round(t1 - t0, 1), "seconds_total": round(time.perf_counter() - t0, 1), **tot}


#: Variables of :func:`view_detail` (the what-if map's variables).
DETAIL_VARIABLES: tuple[str, ...] = ("soc_stock", "soc_change", "turnover", "cue")
#: A view with more fine grid cells than this is refused (the dashboard asks to zoom in further).
DETAIL_MAX_CELLS = 250_000
#: Coarse cells per tile side of a view: small tiles waste little outside the view (a 10° view at 0.05°
#: touches 6 x 6 tiles of 40 x 40 fine cells) and pan/zoom reuse them from :data:`TILE_CACHE`.
DETAIL_TILE = 4


def detail_factor(world: GridWorld, resolution: float = 0.05) -> int:
    """Refinement that takes the world's grid to ``resolution`` degrees (0.5° -> 10; at least 1)."""
    lat = world.cells.lat
    coarse = float(np.abs(np.diff(lat)).mean()) if lat.size > 1 else 0.5
    return max(1, round(coarse / resolution))


def view_detail(world: GridWorld, params: np.ndarray | str, bbox: tuple[float, float, float, float], *,
                variable: str = "soc_stock", depth: str = "0-100cm",
                multipliers: Mapping[str, float] | tuple[float, ...] | None = None, resolution: float = 0.05,
                subgrid: SubGrid | None = SubGrid(), max_cells: int = DETAIL_MAX_CELLS, grid: Grid | None = None,
                closure: str | None = None, tile: int = DETAIL_TILE) -> xr.DataArray:
    """One map variable of a what-if on the ``resolution``-degree grid over ``bbox`` only (computed now).

    ``soc_stock`` (kg C m-2, coarse-fragment corrected) and ``turnover`` (yr) of ``depth``, ``cue`` (whole
    profile only: the tiles keep CUE of the whole column) and ``soc_change`` (kg C m-2: the what-if minus the
    baseline, both at fine resolution). The tiles are computed synchronously in the calling thread and kept
    in :data:`TILE_CACHE`. A bbox of more than ``max_cells`` fine grid cells is refused (ValueError).
    """
    if variable not in DETAIL_VARIABLES:
        raise ValueError(f"no fine-resolution detail for variable {variable!r}; expected one of "
                         f"{list(DETAIL_VARIABLES)}")
    if depth not in INTERVALS:
        raise ValueError(f"unknown depth interval {depth!r}; expected one of {list(INTERVALS)}")
    if variable == "cue" and depth != "whole":
        raise ValueError("fine-resolution CUE is of the whole profile only: choose depth 'whole'")
    factor = detail_factor(world, resolution)
    rows, cols = fine_window(world, factor, bbox)
    n = (rows.stop - rows.start) * (cols.stop - cols.start)
    if n > max_cells:
        raise ValueError(f"the view holds {n:,} cells at {resolution:g}° (at most {max_cells:,}): zoom in further "
                         f"for {resolution:g}° detail")
    band = {"soc_stock": f"soc_stock_{suffix(depth)}", "soc_change": f"soc_stock_{suffix(depth)}",
            "turnover": "turnover" if depth == "whole" else f"turnover_{suffix(depth)}", "cue": "cue"}[variable]
    kw = dict(factor=factor, tile=tile, subgrid=subgrid, grid=grid, closure=closure, bbox=bbox, cache=True)
    import dask

    with dask.config.set(scheduler="synchronous"):  # the caller's thread: the dashboard's lane owns its CPU share
        ds = highres_products(world, params, multipliers=multipliers, **kw)
        values = ds[band].values
        if variable == "soc_change":
            values = values - highres_products(world, params, **kw)[band].values
    attrs = dict(ds[band].attrs)
    if variable == "soc_change":
        attrs["long_name"] = f"SOC change vs baseline {depth} (what-if minus baseline)"
    if variable == "cue":
        attrs["long_name"] = "microbial carbon use efficiency, whole profile"
    attrs.update({k: ds.attrs[k] for k in ("world", "resolution_deg", "refinement_factor", "forcing",
                                           "parameters", "bbox") if k in ds.attrs})
    attrs["multipliers"] = ds.attrs.get("multipliers", "none (baseline)")
    attrs["n_cells"] = int(np.isfinite(values).sum())
    return xr.DataArray(values.astype(np.float32), dims=("lat", "lon"),
                        coords={"lat": ds["lat"], "lon": ds["lon"]}, name=variable, attrs=attrs)
