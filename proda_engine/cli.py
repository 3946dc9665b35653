"""Command line: ``proda <command>``. Each command is a thin layer over :mod:`proda_engine.api`.

    proda simulate --forcing FORCING.nc [--params PARAMS.nc | --preset default|midpoint] --out OUT.nc
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("proda")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _provenance(args: argparse.Namespace, inputs: list[Path]) -> dict[str, str]:
    from proda_engine import __version__

    return {
        "proda_version": __version__,
        "command": " ".join(sys.argv) if sys.argv else "",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                              if k != "func"}),
        "input_sha256": json.dumps({str(p): _sha256(p) for p in inputs}),
    }


def cmd_simulate(args: argparse.Namespace) -> int:
    import xarray as xr

    from proda_engine import api
    from proda_engine.data import write_netcdf_atomic

    if (args.params is None) == (args.preset is None):
        raise SystemExit("proda simulate: give exactly one of --params PARAMS.nc or --preset default|midpoint")
    theta = None
    inputs = [Path(p) for p in args.forcing]
    if args.params is not None:
        with xr.open_dataset(args.params) as pds:
            if "theta" not in pds:
                raise SystemExit(f"{args.params}: expected a variable 'theta' (unit-interval parameters with a "
                                 f"'parameter' dimension), found {list(pds.data_vars)}")
            theta = pds["theta"].load()
        inputs.append(Path(args.params))
    t0 = time.perf_counter()
    ds = api.simulate(args.forcing, theta, preset=args.preset, closure=args.closure, grid=args.grid,
                      include_pools=args.pools, device=args.device, float32=args.float32)
    ds.attrs.update(_provenance(args, inputs))
    write_netcdf_atomic(ds, args.out)
    n_ok = int((ds["status"] == 0).sum())
    print(f"simulated {n_ok} cells ({ds.attrs['status_counts']}) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    from proda_engine import api
    from proda_engine.products.twin import build_twin_world

    tw = build_twin_world(args.name, args.region, n_sites=args.n_sites, seed=args.seed, rebuild_twin=args.rebuild_twin)
    print(f"world {args.name!r} ready in {tw.build_seconds:.1f} s at {tw.paths.root}")
    if tw.twin is not None:
        print(f"twin observations: {tw.twin.get('n_sites')} profiles, {tw.twin.get('n_layers')} layers "
              f"-> {tw.paths.wosis_dir}")
    eng = api.world_engine(args.name)
    area = eng.area.reshape(-1)[eng.cells]
    npp = float((eng.forcing.inputs.sum(0).numpy() * area).sum() / 1e15)
    print(f"land cells: {eng.forcing.n_cells}; carbon input (NPP): {npp:.1f} Pg C/yr")
    for depth in api.depth_intervals():
        r = api.what_if({}, depth=depth, world=args.name, source="twin_truth")
        print(f"twin-truth SOC {depth:>8s}: {r.totals['total_pg']:8.0f} Pg C")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="proda", description="PRODA engine: CLM5 soil-carbon matrix model, "
                                 "data assimilation, neural up-scaling and global products.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="steady state for every valid cell of a forcing file")
    s.add_argument("--forcing", nargs="+", required=True, help="CLM5-history-style netCDF file(s)")
    s.add_argument("--params", type=Path, help="netCDF with unit-interval 'theta' (parameter[, lat, lon | site])")
    s.add_argument("--preset", choices=["default", "midpoint"], help="default CLM5 or theta = 0.5")
    s.add_argument("--out", type=Path, required=True, help="output netCDF (written atomically)")
    s.add_argument("--closure", choices=["conservative", "legacy"], default="conservative")
    s.add_argument("--grid", choices=["clm5_20", "clm45_10"], default="clm5_20")
    s.add_argument("--pools", action="store_true", help="also write all 7 pools per layer")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--float32", action="store_true", help="single precision (opt-in; float64 is the default)")
    s.set_defaults(func=cmd_simulate)
    w = sub.add_parser("world", help="build (or reuse) the default world and its twin observations, offline")
    w.add_argument("--name", default="default", help="cache name; a region name (tiny, europe, conus, ...) selects it")
    w.add_argument("--region", default=None, help="region name or leave empty for the globe")
    w.add_argument("--n-sites", type=int, default=None, help="twin profiles to write (default: all sampled sites)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--rebuild-twin", action="store_true", help="rewrite the twin observations")
    w.set_defaults(func=cmd_world)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # data errors name file/variable/expected/found
        print(f"proda {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
