"""Command line: ``proda <command>``. Each command is a thin layer over :mod:`proda_engine.api`.

    proda simulate --forcing FORCING.nc [--params PARAMS.nc | --preset default|midpoint] --out OUT.nc
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("proda")

_CLOSURE_HELP = ("transport closure (default conservative); a parameter file recording another closure is refused "
                 "unless this is given (then it is used, with a warning)")


#: How each command's flags mirror its run config (proda_engine.config.add_config_arguments): fields the
#: command handles itself are excluded, and a few flags keep their historical names.
_TRAIN_FLAGS: dict = {"exclude": ("method", "extra"), "rename": {"max_epochs": "epochs", "n_members": "members"}}
_ASSIMILATE_FLAGS: dict = {"exclude": ("catalog", "mcmc"), "rename": {"n_workers": "workers"}}
_SCENARIO_FLAGS: dict = {"overrides": {"source": {"action": "append", "nargs": None}, "map_years": {"nargs": "*"}}}


class _CommandParser(argparse.ArgumentParser):
    """A command's parser whose config-derived flags are added when the command is parsed or its help
    shown: the config models import torch / numba / the products, which ``proda --help`` and the
    other commands should not pay for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list = []

    def defer(self, add_flags) -> None:
        """Run ``add_flags(self)`` before this parser is first used."""
        self._deferred.append(add_flags)

    def add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self.add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.add_deferred()
        return super().format_help()


def _assimilate_flags(p: argparse.ArgumentParser) -> None:
    from proda_engine.config import add_config_arguments
    from proda_engine.inference.config import AssimilateConfig

    add_config_arguments(p.add_argument_group("run settings", "override the --config file's keys"), AssimilateConfig,
                         **_ASSIMILATE_FLAGS, show_defaults=False)


def _train_flags(p: argparse.ArgumentParser) -> None:
    from proda_engine.config import add_config_arguments
    from proda_engine.learning.config import TrainConfig

    add_config_arguments(p.add_argument_group("training settings", "override --config, or the defaults of --method "
                                              "(end to end: workflows.E2E_DEFAULTS; measured profiles: "
                                              "workflows.MEASURED_E2E_DEFAULTS)"),
                         TrainConfig, **_TRAIN_FLAGS, show_defaults=False)


def _scenario_flags(p: argparse.ArgumentParser) -> None:
    from proda_engine.config import add_config_arguments
    from proda_engine.scenario_api import ScenarioConfig

    add_config_arguments(p.add_argument_group("scenario settings", "override the --config file's keys"),
                         ScenarioConfig, **_SCENARIO_FLAGS)


def _provenance(args: argparse.Namespace, inputs: list[Path]) -> dict[str, str]:
    from proda_engine.data.writers import sha256_file, version_attrs

    return {
        **version_attrs(),
        "command": " ".join(sys.argv) if sys.argv else "",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                              if k != "func"}),
        "input_sha256": json.dumps({str(p): sha256_file(p) for p in inputs}),
    }


def _run_record(args: argparse.Namespace, folder: Path, inputs: list[Path]) -> None:
    """``config.yaml`` (the command's arguments) and ``provenance.json`` (versions, input sha256, command
    line) in the run folder ``folder`` of a command that writes a folder of outputs."""
    from proda_engine.data.writers import RunFolder

    rf = RunFolder.at(folder)
    rf.write_config({k: v for k, v in vars(args).items() if k != "func"})
    rf.write_provenance(inputs)


def _use_world(args: argparse.Namespace) -> str:
    """Register ``--catalog`` (or ``$PRODA_CATALOG``) so ``--world`` may name one of its ``worlds:``; the
    world name, defaulting to ``$PRODA_WORLD`` or ``default``. Sets ``PRODA_CATALOG`` for served sessions."""
    import os

    from proda_engine.data.worlds import register_catalog, world_name

    catalog = getattr(args, "catalog", None)
    if catalog is not None:
        register_catalog(catalog)
        os.environ["PRODA_CATALOG"] = str(Path(catalog).expanduser().resolve())
    return world_name(getattr(args, "world", None))


def _add_world_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--world NAME`` and ``--catalog FILE`` (a catalog whose ``worlds:`` may define NAME)."""
    p.add_argument("--world", default=default, help="a built-in world (default, tiny, europe, ...) or a world "
                   "named in the catalog's 'worlds:' (default: $PRODA_WORLD or 'default')")
    p.add_argument("--catalog", type=Path, default=None,
                   help="data catalog YAML defining --world (default: $PRODA_CATALOG, then data_catalog.yaml)")


def cmd_simulate(args: argparse.Namespace) -> int:
    from proda_engine import api
    from proda_engine.data.parameter_files import read_parameter_file
    from proda_engine.data.writers import write_product

    if (args.params is None) == (args.preset is None):
        raise SystemExit("proda simulate: give exactly one of --params PARAMS.nc or --preset default|midpoint")
    theta = None
    inputs = [Path(p) for p in args.forcing]
    if args.params is not None:
        # names in any spelling, the forcing's longitudes in either convention; closure/grid checked by api.simulate
        theta = read_parameter_file(args.params)
        inputs.append(Path(args.params))
    t0 = time.perf_counter()
    ds = api.simulate(args.forcing, theta, preset=args.preset, closure=args.closure, grid=args.grid,
                      include_pools=args.pools, device=args.device, float32=args.float32)
    ds.attrs.update(_provenance(args, inputs))
    write_product(ds, args.out)
    n_ok = int((ds["status"] == 0).sum())
    print(f"simulated {n_ok} cells ({ds.attrs['status_counts']}) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    import numpy as np

    from proda_engine import api
    from proda_engine.workflows import build_twin_world

    tw = build_twin_world(args.name, args.region, n_sites=args.n_sites, seed=args.seed, rebuild_twin=args.rebuild_twin)
    print(f"world {args.name!r} ready in {tw.build_seconds:.1f} s at {tw.paths.root}")
    if tw.twin is not None:
        print(f"twin observations: {tw.twin.get('n_sites')} profiles, {tw.twin.get('n_layers')} layers "
              f"-> {tw.paths.wosis_dir}")
    eng = api.world_engine(args.name)
    base = eng.baseline("twin_truth")  # the same totals convention as proda map and the dashboard
    npp = float(np.nansum(base.diagnostics["input"] * eng.cell_area) / 1e15)
    print(f"land cells: {eng.forcing.n_cells} ({int(base.valid.sum())} valid under the twin truth); "
          f"carbon input (NPP): {npp:.1f} Pg C/yr")
    for depth in api.depth_intervals():
        r = api.what_if({}, depth=depth, world=args.name, source="twin_truth")
        print(f"twin-truth SOC {depth:>8s}: {r.totals['total_pg']:8.1f} Pg C")
    print(f"numbers from: {r.totals['note']} (world {args.name!r}). Totals: {r.totals['totals_convention']}")
    return 0


def cmd_assimilate(args: argparse.Namespace) -> int:
    """``proda assimilate --config run.yml [--scheduler ADDRESS] [--resume] [--batch-da]``."""
    from proda_engine.config import config_from_args
    from proda_engine.inference.config import AssimilateConfig
    from proda_engine.inference.pipeline import assimilate

    cfg = AssimilateConfig.from_yaml(args.config)
    overrides: dict = {}
    if args.world is not None or args.catalog is not None:  # the world's profiles and forcing replace the config's
        from proda_engine.data.worlds import resolve_world

        spec = resolve_world(_use_world(args))
        if not spec.profiles:
            raise SystemExit(f"proda assimilate: world {spec.name!r} has no profiles source")
        overrides.update(profiles_path=[str(p) for p in spec.profiles], profiles_layout=spec.profiles_layout,
                         forcing_path=[str(p) for p in spec.forcing])
        overrides["out"] = str(spec.products / "assimilate")  # unless --out is given
    if args.batch_da:
        overrides["mode"] = "batch"
    if overrides:
        cfg = cfg.replace(**overrides)
    cfg = config_from_args(AssimilateConfig, args, cfg, exclude=_ASSIMILATE_FLAGS["exclude"])  # flags win
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

    from proda_engine.config import config_from_args
    from proda_engine.data.worlds import resolve_world
    from proda_engine.learning.config import TrainConfig
    from proda_engine.workflows import default_train_config, measured_train_config, train_world

    world = _use_world(args)
    if args.config:
        cfg = TrainConfig.from_yaml(args.config)
    elif args.method == "end-to-end" and resolve_world(world).kind == "catalog":
        cfg = measured_train_config()  # measured profiles: the cross-validated setup (docs/evaluation.md)
    else:
        cfg = default_train_config(args.method)
    cfg = config_from_args(TrainConfig, args, cfg, exclude=_TRAIN_FLAGS["exclude"])  # flags override the file
    targets = xr.open_dataset(args.targets).load() if args.targets else None
    res = train_world(world, method=args.method, config=cfg, max_sites=args.max_sites, targets=targets,
                      out=args.out, max_distance_km=args.max_distance_km)
    rep = res.report
    if "sites_read" in rep:
        print(f"world {world!r}: {rep['sites_read']} profiles read, {rep['sites']} used "
              f"({rep['single_layer_sites']} single-layer, {rep['multi_layer_sites']} multi-layer); dropped: "
              f"{rep['sites_dropped'] or 'none'}")
    ev = res.report.get("evaluation") or {}
    print(f"trained {args.method} on {res.report.get('sites')} sites in {res.seconds:.0f} s")
    for part in ("val", "test"):
        if part in ev and isinstance(ev[part], dict):
            m = ev[part]
            rmse = m.get("rmse", float("nan")) / 1000.0
            print(f"  {part}: E = {m.get('e', float('nan')):.3f}, RMSE = {rmse:.2f} kg C m-3")
    print(f"parameter map -> {res.theta_path}" + (f" and {args.out}" if args.out else "")
          + f"\nmodel -> {res.model_path}")
    if cfg.n_members > 1:
        print(f"ensemble of {cfg.n_members} members -> {res.theta_path.with_name(res.theta_path.stem + '_members.nc')}")
    return 0


def _load_params(path: Path | None, world, member_dim: str, preset: str | None):
    """Parameter source of `proda map` / `proda sensitivity`: a theta file, a preset, or the twin truth."""
    from proda_engine.data.parameter_files import read_parameter_file

    if path is not None and preset is not None:
        raise SystemExit("give at most one of --params THETA.nc and --preset")
    if preset is not None:
        return preset, f"preset {preset}"
    if path is None:
        if world.truth is None:
            raise SystemExit(f"world {world.name!r} has no twin truth; give --params THETA.nc")
        return world.truth, "twin truth (synthetic world's known parameters)"
    # lazily: a large ensemble is read member by member; names/longitudes/closure checked by ParameterSet
    return read_parameter_file(path, load=False), str(path)


def _map_reference(ds, world, args: argparse.Namespace) -> None:
    """``proda map --reference [NAME]``: the products against a reference map (files next to ``--out``)."""
    import xarray as xr

    from proda_engine.plot import write_reference_figure
    from proda_engine.products.reference import write_reference_comparison

    files, tab = write_reference_comparison(ds, world, args.out, name=args.reference)
    with xr.open_dataset(files["maps"]) as maps:  # the figure draws exactly what was written
        files["plot"] = write_reference_figure(maps, tab, args.out)
    for _, r in tab.iterrows():
        print(f"  vs {r['reference']} {r['interval']:>8s}: model {r['model_pg']:.4g}, reference "
              f"{r['reference_pg']:.4g} Pg C (difference {r['difference_pg']:+.3g}, r = {r['r']:.2f}, "
              f"{r['n_cells']} cells)")
    print("reference comparison -> " + ", ".join(str(p.name) for p in files.values()))


def _evaluate_reference(world: str, name: str, out: Path) -> None:
    """``proda evaluate --reference [NAME]``: every parameter source's stocks against a reference map."""
    from proda_engine import api
    from proda_engine.data.writers import write_csv_atomic

    tab = api.reference_table(world=world, name=name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(tab, out / "reference_comparison.csv", index=False)
    g = tab[tab.region == "globe"]
    print(f"| source | interval | model Pg C | {g['reference'].iloc[0]} Pg C | difference | r |")
    print("|---|---|---|---|---|---|")
    for _, r in g.iterrows():
        print(f"| {r['source']} | {r['interval']} | {r['model_pg']:.4g} | {r['reference_pg']:.4g} | "
              f"{r['difference_pg']:+.3g} | {r['r']:.2f} |")
    print(f"reference comparison by source, interval and region -> {out / 'reference_comparison.csv'}")


def cmd_map(args: argparse.Namespace) -> int:
    """``proda map --world NAME [--params THETA.nc | --preset default|midpoint] --out OUT.nc``."""
    from proda_engine.data.writers import write_csv_atomic
    from proda_engine.products.gridded import (
        gridded_products,
        group_summaries,
        load_grid_world,
        totals_table,
        write_products,
    )

    t0 = time.perf_counter()
    world = load_grid_world(_use_world(args))
    params, label = _load_params(args.params, world, args.member_dim, args.preset)
    if args.refine and args.refine > 1:
        from proda_engine.products.highres import highres_products, highres_totals, write_highres

        ds = highres_products(world, params, factor=args.refine, tile=args.tile, member_dim=args.member_dim,
                              closure=args.closure)
        ds.attrs.update(_provenance(args, [args.params] if args.params else []))
        write_highres(ds, args.out, n_workers=args.workers)
        import xarray as xr

        with xr.open_dataset(args.out, chunks={"lat": args.tile * args.refine, "lon": args.tile * args.refine}) as f:
            tot = highres_totals(f)
        print(f"high-resolution ({ds.attrs['resolution_deg']:.3f} deg, {ds.sizes['lat']} x {ds.sizes['lon']}) "
              f"products in {time.perf_counter() - t0:.1f} s -> {args.out}")
        for k, v in tot.items():
            print(f"  {k}: {v:.4g}")
        return 0
    from proda_engine.products.gridded import ParameterSet

    ps = ParameterSet(params, world, member_dim=args.member_dim, label=label)
    ds = gridded_products(world, ps, keep_members=args.keep_members, chunk_size=args.chunk_size,
                          coarse_fragments=not args.no_coarse_fragments, closure=args.closure)
    ds.attrs.update(_provenance(args, [args.params] if args.params else []))
    write_products(ds, args.out)
    tab = totals_table(ds)
    out = Path(args.out)
    write_csv_atomic(tab, out.with_name(out.stem + "_totals.csv"), index=False)
    write_csv_atomic(group_summaries(ds, world), out.with_name(out.stem + "_groups.csv"), index=False)
    if args.reference:
        _map_reference(ds, world, args)
    print(f"mapped {ds.attrs['n_members']} member(s) of {world.n_cells} cells in {time.perf_counter() - t0:.1f} s "
          f"-> {args.out}")
    g = tab[tab.region == "globe"]
    for _, r in g.iterrows():
        sd = "" if r["sd"] != r["sd"] else f" +- {r['sd']:.3g}"
        print(f"  globe {r['quantity']:>16s}: {r['mean']:.6g}{sd} {r['units']}")
    print(f"numbers from: world {world.name!r} ({ds.attrs.get('data_kind', 'unknown data')}), parameters {label}")
    return 0


def _cell_mask(world, region: str | None):
    """(C,) mask and label of a named region of a loaded world (``globe``, ``continent:Europe``,
    ``koppen:D``, ``landcover:forest``, ``conus``) or a box ``box:lon0,lon1,lat0,lat1``."""
    from proda_engine.products.gridded import cell_masks, default_regions
    from proda_engine.products.regions import Region

    if region is None or region == "globe":
        return None, "Globe"
    if region.startswith("box:"):
        lon0, lon1, lat0, lat1 = (float(v) for v in region[4:].split(","))
        reg = Region("box", (lon0, lon1, lat0, lat1), f"box {lon0:.1f}..{lon1:.1f}E, {lat0:.1f}..{lat1:.1f}N")
    else:
        named = default_regions(world)
        if region not in named:
            raise SystemExit(f"unknown region {region!r}; choose one of {sorted(named)} or box:lon0,lon1,lat0,lat1")
        reg = named[region]
    return cell_masks(world, {region: reg})[0], reg.label


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """``proda sensitivity --world NAME [--params THETA.nc] --out DIR``: spec (j) +1 % bulk-process table."""
    from proda_engine.plot import write_sensitivity_figures
    from proda_engine.products.gridded import ParameterSet, load_grid_world
    from proda_engine.products.sensitivity import marginal_sensitivity

    t0 = time.perf_counter()
    world = load_grid_world(_use_world(args))
    params, label = _load_params(args.params, world, args.member_dim, None)
    mask, region_label = _cell_mask(world, args.region)
    res = marginal_sensitivity(world, ParameterSet(params, world, member_dim=args.member_dim, label=label),
                               chunk_size=args.chunk_size, closure=args.closure, cell_mask=mask, depth=args.depth,
                               region_label=region_label)
    files = res.write(args.out)
    files.update(write_sensitivity_figures(res, args.out))
    _run_record(args, Path(args.out), [args.params] if args.params else [])
    s = res.summary()
    print(f"marginal sensitivity of {world.n_cells} cells ({region_label}, {args.depth}), "
          f"{int(res.curves.attrs['n_members'])} member(s), {time.perf_counter() - t0:.1f} s -> {args.out}")
    print(f"numbers from: world {world.name!r} ({res.curves.attrs.get('data_kind', 'unknown data')}), "
          f"parameters {label}")
    for _, r in s.iterrows():
        sd = "" if r["plus1pct_stock_pg_sd"] != r["plus1pct_stock_pg_sd"] else f" +- {r['plus1pct_stock_pg_sd']:.3g}"
        print(f"  +1 % {r['group']:>3s} ({r['metric']}): {r['plus1pct_stock_pg_mean']:+.4g}{sd} Pg C; "
              f"elasticity {r['elasticity_stock_mean']:+.3f}; turnover {r['plus1pct_turnover_yr_mean']:+.3g} yr")
    print("files: " + ", ".join(str(p.name) for p in files.values()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Open the dashboard on a world; the first run builds the world (and, unless --no-train, trains a
    bootstrap ensemble of PRODA end to end on its observations, so every number shows +- s.d. from the
    first page) into the cache, later runs start in seconds."""
    from dashboard.app import serve, websocket_origins
    from proda_engine.data.worlds import resolve_world
    from proda_engine.workflows import FIRST_RUN_SITES, SOURCE_FOR_METHOD, first_run_config, train_world

    if args.num_procs < 1:
        print(f"proda serve: --num-procs must be >= 1, found {args.num_procs}", file=sys.stderr)
        return 2
    try:  # before any build or training: a wildcard bind without origins fails at once
        origins = websocket_origins(args.address, args.port, args.allow_websocket_origin)
    except ValueError as exc:
        print(f"proda serve: {exc}", file=sys.stderr)
        return 2
    world = _use_world(args)
    spec = resolve_world(world)
    theta = spec.products / f"theta_{SOURCE_FOR_METHOD['end-to-end']}.nc"
    if not args.no_train and not theta.exists() and (spec.kind == "builtin" or spec.profiles):
        what = "synthetic twin observations" if spec.kind == "builtin" else "measured profiles"
        cfg = first_run_config(**{k: v for k, v in (("max_epochs", args.train_epochs), ("n_members", args.members))
                                  if v is not None})
        print(f"first run: training a {cfg.n_members}-member bootstrap ensemble of PRODA end to end on the "
              f"{world!r} world's {what} (a few minutes, see docs/dashboard.md; `proda train` retrains)", flush=True)
        t0 = time.perf_counter()
        sites = args.train_sites if args.train_sites is not None else FIRST_RUN_SITES
        res = train_world(world, method="end-to-end", config=cfg, max_sites=sites or None)
        test_e = [m["test"]["e"] for m in res.report.get("members") or [] if m and m.get("test")]
        skill = f"; held-out E per member {min(test_e):.3f}-{max(test_e):.3f}" if test_e else ""
        print(f"trained {cfg.n_members} member(s) in {time.perf_counter() - t0:.0f} s{skill}", flush=True)
    print(f"serving the dashboard on http://{args.address}:{args.port}/ (world {world!r}; pages from "
          f"{', '.join(origins)}); Ctrl-C stops")
    serve(port=args.port, address=args.address, show=args.show, world=world,
          allow_websocket_origin=args.allow_websocket_origin, num_procs=args.num_procs)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``proda evaluate --world NAME [--catalog F] [--folds K] [--buffer-km D] [--baselines] [--out DIR]``.

    A world with a twin truth: held-out skill of every parameter source on the trained model's split
    (plus the noise ceiling and parameter recovery). A world of measured profiles, or ``--folds K``:
    spatial k-fold cross-validation of default CLM5, PRODA end to end and the ML baseline.
    """
    from proda_engine.data.worlds import resolve_world
    from proda_engine.evaluation import evaluate_world, load_world_sites, run_world_baselines

    t0 = time.perf_counter()
    args.world = _use_world(args)
    spec = resolve_world(args.world)
    if args.reference:
        _evaluate_reference(args.world, args.reference, args.out or (spec.products / "evaluation"))
    if args.folds or spec.truth is None:
        from proda_engine.crossval import cross_validate_world
        from proda_engine.workflows import default_train_config, measured_train_config

        make = measured_train_config if spec.kind == "catalog" else default_train_config
        cfg = make(**({"max_epochs": args.epochs} if args.epochs else {}))
        res = cross_validate_world(args.world, n_folds=args.folds or 5, block_size=args.block_size,
                                   buffer_km=args.buffer_km, seed=args.seed, train_config=cfg,
                                   progress=lambda msg: print(f"  {msg}", flush=True))
        files = res.write(args.out or (spec.products / "evaluation"))
        _run_record(args, Path(args.out or (spec.products / "evaluation")), sorted(spec.products.glob("theta_*.nc")))
        print(res.markdown())
        print(f"cross-validated {len(res.summary)} methods over {args.folds or 5} folds in "
              f"{time.perf_counter() - t0:.0f} s -> " + ", ".join(str(p) for p in files.values()))
        return 0
    if args.baselines:
        mcmc = {"n_test": args.mcmc_test, "n_formal": args.mcmc_formal}
        b = run_world_baselines(args.world, n_sites_mcmc=args.mcmc_sites, n_sites_batch=args.batch_sites,
                                mcmc=mcmc, n_workers=args.workers,
                                scheduler=None if args.scheduler == "local" else args.scheduler)
        print(f"baselines in {b.report['seconds']:.0f} s: batch DA -> {b.batch_theta_path}; "
              f"two-step -> {b.two_step_theta_path}")
    ws = load_world_sites(args.world)
    res = evaluate_world(args.world, ws=ws, max_test_sites=args.max_test_sites)
    out = args.out or (ws.products / "evaluation")
    files = res.write(out)
    _run_record(args, Path(out), sorted(ws.products.glob("theta_*.nc")))  # the parameter maps evaluated
    print(res.markdown())
    print(f"evaluated {len(res.methods)} methods on {res.n_test_sites} held-out sites in "
          f"{time.perf_counter() - t0:.0f} s -> " + ", ".join(str(p) for p in files.values()))
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    """``proda scenario --world NAME --warming 2 --npp 0.1 --years 100 [--source ...] --out OUT.nc``."""

    from proda_engine.config import config_from_args
    from proda_engine.data.writers import write_product
    from proda_engine.scenario_api import ScenarioConfig, scenario

    t0 = time.perf_counter()
    cfg = ScenarioConfig.from_yaml(args.config) if args.config else ScenarioConfig()
    cfg = config_from_args(ScenarioConfig, args, cfg)  # flags override the file
    if getattr(args, "world", None) or getattr(args, "catalog", None):  # a catalog world is registered first
        cfg = cfg.replace(world=_use_world(args))
    ds = scenario(**cfg.to_dict())
    used = [Path(x) for x in ds.attrs.get("forcing_files", "").split(", ") if x]  # files or the catalog's
    ds.attrs.update(_provenance(args, used))
    ds.attrs["cli_arguments"] = ds.attrs["config"]
    ds.attrs["config"] = json.dumps(cfg.to_dict())  # the validated, merged run configuration
    write_product(ds, args.out)
    saved = cfg.save(Path(args.out).with_suffix(".config.yaml"))  # ScenarioConfig.from_yaml reads it back equal
    print(f"scenario ({ds.attrs['n_cells']} cells, {cfg.years} years) in {time.perf_counter() - t0:.1f} s "
          f"-> {args.out}")
    for src in ds["source"].values:
        d = ds.sel(source=src)
        print(f"  {src}: initial {float(d['soc_initial_global']):.1f} Pg C, change after {cfg.years} yr "
              f"{float(d['soc_change_global'][-1]):+.2f} Pg C, steady state under the full change "
              f"{float(d['soc_change_equilibrium_global']):+.1f} Pg C")
    print(f"config -> {saved}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="proda", description="PRODA engine: CLM5 soil-carbon matrix model, "
                                 "data assimilation, neural up-scaling and global products.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    s = sub.add_parser("simulate", help="steady state for every valid cell of a forcing file")
    s.add_argument("--forcing", nargs="+", required=True, help="CLM5-history-style netCDF file(s)")
    s.add_argument("--params", type=Path, help="netCDF with unit-interval 'theta' (parameter[, lat, lon | site])")
    s.add_argument("--preset", choices=["default", "midpoint"], help="default CLM5 or theta = 0.5")
    s.add_argument("--out", type=Path, required=True, help="output netCDF (written atomically)")
    s.add_argument("--closure", choices=["conservative", "legacy"], default=None, help=_CLOSURE_HELP)
    s.add_argument("--grid", choices=["clm5_20", "clm45_10"], default=None,
                   help="soil grid (default clm5_20; a parameter file recording another is refused unless given)")
    s.add_argument("--pools", action="store_true", help="also write all 7 pools per layer")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--float32", action="store_true", help="single precision (opt-in; float64 is the default)")
    s.set_defaults(func=cmd_simulate)
    a = sub.add_parser("assimilate", help="site-level MCMC for every profile (or one batch-DA fit)")
    a.add_argument("--config", type=Path, required=True, help="YAML run configuration (see configs/)")
    _add_world_args(a)
    a.add_argument("--batch-da", action="store_true", help="fit one parameter set to all profiles (mode: batch)")
    a.defer(_assimilate_flags)  # every other key of the config file as a flag overriding it
    a.set_defaults(func=cmd_assimilate)
    w = sub.add_parser("world", help="build (or reuse) the default world and its twin observations, offline")
    w.add_argument("--name", default="default", help="cache name; a region name (tiny, europe, conus, ...) selects it")
    w.add_argument("--region", default=None, help="region name or leave empty for the globe")
    w.add_argument("--n-sites", type=int, default=None, help="twin profiles to write (default: all sampled sites)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--rebuild-twin", action="store_true", help="rewrite the twin observations")
    w.set_defaults(func=cmd_world)
    t = sub.add_parser("train", help="train the PRODA network on a world's observations; writes its parameter map")
    _add_world_args(t)
    t.add_argument("--out", type=Path, default=None, help="also write the parameter map (theta, parameter x lat "
                   "x lon) here; it always goes to <cache>/world/NAME/products/")
    t.add_argument("--max-distance-km", type=float, default=None, help="drop sites farther than this from a land "
                   "cell of the forcing (default 100 km for catalog worlds)")
    t.add_argument("--method", choices=["end-to-end", "two-step"], default="end-to-end")
    t.add_argument("--config", type=Path, help="TrainConfig YAML (unknown keys are rejected)")
    t.add_argument("--targets", type=Path, help="two-step: MCMC posterior netCDF (theta per site, lat, lon)")
    t.add_argument("--max-sites", type=int, default=None)
    t.defer(_train_flags)  # every TrainConfig key as a flag (--epochs, --seed, --lr, ...)
    t.set_defaults(func=cmd_train)
    v = sub.add_parser("serve", help="open the dashboard (builds the default world and PRODA parameters on first run)")
    _add_world_args(v)
    v.add_argument("--port", type=int, default=5006)
    v.add_argument("--address", default="127.0.0.1", help="bind address (127.0.0.1 keeps it on this machine)")
    v.add_argument("--allow-websocket-origin", action="append", default=None, metavar="HOST[:PORT]",
                   help="host name browsers use to reach the dashboard (repeat for several); required with "
                        "--address 0.0.0.0, default ADDRESS:PORT for another specific address; see docs/dashboard.md")
    v.add_argument("--show", action="store_true", help="open a browser tab")
    v.add_argument("--num-procs", type=int, default=1, metavar="N",
                   help="server processes sharing the port (each warms its own engine after the fork: ~1.7 GB "
                        "more memory each; 8 sessions opened at once load 2-3 s sooner with 2; see docs/dashboard.md)")
    v.add_argument("--no-train", action="store_true", help="do not train PRODA on first run")
    v.add_argument("--train-epochs", type=int, default=None,
                   help="first run: epochs per member, an upper bound (default: workflows.FIRST_RUN_DEFAULTS)")
    v.add_argument("--members", type=int, default=None,
                   help="first run: bootstrap ensemble members (default 5; 1 trains a single network)")
    v.add_argument("--train-sites", type=int, default=None,
                   help="first run: train on at most this many sites (default: workflows.FIRST_RUN_SITES; 0: all)")
    v.set_defaults(func=cmd_serve)
    m = sub.add_parser("map", help="gridded forward run of a parameter ensemble: maps, totals, summaries")
    _add_world_args(m)
    m.add_argument("--params", type=Path, help="netCDF with 'theta' (parameter[, lat, lon][, member]); "
                   "default: the world's twin truth")
    m.add_argument("--preset", choices=["default", "midpoint"], help="default CLM5 or theta = 0.5 instead")
    m.add_argument("--member-dim", default="member", help="name of the ensemble dimension of 'theta'")
    m.add_argument("--closure", choices=["conservative", "legacy"], default=None, help=_CLOSURE_HELP)
    m.add_argument("--out", type=Path, required=True, help="output .nc (or .zarr with the zarr package)")
    m.add_argument("--keep-members", action="store_true", help="also write per-member maps")
    m.add_argument("--chunk-size", type=int, default=20000, help="cells per solve batch (bounds memory)")
    m.add_argument("--no-coarse-fragments", action="store_true", help="skip the coarse-fragment correction")
    m.add_argument("--refine", type=int, default=0, help="high-resolution path: refine the grid N times "
                   "(10: 0.5 -> 0.05 deg) with synthetic sub-grid variability, Dask-chunked")
    m.add_argument("--tile", type=int, default=16, help="high-resolution tile side in coarse cells")
    m.add_argument("--workers", type=int, default=1, help="high-resolution: dask threads")
    m.add_argument("--reference", nargs="?", const="sanderman2017_socs", default=None, metavar="NAME",
                   help="also compare the stocks with a reference map (default: the shipped Sanderman et al. 2017 "
                   "map; or a catalog reference_map source): totals, per-region table, difference maps")
    m.set_defaults(func=cmd_map)
    se = sub.add_parser("sensitivity", help="spec (j) marginal '+1 %% bulk-process' sensitivity (table, figures)")
    _add_world_args(se)
    se.add_argument("--params", type=Path, help="netCDF with 'theta'; default: the world's twin truth")
    se.add_argument("--member-dim", default="member")
    se.add_argument("--closure", choices=["conservative", "legacy"], default=None, help=_CLOSURE_HELP)
    se.add_argument("--out", type=Path, required=True, help="output folder")
    se.add_argument("--chunk-size", type=int, default=20000)
    se.add_argument("--region", default="globe", help="globe (default), conus, continent:NAME, koppen:A..E, "
                    "landcover:GROUP or box:lon0,lon1,lat0,lat1: the cells the totals and R are taken over")
    se.add_argument("--depth", default="whole", choices=["0-30cm", "0-100cm", "0-200cm", "whole"],
                    help="stock interval of S (default: whole profile, as the spec)")
    se.set_defaults(func=cmd_sensitivity)
    ev = sub.add_parser("evaluate", help="held-out R2 / RMSE / E of default CLM5, batch DA and PRODA (+ twin truth)")
    _add_world_args(ev)
    ev.add_argument("--baselines", action="store_true", help="first run batch DA and site MCMC -> two-step "
                    "PRODA on the training sites (writes theta_batch_da.nc, theta_proda_two_step.nc)")
    ev.add_argument("--out", type=Path, default=None, help="output folder (default <world>/products/evaluation)")
    ev.add_argument("--mcmc-sites", type=int, default=1000, help="--baselines: training sites given site MCMC")
    ev.add_argument("--batch-sites", type=int, default=None, help="--baselines: sites in the batch-DA cost")
    ev.add_argument("--mcmc-test", type=int, default=500, help="--baselines: test-run iterations per chain")
    ev.add_argument("--mcmc-formal", type=int, default=1500, help="--baselines: formal iterations per chain")
    ev.add_argument("--scheduler", default="inline", help="--baselines: 'inline' or a Dask address; 'local' "
                    "starts a local cluster")
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--max-test-sites", type=int, default=None, help="evaluate a random subsample of test sites")
    ev.add_argument("--folds", type=int, default=None, help="spatial k-fold cross-validation with K folds (default "
                    "5 on worlds without a twin truth): default CLM5, PRODA end to end, ML baseline")
    ev.add_argument("--buffer-km", type=float, default=0.0, help="--folds: leave out training sites closer than "
                    "this to a test site")
    ev.add_argument("--block-size", type=float, default=2.0, help="--folds: spatial block side, degrees")
    ev.add_argument("--epochs", type=int, default=None, help="--folds: end-to-end max epochs per fold")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--reference", nargs="?", const="sanderman2017_socs", default=None, metavar="NAME",
                    help="also compare every parameter source's stocks with a reference map (default: the shipped "
                    "Sanderman et al. 2017 map): reference_comparison.csv in the output folder")
    ev.set_defaults(func=cmd_evaluate)
    sc = sub.add_parser("scenario", help="climate scenario: transient SOC change (monthly implicit steps) per source")
    sc.add_argument("--config", type=Path, help="scenario YAML (configs/scenario_2k.yaml); flags override it")
    sc.defer(_scenario_flags)  # every ScenarioConfig key as a flag (--world, --warming, --years, ...)
    sc.add_argument("--out", type=Path, required=True, help="output netCDF")
    sc.set_defaults(func=cmd_scenario)
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
