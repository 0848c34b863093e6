"""BrownianGrid: increments of a fixed step grid drawn a block of steps at a time."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn

GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]  # dt 0.1, last step cut


def _bm(seed=1, block=4, shape=(3, 2)):
    return tn.BrownianGrid(0.0, 0.95, 0.1, shape, dtype=torch.float64, seed=seed, block=block)


def test_same_seed_same_increments_in_any_query_order():
    fwd = [_bm()(a, b) for a, b in zip(GRID[:-1], GRID[1:])]
    bm = _bm()
    steps = list(zip(GRID[:-1], GRID[1:]))
    bwd = [bm(b, a) for a, b in reversed(steps)][::-1]  # reverse-time queries, last block first
    for x, y in zip(fwd, bwd):
        torch.testing.assert_close(-y, x, rtol=0, atol=0)
    # another seed, another path; the block size does not change what is drawn per block only
    assert not torch.equal(_bm(seed=2)(0.0, 0.1), fwd[0])


def test_multi_step_queries_are_sums_of_steps_and_times_in_float32_snap_to_the_grid():
    bm = _bm()
    steps = [bm(a, b) for a, b in zip(GRID[:-1], GRID[1:])]
    torch.testing.assert_close(bm(0.2, 0.7), sum(steps[2:7]), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(bm(0.95), sum(steps), rtol=1e-14, atol=1e-14)
    t32 = torch.tensor(0.3, dtype=torch.float32)  # 0.30000001192...
    torch.testing.assert_close(bm(t32, 0.4), steps[3], rtol=0, atol=0)


def test_increments_have_the_variance_of_their_step():
    bm = tn.BrownianGrid(0.0, 0.95, 0.1, (20000,), dtype=torch.float64, seed=0, block=3)
    v = [float(bm(a, b).var()) for a, b in zip(GRID[:-1], GRID[1:])]
    for (a, b), var in zip(zip(GRID[:-1], GRID[1:]), v):
        assert var == pytest.approx(b - a, rel=0.05)  # 5 sigma of a variance of 2e4 samples
    # independent steps: the correlation of two increments is ~ 0 (std 1 / sqrt(2e4))
    x, y = bm(0.0, 0.1), bm(0.1, 0.2)
    assert abs(float((x * y).mean()) / math.sqrt(0.01)) < 0.05


def test_off_grid_queries_and_bad_arguments_raise():
    bm = _bm()
    with pytest.raises(ValueError, match=r"BrownianGrid: query time `tb`=0.15 is not on the grid"):
        bm(0.1, 0.15)
    with pytest.raises(ValueError, match=r"BrownianGrid: `dt` must be a positive finite number"):
        tn.BrownianGrid(0.0, 1.0, 0.0, (2,))
    with pytest.raises(ValueError, match=r"BrownianGrid: `block` must be a positive int"):
        tn.BrownianGrid(0.0, 1.0, 0.1, (2,), block=0)


def test_sdeint_fixed_steps_use_the_grid_and_match_brownian_interval_in_law():
    # Euler–Maruyama on dy = -y dt + 0.5 dW: the default (grid) and BrownianInterval give the
    # same law; mean and variance at t=1 against the exact OU moments.
    y0 = torch.ones(4000, 1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def f(t, y):
        return -y

    def g(t, y):
        return 0.5 * torch.ones_like(y)

    y1 = tn.sdeint(f, g, y0, ts, method="euler", dt=0.05, seed=0)[-1]
    mean, var = math.exp(-1.0), 0.125 * (1 - math.exp(-2.0))
    # EM's bias at dt 0.05 is ~3% here; sampling std of the mean 0.006, of the variance 3%
    assert float(y1.mean()) == pytest.approx(mean, abs=0.03)
    assert float(y1.var()) == pytest.approx(var, rel=0.15)
    a = tn.sdeint(f, g, y0, ts, method="reversible_heun", calculus="stratonovich", dt=0.05, seed=4)
    b = tn.sdeint(f, g, y0, ts, method="reversible_heun", calculus="stratonovich", dt=0.05, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
