"""Peak memory and wall time of the gridded products.

Runs each case in a fresh child process and reads the child's peak resident set size
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``, one child at a time, so the maximum is that child's):

1. ``proda map`` on the global 0.5-degree world (twin truth, one member)      target < 4 GB
2. ``proda map`` on the global world with a 10-member stand-in ensemble (twin truth plus
   perturbed copies; not trained output) written by this script             memory independent of M
3. the Dask-chunked high-resolution path: the ``europe`` world refined 10x (0.05 degrees)

    .venv/bin/python benchmarks/map_memory.py [--world default] [--hires-world europe] [--members 10]
        [--skip-global] [--skip-hires] [--out benchmarks/results/map_memory.json]

Uses the normal world cache ($PRODA_CACHE or ~/.cache/proda); outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run(cmd: list[str]) -> dict:
    """Run ``cmd`` in a child; return wall time, peak RSS (MB) and the last lines of its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    if peak <= before:
        print("warning: an earlier child had a larger peak; RSS below is a lower bound", file=sys.stderr)
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "peak_rss_mb": round(peak / 1024, 1),
            "output": p.stdout.strip().splitlines()[-12:]}


def write_ensemble(world: str, members: int, path: Path) -> None:
    """Stand-in ensemble: the twin truth plus members perturbed by N(0, 0.03) in unit space (clipped)."""
    code = f"""
import numpy as np, xarray as xr
from proda_engine.data.world import ensure_world
t = xr.open_dataset(ensure_world({world!r}).truth)["theta"].load()
rng = np.random.default_rng(0)
ms = [t] + [(t + rng.normal(0, 0.03, t.shape)).clip(0.01, 0.99) for _ in range({members} - 1)]
e = xr.concat(ms, "member").assign_coords(member=np.arange({members}))
xr.Dataset({{"theta": e.transpose("member", "parameter", "lat", "lon").astype("float32")}}).to_netcdf({str(path)!r})
"""
    subprocess.run([PY, "-c", code], cwd=ROOT, env=ENV, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="default")
    ap.add_argument("--hires-world", default="europe")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--skip-global", action="store_true")
    ap.add_argument("--skip-hires", action="store_true")
    ap.add_argument("--skip-ensemble", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "map_memory.json")
    args = ap.parse_args()
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="proda_map_bench.") as tmp:
        d = Path(tmp)
        proda = [PY, "-m", "proda_engine.cli"]
        if not args.skip_global:
            res["global_truth"] = run([*proda, "map", "--world", args.world, "--out", str(d / "global.nc")])
            print(json.dumps(res["global_truth"], indent=1))
            if not args.skip_ensemble and args.members > 1:
                write_ensemble(args.world, args.members, d / "ens.nc")
                res["global_ensemble"] = run([*proda, "map", "--world", args.world, "--params", str(d / "ens.nc"),
                                              "--out", str(d / "global_ens.nc")])
                res["global_ensemble"]["members"] = args.members
                print(json.dumps(res["global_ensemble"], indent=1))
        if not args.skip_hires:
            res["hires"] = run([*proda, "map", "--world", args.hires_world, "--refine", "10", "--tile", "16",
                                "--out", str(d / "hires.nc")])
            print(json.dumps(res["hires"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
