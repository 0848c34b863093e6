"""The stochastic Runge–Kutta engine: tableaux are validated data, the built-in ones satisfy
their conditions, and a step evaluates exactly the stages its tableau reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnde as tn
from torchnde._core.srk import SRKTableau


def _arrays(tab: SRKTableau) -> dict[str, np.ndarray]:
    s = tab.num_stages

    def square(rows):
        m = np.zeros((s, s))
        for i, r in enumerate(rows):
            m[i, :i] = r
        return m

    return {
        "c0": np.array(tab.c0), "c1": np.array(tab.c1), "alpha": np.array(tab.alpha),
        "beta1": np.array(tab.beta1), "beta3": np.array(tab.beta3),
        "A0": square(tab.a0), "B0": square(tab.b0),
    }  # fmt: skip


def test_sra1_satisfies_the_strong_order_one_and_a_half_sra_conditions():
    # Rößler (2010), order conditions of SRA methods for strong order 1.5 (the I_(1,0)/h
    # weights, SRA's beta^(2), are stored as beta3).
    t = _arrays(tn.SRA1.tableau)
    e = np.ones(2)
    a, b1, b2 = t["alpha"], t["beta1"], t["beta3"]
    conditions = [
        (a @ e, 1.0),
        (b1 @ e, 1.0),
        (b2 @ e, 0.0),
        (a @ t["B0"] @ e, 1.0),
        (a @ t["A0"] @ e, 0.5),
        (b1 @ t["c1"], 1.0),
        (b2 @ t["c1"], -1.0),
        (a @ (t["B0"] @ e) ** 2, 1.5),
    ]
    for got, want in conditions:
        assert got == pytest.approx(want, abs=1e-14)
    # Stage times of the drift are the row sums of A0 (the method is consistent in time).
    np.testing.assert_allclose(t["A0"] @ e, t["c0"], atol=1e-15)


@pytest.mark.parametrize(("solver", "drift", "diffusion"), [(tn.SRA1, 2, 2), (tn.SRI2, 3, 4)])
def test_a_step_evaluates_exactly_the_stages_the_tableau_reads(solver, drift, diffusion):
    noise = "additive" if solver is tn.SRA1 else "diagonal"
    calls = {"f": 0, "g": 0}

    def f(t, y, args):
        calls["f"] += 1
        return -y

    def g(t, y, args):
        calls["g"] += 1
        return 0.3 * torch.ones_like(y) if noise == "additive" else 0.3 * y

    bm = tn.BrownianInterval(0.0, 1.0, shape=(2,), dtype=torch.float64, seed=0,
                             levy_area="space-time")  # fmt: skip
    terms = tn.MultiTerm(tn.ODETerm(f), tn.ControlTerm(g, bm, noise=noise))
    sol = tn.solve(terms, solver(), 0.0, 1.0, torch.ones(2, dtype=torch.float64), dt0=0.25)
    assert (calls["f"], calls["g"]) == (4 * drift, 4 * diffusion)
    assert solver.num_fevals_step == drift + diffusion
    assert sol.stats["num_fevals"] == 4 * (drift + diffusion)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(alpha=(0.5, 0.4)), r"`alpha` must sum to 1 \(consistency\), got 0\.9"),
        (dict(beta3=(1.0, 1.0)), r"`beta3` must sum to 0"),
        (dict(c1=(1.0,)), r"`c1` must have 2 entries \(stages\), got 1"),
        (dict(a0=((0.75,), ())), r"`a0` must be strictly lower triangular"),
        (dict(b0=((), (float("nan"),))), r"`b0` must be finite"),
    ],
)
def test_a_bad_srk_tableau_is_refused_naming_the_coefficient(change, match):
    base = dict(
        c0=(0.0, 0.75), c1=(1.0, 0.0), a0=((), (0.75,)), b0=((), (1.5,)), alpha=(1 / 3, 2 / 3),
        beta1=(1.0, 0.0), beta3=(-1.0, 1.0),
    )  # fmt: skip
    SRKTableau(**base)
    with pytest.raises(ValueError, match=match):
        SRKTableau(**{**base, **change})
