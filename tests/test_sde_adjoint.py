"""Gradients through SDE solves: the stochastic adjoint converges to the direct gradients as
the step shrinks (same Brownian path), the reversible Heun adjoint equals them to round-off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnde as tn


def _bm(shape, seed, levy_area="space-time"):
    return tn.BrownianInterval(0.0, 1.0, shape, dtype=torch.float64, seed=seed, levy_area=levy_area)


BATCH = 8


def _problem(calculus: str, shape=(BATCH, 2), noise="diagonal"):
    bm_shape = {"diagonal": shape, "additive": shape, "scalar": (shape[0], 1)}.get(
        noise, (shape[0], 2)
    )
    bm = _bm(bm_shape, 5)
    mu = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    sig = torch.linspace(0.5, 0.8, shape[-1], dtype=torch.float64).requires_grad_(True)
    mix = torch.tensor([1.0, -0.5], dtype=torch.float64)

    def diffusion(t, y, args):
        if noise == "additive":
            return sig * (1 + t) * torch.ones_like(y)
        if noise == "general":  # two commuting channels: g_j = c_j σ cos(y)
            return (sig * torch.cos(y))[..., None] * mix
        return sig * torch.cos(y)

    terms = tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: mu * torch.sin(y)),
        tn.ControlTerm(diffusion, bm, noise=noise, calculus=calculus),
    )
    y0 = torch.full(shape, 0.3, dtype=torch.float64, requires_grad=True)
    return terms, y0, [y0, mu, sig]


def _grads(terms, solver, y0, leaves, dt, adjoint):
    sol = tn.solve(
        terms, solver, 0.0, 1.0, y0, dt0=dt, adjoint=adjoint,
        controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=[0.5, 1.0]),
    )  # fmt: skip
    return torch.autograd.grad((sol.ys**2).sum(), leaves)


@pytest.mark.parametrize(
    "calculus, solver, noise, min_slope",
    [
        ("ito", tn.EulerMaruyama(), "diagonal", 0.35),  # strong order 0.5
        ("ito", tn.SRI2(), "diagonal", 0.35),
        ("ito", tn.ItoMilstein(), "scalar", 0.35),
        ("stratonovich", tn.Midpoint(), "diagonal", 0.7),  # strong order 1 (commutative)
        ("stratonovich", tn.Heun(), "scalar", 0.7),
        ("stratonovich", tn.Heun(), "general", 0.7),
        ("ito", tn.SRA1(), "additive", 0.7),
    ],
)
def test_stochastic_adjoint_converges_to_direct(calculus, solver, noise, min_slope):
    terms, y0, leaves = _problem(calculus, noise=noise)
    dts = [2.0**-3, 2.0**-5, 2.0**-7]
    errors = []
    for dt in dts:
        direct = _grads(terms, solver, y0, leaves, dt, tn.DirectAdjoint())
        adjoint = _grads(terms, solver, y0, leaves, dt, tn.BacksolveAdjoint())
        errors.append([float((a - d).norm() / d.norm()) for a, d in zip(adjoint, direct)])
    errors_ = np.array(errors)
    for j in range(len(leaves)):
        slope = np.polyfit(np.log(dts), np.log(errors_[:, j]), 1)[0]
        assert slope > min_slope, (j, errors)
    assert errors_[-1].max() < 0.03, errors


def test_stochastic_adjoint_any_state_shape():
    terms, y0, leaves = _problem("stratonovich", shape=(BATCH, 2, 3))
    direct = _grads(terms, tn.Midpoint(), y0, leaves, 2.0**-7, tn.DirectAdjoint())
    adjoint = _grads(terms, tn.Midpoint(), y0, leaves, 2.0**-7, tn.BacksolveAdjoint())
    for a, d in zip(adjoint, direct):
        assert a.shape == d.shape
        assert float((a - d).norm() / d.norm()) < 0.01


@pytest.mark.parametrize("adjoint", [tn.ReversibleAdjoint(), tn.CheckpointAdjoint()])
def test_reversible_heun_exact_gradients(adjoint):
    terms, y0, leaves = _problem("stratonovich")
    direct = _grads(terms, tn.ReversibleHeun(), y0, leaves, 2.0**-6, tn.DirectAdjoint())
    other = _grads(terms, tn.ReversibleHeun(), y0, leaves, 2.0**-6, adjoint)
    for a, d in zip(other, direct):
        torch.testing.assert_close(a, d, rtol=1e-12, atol=1e-12)


def test_reversible_heun_is_algebraically_reversible_on_an_sde():
    terms, y0, _ = _problem("stratonovich")
    solver = tn.ReversibleHeun()
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64)
    y = y0.detach()
    state = solver.init(terms, t0, y, None)
    y1, _, _, state1 = solver.step(terms, t0, t1, y, None, state)
    y_back, state_back = solver.reverse(terms, t0, t1, y1, None, state1)
    torch.testing.assert_close(y_back, y, rtol=0, atol=1e-14)
    torch.testing.assert_close(state_back[0], state[0], rtol=0, atol=1e-14)


def test_gradcheck_euler_maruyama_direct():
    bm = _bm((2, 2), 1)
    sig = torch.tensor([0.4, 0.7], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[0.2, 0.5], [1.0, -0.3]], dtype=torch.float64, requires_grad=True)

    def f(y0, sig):
        terms = tn.MultiTerm(
            tn.ODETerm(lambda t, y, args: -y * y),
            tn.ControlTerm(lambda t, y, args: sig * torch.sin(y), bm, noise="diagonal"),
        )
        return tn.solve(terms, tn.ItoMilstein(), 0.0, 1.0, y0, dt0=0.125).ys

    torch.autograd.gradcheck(f, (y0, sig))
