"""Dask helpers and the distributed pipeline: a real LocalCluster gives the same bits as inline."""

from __future__ import annotations

import operator

import numpy as np
import pytest

from proda_engine.distributed import get_client, map_as_completed
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.pipeline import assimilate
from tests.inference.test_pipeline import TINY_MCMC, base_config, twin_world


def test_inline_map_runs_in_order_without_a_cluster():
    with get_client("inline") as client:
        assert client is None
        out = list(map_as_completed(operator.mul, [(1, 2), (3, 4), (5, 6)], client=client, keys="abc"))
    assert out == [("a", 2), ("b", 12), ("c", 30)]
    with pytest.raises(ValueError, match="max_in_flight"):
        list(map_as_completed(operator.mul, [(1, 2)], max_in_flight=0))


def test_local_cluster_matches_inline_bit_for_bit(tmp_path_factory, tmp_path):
    world = twin_world(tmp_path_factory)
    kw = {"mcmc": TINY_MCMC, "batch_size": 3, "max_sites": 9, "seed": 11}
    inline = assimilate(AssimilateConfig.from_dict(base_config(world, tmp_path / "inline", scheduler="inline", **kw)))

    with get_client(None, n_workers=2) as client:
        # bounded submission: when the first result arrives at most max_in_flight items were taken
        consumed: list[int] = []

        def items():
            for i in range(6):
                consumed.append(i)
                yield (i, 2)

        first = True
        results = {}
        for key, value in map_as_completed(operator.pow, items(), client=client, max_in_flight=2):
            if first:
                assert len(consumed) <= 3  # 2 in flight + the one submitted when the first finished
                first = False
            results[key] = value
        assert results == {i: i**2 for i in range(6)}
        # errors in a task surface in the caller
        with pytest.raises(ZeroDivisionError):
            list(map_as_completed(operator.truediv, [(1, 0)], client=client))

        # the pipeline on the running cluster (scheduler given as an address)
        dask_run = assimilate(AssimilateConfig.from_dict(base_config(
            world, tmp_path / "dask", scheduler=client.scheduler.address, **kw)))

    a, b = inline.posterior, dask_run.posterior
    assert a.sizes["site"] == 9 and dask_run.n_batches == 3
    np.testing.assert_array_equal(a["theta_mean"].values, b["theta_mean"].values)
    np.testing.assert_array_equal(a["theta_sd"].values, b["theta_sd"].values)
    np.testing.assert_array_equal(a["acceptance"].values, b["acceptance"].values)
    np.testing.assert_array_equal(a["efficiency"].values, b["efficiency"].values)
    assert a.attrs["fingerprint"] == b.attrs["fingerprint"]  # scheduler is not a science setting
