"""Real-data skill: PRODA on measured profiles beside default CLM5 and a pure ML baseline.

Builds a *catalog world* from the measured FEBR profiles of Brazil (``../shared/data/real/febr-brazil/``,
1,060 profiles; read in place, never copied: part of it is CC BY-NC) with the default world's forcing and
covariates, then runs ``proda evaluate``'s spatial k-fold cross-validation (default CLM5, PRODA end to
end, random forest on the same covariates plus depth). The catalog it writes is what a user would write:

    worlds:
      febr_brazil: {forcing: default_forcing, covariates: default_covariates, profiles: febr}

Run (the default world is built on first use, ~1 min; each fold trains PRODA end to end):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_data.py [--folds 5] [--buffer-km 0] [--epochs 40]

PRODA end to end uses the measured-profile defaults (workflows.MEASURED_E2E_DEFAULTS: 128-128 network,
weight decay, bias term, 5-member ensemble). The "before" row of docs/evaluation.md is the twin's setup:

    ... --set bias_weight=0 --set n_members=1 --set "hidden=[256, 512, 512, 256]" --set weight_decay=0

Prints the markdown table for docs/evaluation.md and writes benchmarks/results/real_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
FEBR = REPO.parent / "shared" / "data" / "real" / "febr-brazil" / "profiles.csv"


def write_catalog(folder: Path, profiles: Path) -> Path:
    """A user's catalog: the default world's forcing and covariates, the measured profiles."""
    from proda_engine.data.world import CATEGORICAL_COVARIATES, COVARIATE_NAMES, ensure_world

    paths = ensure_world("default")
    with __import__("xarray").open_dataset(paths.covariates) as cov:
        names = [n for n in COVARIATE_NAMES if n in cov]
    folder.mkdir(parents=True, exist_ok=True)
    cat = folder / "febr_catalog.yaml"
    lines = ["version: 1", "sources:",
             f"  default_forcing: {{kind: forcing, format: clm5_history, paths: [{json.dumps(str(paths.forcing))}]}}",
             "  default_covariates:", "    kind: covariates", "    format: netcdf",
             f"    paths: [{json.dumps(str(paths.covariates))}]",
             "    variables: {" + ", ".join(f"{n}: ''" for n in names) + "}",
             "    categorical: [" + ", ".join(n for n in CATEGORICAL_COVARIATES if n in names) + "]",
             "  febr:", "    kind: profiles", "    format: tidy_csv", f"    paths: [{json.dumps(str(profiles))}]",
             "    licence: CC BY 4.0 / CC BY-NC 4.0 per dataset (see febr_datasets_used.csv)",
             "    attribution: FEBR, Brazilian Soil Data Repository (Laboratorio de Pedometria, UTFPR)",
             "worlds:", "  febr_brazil:", "    forcing: default_forcing", "    covariates: default_covariates",
             "    profiles: febr", "    description: measured FEBR profiles (Brazil) on the default world's grid"]
    cat.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=Path, default=FEBR, help="tidy CSV of measured profiles")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--block-size", type=float, default=2.0, help="spatial block side, degrees")
    ap.add_argument("--buffer-km", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=None, help="end-to-end max epochs per fold (default: project's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=None, help="comma-separated subset of default_clm5,batch_da,proda_e2e,"
                    "ml_baseline (default all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="TrainConfig override for PRODA end to end, e.g. --set bias_weight=2 (YAML value)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "real_data.json")
    args = ap.parse_args(argv)
    if not args.profiles.exists():
        print(f"{args.profiles}: not found (the measured profiles live in ../shared/data/real/)", file=sys.stderr)
        return 2
    from proda_engine.crossval import cross_validate_world
    from proda_engine.data.catalog import cache_dir
    from proda_engine.data.worlds import register_catalog
    from proda_engine.workflows import measured_train_config

    t0 = time.perf_counter()
    cat = write_catalog(cache_dir() / "catalogs", args.profiles.resolve())
    register_catalog(cat)
    import yaml

    sets = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = measured_train_config(**({"max_epochs": args.epochs} if args.epochs else {}), **sets)
    res = cross_validate_world("febr_brazil", n_folds=args.folds, block_size=args.block_size,
                               buffer_km=args.buffer_km, seed=args.seed, train_config=cfg,
                               methods=args.methods.split(",") if args.methods else None,
                               progress=lambda m: print(" ", m, flush=True))
    print(res.markdown())
    out = res.to_dict()
    out["benchmark"] = {"seconds": time.perf_counter() - t0, "profiles": str(args.profiles),
                        "threads": os.environ.get("OMP_NUM_THREADS"), "argv": sys.argv[1:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    print(f"{time.perf_counter() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
