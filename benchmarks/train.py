"""End-to-end training benchmark: seconds per epoch, forward / backward split, measured in one run.

One epoch = every site once, in minibatches: covariates -> ParameterNet -> theta -> structured
steady state (numba on CPU, adjoint backward) -> PCHIP at observed depths -> PRODA cost ->
backward -> Adam step. Sites are random (``random_forcing``); observations are the model's own SOC
for random parameters at five depths, so the loss is realistic in size.

Time is split into: forcing subset (minibatch gather), network forward, physics forward (assembly +
solve), observation operator + loss, backward through PCHIP + physics (until the gradient reaches
theta), backward through the network, and the optimiser step.

    python benchmarks/train.py             # 50,000 sites, batch 2,048, original 256-512-512-256 net
    python benchmarks/train.py --quick     # 5,000 sites
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numba
import numpy as np
import torch

from proda_engine.grid import get_grid
from proda_engine.inference.likelihood import ObservationBatch, model_at_obs
from proda_engine.learning import FeatureEncoder, TrainConfig, build_network, site_loss
from proda_engine.learning.training import _observation_tensors, make_optimizer
from proda_engine.physics import params_from_theta, steady_state
from proda_engine.physics.testing import random_forcing, random_theta

DEPTHS = np.array([0.05, 0.2, 0.45, 0.8, 1.5])
STAGES = ("subset", "net_fwd", "physics_fwd", "obs_loss_fwd", "physics_bwd", "net_bwd", "step")


def make_problem(n: int, seed: int = 0, n_cov: int = 12):
    """Random covariates, forcing and observations for ``n`` sites (observations solved in chunks)."""
    rng = np.random.default_rng(seed)
    g = get_grid()
    table = {f"c{i}": rng.normal(size=n) for i in range(n_cov)}
    forcing = random_forcing(rng, n, g)
    theta = random_theta(rng, n)
    depth = np.tile(DEPTHS, (n, 1))
    soc = np.empty_like(depth)
    z = torch.as_tensor(g.z_node)
    with torch.no_grad():
        for s in range(0, n, 16384):
            idx = np.arange(s, min(n, s + 16384))
            res = steady_state(params_from_theta(theta[idx]), forcing.subset(idx), g)
            soc[idx] = model_at_obs(res.soc, z, torch.as_tensor(depth[idx])).numpy()
    soc = soc * np.exp(0.1 * rng.standard_normal(soc.shape))
    mask = np.isfinite(soc) & (soc > 0)  # layers below bedrock hold no SOC: dropped as in the spec
    obs = ObservationBatch(np.arange(n), np.where(mask, depth, np.nan), np.where(mask, soc, np.nan), mask)
    return table, forcing, obs, g


def run_epoch(n: int, batch: int, hidden: tuple[int, ...], seed: int = 0) -> dict[str, float]:
    t_setup = time.perf_counter()
    table, forcing, obs, g = make_problem(n, seed)
    cfg = TrainConfig(method="end-to-end", hidden=hidden, batch_size=batch)
    enc = FeatureEncoder().fit(table)
    x = torch.as_tensor(enc.transform(table).x, dtype=torch.float32)
    depth, o, w, mask = _observation_tensors(obs, cfg.weights, torch.device("cpu"))
    net = build_network(x.shape[1], hidden, seed=seed)
    opt = make_optimizer(net, cfg)
    z = torch.as_tensor(g.z_node)
    setup = time.perf_counter() - t_setup
    times = dict.fromkeys(STAGES, 0.0)
    mark: dict[str, float] = {}

    def step(rows: np.ndarray, record: bool) -> int:
        t0 = time.perf_counter()
        r = torch.as_tensor(rows)
        f = forcing.subset(rows)
        xb, db, ob, wb, mb = x[r], depth[r], o[r], w[r], mask[r]
        t1 = time.perf_counter()
        theta = net(xb)
        theta.register_hook(lambda gr: mark.__setitem__("theta_grad", time.perf_counter()) or gr)
        t2 = time.perf_counter()
        res = steady_state(params_from_theta(theta, clamp=False), f, g)
        t3 = time.perf_counter()
        pred = model_at_obs(res.soc, z, db, mb)
        per_site = site_loss(pred, ob, wb, mb)
        ok = (res.status == 0) & torch.isfinite(per_site)
        loss = torch.where(ok, per_site, torch.zeros_like(per_site)).sum() / max(int(ok.sum()), 1)
        t4 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t5 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        t6 = time.perf_counter()
        if record:
            tg = mark["theta_grad"]
            for k, v in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, tg - t4, t5 - tg, t6 - t5)):
                times[k] += v
        return int((res.status != 0).sum())

    step(np.arange(min(batch, n)), record=False)  # warm-up: numba JIT, allocator
    perm = np.random.default_rng(seed).permutation(n)
    failed = 0
    t_epoch = time.perf_counter()
    for s in range(0, n, batch):
        failed += step(np.sort(perm[s:s + batch]), record=True)  # sorted, as fit_loop does
    epoch = time.perf_counter() - t_epoch
    fwd = times["subset"] + times["net_fwd"] + times["physics_fwd"] + times["obs_loss_fwd"]
    bwd = times["physics_bwd"] + times["net_bwd"]
    return {"sites": n, "batch": batch, "batches": -(-n // batch), "epoch_s": epoch, "forward_s": fwd,
            "backward_s": bwd, **{f"{k}_s": v for k, v in times.items()}, "failed_sites": failed,
            "setup_s": setup, "sites_per_s": n / epoch}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--hidden", default="256,512,512,256", help="comma-separated hidden widths")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="5,000 sites")
    ap.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = 5_000 if args.quick else args.sites
    hidden = tuple(int(h) for h in args.hidden.split(","))
    r = run_epoch(n, args.batch, hidden)
    print(f"end-to-end epoch: {r['sites']:,} sites, batch {r['batch']:,} ({r['batches']} steps), net {hidden}, "
          f"torch threads {args.threads}, numba threads {numba.get_num_threads()}")
    print(f"  epoch            {r['epoch_s']:8.2f} s   ({r['sites_per_s']:,.0f} sites/s, "
          f"{r['failed_sites']} failed sites)")
    print(f"  forward          {r['forward_s']:8.2f} s")
    for k in ("subset", "net_fwd", "physics_fwd", "obs_loss_fwd"):
        print(f"    {k:<14} {r[k + '_s']:8.2f} s")
    print(f"  backward         {r['backward_s']:8.2f} s")
    for k in ("physics_bwd", "net_bwd"):
        print(f"    {k:<14} {r[k + '_s']:8.2f} s")
    print(f"  optimiser step   {r['step_s']:8.2f} s")
    print(f"  (setup: data generation + encoding {r['setup_s']:.1f} s, not timed)")
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
