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
    from proda_engine.workflows import build_twin_world

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


def cmd_assimilate(args: argparse.Namespace) -> int:
    """``proda assimilate --config run.yml [--scheduler ADDRESS] [--resume] [--batch-da]``."""
    from proda_engine.inference.config import AssimilateConfig
    from proda_engine.inference.pipeline import assimilate

    cfg = AssimilateConfig.from_yaml(args.config)
    overrides: dict = {}
    if args.scheduler is not None:
        overrides["scheduler"] = args.scheduler
    if args.resume:
        overrides["resume"] = True
    if args.batch_da:
        overrides["mode"] = "batch"
    if args.out is not None:
        overrides["out"] = str(args.out)
    if args.max_sites is not None:
        overrides["max_sites"] = args.max_sites
    if args.workers is not None:
        overrides["n_workers"] = args.workers
    if args.no_progress:
        overrides["progress"] = False
    if overrides:
        cfg = cfg.replace(**overrides)
    t0 = time.perf_counter()
    try:
        res = assimilate(cfg)
    except FileExistsError as exc:  # an earlier run in the out folder: say how to continue it
        raise SystemExit(f"proda assimilate: error: {exc}") from None
    rep = res.report
    if cfg.mode == "batch":
        print(f"batch DA: {rep['n_sites']} sites, total cost {rep['total_cost_theta0']:.4g} at theta=0.5 -> "
              f"{rep['total_cost_mean']:.4g} at the posterior mean; {time.perf_counter() - t0:.1f} s -> "
              f"{res.folder / 'batch_da.nc'}")
    else:
        print(f"assimilated {rep['n_sites']} sites ({rep['sites']}; {rep['n_usable']} usable, "
              f"{rep['e_negative_excluded']} excluded for E < 0, {rep['rhat_flagged_sites']} R-hat flags; "
              f"batches {rep['batches']['computed']} computed, {rep['batches']['reused']} reused) in "
              f"{time.perf_counter() - t0:.1f} s -> {res.folder / 'posterior.nc'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import xarray as xr

    from proda_engine.learning.config import TrainConfig
    from proda_engine.workflows import train_world

    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in (("max_epochs", args.epochs), ("seed", args.seed), ("device", args.device),
                                   ("block_size", args.block_size)) if v}
    cfg = cfg.replace(**overrides)
    targets = xr.open_dataset(args.targets).load() if args.targets else None
    res = train_world(args.world, method=args.method, config=cfg, max_sites=args.max_sites, targets=targets)
    ev = res.report.get("evaluation") or {}
    print(f"trained {args.method} on {res.report.get('sites')} sites in {res.seconds:.0f} s")
    for part in ("val", "test"):
        if part in ev and isinstance(ev[part], dict):
            m = ev[part]
            rmse = m.get("rmse", float("nan")) / 1000.0
            print(f"  {part}: E = {m.get('e', float('nan')):.3f}, RMSE = {rmse:.2f} kg C m-3")
    print(f"parameter map -> {res.theta_path}\nmodel -> {res.model_path}")
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
    a = sub.add_parser("assimilate", help="site-level MCMC for every profile (or one batch-DA fit)")
    a.add_argument("--config", type=Path, required=True, help="YAML run configuration (see configs/)")
    a.add_argument("--scheduler", help="Dask scheduler address, or 'inline' (default: a local cluster)")
    a.add_argument("--resume", action="store_true", help="continue an interrupted run in the same out folder")
    a.add_argument("--batch-da", action="store_true", help="fit one parameter set to all profiles (mode: batch)")
    a.add_argument("--out", type=Path, help="run folder (overrides the config's 'out')")
    a.add_argument("--max-sites", type=int, help="assimilate only the first N profiles (demos)")
    a.add_argument("--workers", type=int, help="local-cluster workers (overrides 'n_workers')")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_assimilate)
    w = sub.add_parser("world", help="build (or reuse) the default world and its twin observations, offline")
    w.add_argument("--name", default="default", help="cache name; a region name (tiny, europe, conus, ...) selects it")
    w.add_argument("--region", default=None, help="region name or leave empty for the globe")
    w.add_argument("--n-sites", type=int, default=None, help="twin profiles to write (default: all sampled sites)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--rebuild-twin", action="store_true", help="rewrite the twin observations")
    w.set_defaults(func=cmd_world)
    t = sub.add_parser("train", help="train the PRODA network on a world's observations; writes its parameter map")
    t.add_argument("--world", default="default")
    t.add_argument("--method", choices=["end-to-end", "two-step"], default="end-to-end")
    t.add_argument("--config", type=Path, help="TrainConfig YAML (unknown keys are rejected)")
    t.add_argument("--targets", type=Path, help="two-step: MCMC posterior netCDF (theta per site, lat, lon)")
    t.add_argument("--max-sites", type=int, default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default=None, help="cpu, cuda or auto")
    t.add_argument("--block-size", type=float, default=None, help="spatial split block, degrees (default 5)")
    t.set_defaults(func=cmd_train)
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
