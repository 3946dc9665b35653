"""Physics invariants on random valid instances: structured = dense, mass balance, conservation,
non-negativity, backend and precision agreement."""

import numpy as np
import pytest
import torch

from proda_engine.grid import get_grid
from proda_engine.physics import Status, apply_operator, assemble, params_from_theta, rhs, solve_theta
from proda_engine.physics import diagnostics as dg
from proda_engine.physics.dense import dense_matrix, dense_solve
from proda_engine.physics.operator import Operator
from proda_engine.physics.solver import solve_numba, solve_torch, solve_transposed
from proda_engine.physics.transport import transport_coefficients, transport_coefficients_reference

from .helpers import random_forcing, random_theta

GRIDS = ["clm5_20", "clm45_10"]


@pytest.fixture(params=GRIDS)
def instance(request, rng):
    g = get_grid(request.param)
    f = random_forcing(rng, 40, g)
    th = random_theta(rng, 40)
    return g, f, th


@pytest.mark.parametrize("closure", ["conservative", "legacy"])
def test_structured_equals_dense(instance, closure):
    g, f, th = instance
    r = solve_theta(th, f, g, closure=closure)
    assert (r.status == Status.OK).all()
    xd = dense_solve(r.result.operator)
    rel = np.abs(r.pools - xd).max(axis=(0, 1)) / np.abs(xd).max(axis=(0, 1))
    assert rel.max() < 1e-10


def test_mass_balance_input_equals_respiration(instance):
    g, f, th = instance
    res = solve_theta(th, f, g).result
    assert float(dg.mass_balance_residual(res, f).abs().max()) < 1e-9
    assert float(dg.transport_outflow(res).abs().max() / f.total_input.max()) < 1e-9


def test_transport_columns_conserve_mass(instance):
    """Spec §(q) item 2: sum_j dz_j V_jk = 0 for every column k (conservative closure)."""
    g, f, th = instance
    op = assemble(params_from_theta(th), f, g)
    M, _ = dense_matrix(op)
    L = g.n_layers
    k = op.k.numpy()
    for p in range(1, 7):  # V part = M - A K; remove the within-layer decay/transfer part
        blk = M[:, p * L:(p + 1) * L, p * L:(p + 1) * L].copy()
        blk[:, np.arange(L), np.arange(L)] += k[p].T
        colsum = (g.dz[None, :, None] * blk).sum(1)
        assert np.abs(colsum).max() < 1e-12 * np.abs(blk).max()


def test_pools_nonnegative_without_clamping(instance):
    g, f, th = instance
    r = solve_theta(th, f, g)
    assert (r.pools >= 0).all()
    assert (r.soc[0] > 0).all()  # deep layers may underflow to exactly 0, never below


def test_residual_is_round_off(instance):
    g, f, th = instance
    op = assemble(params_from_theta(th), f, g)
    X = solve_numba(op)
    res = (apply_operator(op, X) - rhs(op)).abs().amax((0, 1)) / rhs(op).abs().amax((0, 1))
    assert float(res.max()) < 1e-11


def test_numba_and_torch_backends_agree(instance):
    g, f, th = instance
    op = assemble(params_from_theta(th), f, g)
    a, b = solve_numba(op), solve_torch(op)
    assert float(((a - b).abs().amax((0, 1)) / a.abs().amax((0, 1))).max()) < 1e-12


def test_transposed_solve_is_the_adjoint(instance, rng):
    """<y, G^-1 b> = <G^-T y, b> for random y: the transposed solver really solves G^T."""
    g, f, th = instance
    op = assemble(params_from_theta(th), f, g)
    X = solve_numba(op)
    y = torch.as_tensor(rng.normal(size=X.shape))
    for backend in ("numba", "torch"):
        lam = solve_transposed(op, y, backend)
        lhs = (y * X).sum((0, 1))
        rhs_ = (lam * rhs(op)).sum((0, 1))
        assert float(((lhs - rhs_).abs() / (y.abs() * X.abs()).sum((0, 1))).max()) < 1e-12


def test_float32_close_to_float64(instance):
    g, f, th = instance
    r64 = solve_theta(th, f, g).pools
    r32 = solve_theta(th, f.to(dtype=torch.float32), g).pools
    assert r32.dtype == np.float32
    rel = np.abs(r32 - r64).max(axis=(0, 1)) / np.abs(r64).max(axis=(0, 1))
    # Typical cells agree to ~1e-5; the worst, ill-conditioned cells (frozen months, cond ~1e11) to ~1e-3.
    # float32 is an opt-in for training/display only (docs/solver.md).
    assert np.median(rel) < 2e-5
    assert rel.max() < 5e-3


@pytest.mark.parametrize("closure", ["conservative", "legacy"])
def test_compiled_transport_matches_reference(instance, closure):
    g, f, _ = instance
    a = transport_coefficients(f, g, closure)
    b = transport_coefficients_reference(f, g, closure)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-40), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_in_float64(instance):
    g, f, th = instance
    cpu = solve_theta(th, f, g).pools
    gpu = solve_theta(torch.as_tensor(th, device="cuda"), f.to("cuda"), g).pools.cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, rtol=1e-10)


def test_fused_summaries_match_separate_functions(instance):
    from proda_engine.physics.model import cell_status
    from proda_engine.physics.scalars import diagnostic_modifier

    g, f, th = instance
    th = th.copy()
    th[0, 3] = 0.0  # one failing cell: statuses must agree too
    p = params_from_theta(th)
    op = assemble(p, f, g)
    X = solve_numba(op)
    xhat = diagnostic_modifier(f, g, p["q10"], p["wscaling"], p["efolding"])
    status, soc, stocks, cue = dg.fused_summaries(X, op, p, xhat, g)
    torch.testing.assert_close(status, cell_status(op, X))
    ok = status == 0
    torch.testing.assert_close(soc, X[4:7].sum(0))
    for k, v in dg.interval_stocks(X[4:7].sum(0), g).items():
        torch.testing.assert_close(stocks[k][ok], v[ok], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(cue[ok], dg.microbial_cue(X, op.frac, p, xhat, g)[ok], rtol=1e-12, atol=0)


def test_solve_summaries_equal_solve_then_summaries(instance):
    """The blocked solve-and-summarise kernel does the same arithmetic as the two separate passes."""
    from proda_engine.physics.scalars import diagnostic_modifier

    g, f, th = instance
    th = th.copy()
    th[0, 3] = 0.0  # one failing cell
    p = params_from_theta(th)
    op = assemble(p, f, g)
    src = op.src.clone()
    src[:, :, 1] = 0.0  # a cell without input: X = 0, no decay flux, CUE 0/0 -> NaN (not an exception)
    op = Operator(k=op.k, frac=op.frac, lo=op.lo, up=op.up, src=src)
    xhat = diagnostic_modifier(f, g, p["q10"], p["wscaling"], p["efolding"])
    ref = dg.fused_summaries(solve_numba(op), op, p, xhat, g)
    assert np.isnan(float(ref[3][1]))
    work = np.full((7, g.n_layers, f.n_cells), np.nan)
    for out in (None, work, work):  # fresh, then a reused work array
        got = dg.solve_summaries(op, p, xhat, g, out=out)
        torch.testing.assert_close(got[0], ref[0])
        for a, b in zip((got[1], *got[2].values(), got[3]), (ref[1], *ref[2].values(), ref[3])):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert int(got[0][0]) != 0 and (got[0][1:] == 0).all() and np.isnan(float(got[3][1]))
    # with the operator's validity known, the kernel skips its own check and the flag is applied after
    valid = torch.ones(f.n_cells, dtype=torch.bool)
    valid[2] = False
    got = dg.solve_summaries(op, p, xhat, g, op_valid=valid)
    assert int(got[0][2]) == 3 and int(got[0][0]) != 0


def test_solve_summaries_fall_back_for_per_layer_fractions(instance):
    from proda_engine.physics.scalars import diagnostic_modifier

    g, f, th = instance
    p = params_from_theta(th)
    op = assemble(p, f, g)
    op = Operator(k=op.k, frac=op.frac.expand(9, g.n_layers, f.n_cells).clone(), lo=op.lo, up=op.up, src=op.src)
    xhat = diagnostic_modifier(f, g, p["q10"], p["wscaling"], p["efolding"])
    got = dg.solve_summaries(op, p, xhat, g)
    ref = dg.fused_summaries(solve_numba(op), op, p, xhat, g)
    torch.testing.assert_close(got[1], ref[1])
    torch.testing.assert_close(got[3], ref[3])


def test_fused_assembly_equals_the_autograd_path(instance):
    g, f, th = instance
    p = params_from_theta(th)
    fused = assemble(p, f, g)  # no gradients needed -> compiled path
    with torch.enable_grad():
        pg = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        ref = assemble(pg, f, g)
    for a, b in zip(fused.tensors(), ref.tensors()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("per_layer", [False, True])
def test_solve_bulk_summaries_equal_the_reference_diagnostics(instance, per_layer):
    """The one-pass kernel's K̄, ξ̄, V̄ and CUE equal :func:`bulk_diagnostics` (torch, separate passes);
    interval CUE restricted to the whole profile is the whole CUE; apparent beta from the compiled pass
    equals the torch version."""
    from proda_engine.physics.model import steady_state
    from proda_engine.physics.scalars import diagnostic_modifier

    g, f, th = instance
    p = params_from_theta(th)
    if per_layer:  # default-CLM5-like per-layer fractions
        p = dict(p)
        p["fs1s2"] = p["fs1s2"][None, :].expand(g.n_layers, f.n_cells) * torch.linspace(0.8, 1.0, g.n_layers)[:, None]
    res = steady_state(p, f, g)
    ref = dg.bulk_diagnostics(res, f)
    xhat = diagnostic_modifier(f, g, p["q10"], p["wscaling"], p["efolding"])
    status, soc, stocks, bulk = dg.solve_bulk_summaries(res.operator, p, xhat, g)
    torch.testing.assert_close(soc, res.soc)
    ok = (status == 0).numpy()
    for k in ("decomposition", "environment", "transport"):
        np.testing.assert_allclose(bulk[k][ok], ref[k].numpy()[ok], rtol=1e-10, err_msg=k)
    np.testing.assert_allclose(bulk["cue"]["whole"][ok], ref["cue"].numpy()[ok], rtol=1e-10)
    assert set(bulk["cue"]) == {"0-30cm", "0-100cm", "0-200cm", "whole"}
    np.testing.assert_allclose(stocks["whole"].numpy()[ok], ref["stock"].numpy()[ok], rtol=1e-10)
    np.testing.assert_allclose(dg.apparent_beta_fast(f, g, p["beta"]), dg.apparent_beta(f, g, p["beta"]).numpy(),
                               rtol=1e-10, equal_nan=True)
