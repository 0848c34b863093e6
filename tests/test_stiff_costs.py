"""The cost-cutting parts of the stiff solvers, pinned against what they replace.

* The ESDIRK stage predictor interpolates the earlier stage derivatives exactly (weights of
  a Lagrange polynomial in c).
* The one-row Newton iteration (joint solves, one full Jacobian) takes the decisions the
  batched one takes: same iterate, failure flag, rate and eta.
* With the finite-difference Jacobian (one batched perturbation, n evaluations) Rosenbrock
  methods converge at their order on a non-autonomous problem, with the evaluation count of
  the formula.
* An ESDIRK step with nothing to differentiate spends no evaluation on the
  implicit-function correction, and the Jacobian by batched cotangents equals the exact
  one.
* One system is stepped by the Rosenbrock methods as a vector (no reshapes around the
  field), whatever the shape of its state, and its Jacobians are those of a ``(1, n)``
  block.
* A term declared autonomous saves the Rosenbrock methods the time derivative's evaluation
  and changes nothing else (bit for bit).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchnde as tn
from torchnde._core.newton import FlatODE, fd_jacobian, jacobian, simplified_newton


@pytest.mark.parametrize("solver_cls", [tn.Kvaerno3, tn.Kvaerno4, tn.Kvaerno5], ids=str)
def test_stage_predictor_is_lagrange_interpolation(solver_cls: type) -> None:
    tab = solver_cls.tableau
    P = np.array(tab.predictor())
    c = np.array(tab.c, dtype=np.float64)
    for i in range(1, tab.num_stages):
        used = np.nonzero(P[i])[0]
        assert used.size >= 1 and used.max() < i  # only earlier stages
        # Exact for every polynomial of degree below the number of nodes used.
        for deg in range(used.size):
            assert abs(P[i] @ c**deg - c[i] ** deg) < 1e-12, (i, deg)


def _newton_problem(B: int):
    torch.manual_seed(0)
    A = -torch.rand(B, 3, 3, dtype=torch.float64) * 5
    base = torch.rand(B, 3, dtype=torch.float64)
    hg = torch.full((B,), 0.3, dtype=torch.float64)

    def g(z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", A, z) - z**3

    M = torch.eye(3, dtype=torch.float64) - hg[:, None, None] * A
    LU, piv = torch.linalg.lu_factor(M)

    def residual(z: torch.Tensor) -> torch.Tensor:
        return z - base - hg[:, None] * g(z)

    def correction(r: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(LU, piv, -r.unsqueeze(-1)).squeeze(-1)

    def scale_fn(z: torch.Tensor) -> torch.Tensor:
        return 1e-8 + 1e-6 * z.abs()

    return base, residual, correction, scale_fn


@pytest.mark.parametrize("eta0", [1.0, 1e-3])
def test_one_row_newton_takes_the_batched_decisions(eta0: float) -> None:
    base, residual, correction, scale_fn = _newton_problem(2)
    args = dict(kappa=0.05, max_iters=10)
    eta = torch.full((2,), eta0, dtype=torch.float64)
    both = simplified_newton(
        base.clone(), residual, correction, scale_fn, eta, torch.ones(2, dtype=torch.bool), **args
    )
    for b in range(2):

        def res_b(z: torch.Tensor, b: int = b) -> torch.Tensor:
            return residual(torch.cat([z, z]) if b == 0 else torch.cat([z, z]))[b : b + 1]

        def corr_b(r: torch.Tensor, b: int = b) -> torch.Tensor:
            return correction(torch.cat([r, r]))[b : b + 1]

        one = simplified_newton(
            base[b : b + 1].clone(), res_b, corr_b, scale_fn, eta[b : b + 1],
            torch.ones(1, dtype=torch.bool), **args,
        )  # fmt: skip
        torch.testing.assert_close(one.z, both.z[b : b + 1], rtol=0, atol=1e-15)
        assert bool(one.failed[0]) == bool(both.failed[b]) is False
        torch.testing.assert_close(one.theta, both.theta[b : b + 1], rtol=1e-12, atol=0)
        torch.testing.assert_close(one.eta, both.eta[b : b + 1], rtol=1e-12, atol=0)


def test_one_row_newton_reports_divergence() -> None:
    z0 = torch.zeros(1, 2, dtype=torch.float64)
    out = simplified_newton(
        z0, lambda z: z - 1.0, lambda r: 3.0 * r,  # the correction overshoots: rate 2
        lambda z: torch.ones_like(z) * 1e-6, torch.ones(1, dtype=torch.float64),
        torch.ones(1, dtype=torch.bool), kappa=0.05, max_iters=10,
    )  # fmt: skip
    assert bool(out.failed[0])


# y1' = -y1² + c, y2' = y2 cos t - c/2, c = y1 y2 - y2/(1+t): y = (1/(1+t), e^{sin t}).
T = 2.0


def _vf(t: torch.Tensor, y: torch.Tensor, args: object) -> torch.Tensor:
    y1, y2 = y[..., 0], y[..., 1]
    c = y1 * y2 - y2 / (1 + t)
    return torch.stack([-y1 * y1 + c, y2 * torch.cos(t) - 0.5 * c], -1)


@pytest.mark.parametrize("solver_cls,n0", [(tn.Ros3p, 16), (tn.Rodas4, 32)], ids=str)
def test_finite_difference_rosenbrock_keeps_its_order(solver_cls: type, n0: int) -> None:
    # Steps coarse enough that the error stays above the floor the sqrt(eps)-accurate
    # Jacobian sets (near 3e-11 for Rodas5 here, below which slopes are noise).
    exact = np.array([1 / (1 + T), math.exp(math.sin(T))])
    errs, hs = [], []
    for n in (n0, 2 * n0, 4 * n0):
        sol = tn.solve(
            tn.ODETerm(_vf), solver_cls(jacobian="finite_difference"), 0.0, T,
            torch.tensor([1.0, 1.0], dtype=torch.float64), dt0=T / n,
            controller=tn.ConstantStepSize(),
        )  # fmt: skip
        errs.append(float(np.abs(sol.ys[-1].numpy() - exact).max()))
        hs.append(T / n)
        # stages 2..s, f(t1), two for the time derivative, 2 (the state size) for the Jacobian
        s = solver_cls.tableau.num_stages
        assert sol.stats["num_fevals"] == 1 + n * (s + 2 + 2)
    slope = float(np.polyfit(np.log(hs), np.log(errs), 1)[0])
    assert abs(slope - solver_cls.order) <= 0.3, (slope, errs)


def test_esdirk_spends_no_evaluation_on_gradients_it_does_not_need() -> None:
    def run():
        return tn.solve(
            tn.ODETerm(_vf), tn.Kvaerno5(), 0.0, T, torch.tensor([1.0, 1.0], dtype=torch.float64),
            controller=tn.PIDController(rtol=1e-6, atol=1e-8),
        )  # fmt: skip

    recording = run()
    with torch.no_grad():
        plain = run()
    assert recording.stats["num_fevals"] == plain.stats["num_fevals"]
    assert recording.stats["num_steps"] == plain.stats["num_steps"]
    # The no-grad solve takes the host-control path (`_core/adaptive.py`): the same steps, to
    # the rounding of the control arithmetic.
    torch.testing.assert_close(recording.ys, plain.ys, rtol=1e-12, atol=1e-12)
    assert not recording.ys.requires_grad


def test_batched_cotangent_jacobian_is_exact() -> None:
    y = torch.tensor([[0.3, -0.7], [1.1, 0.4]], dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    g = FlatODE(tn.ODETerm(_vf), None, y, True, "autograd", t)
    J = jacobian(g, t, y)
    for b in range(2):
        want = torch.autograd.functional.jacobian(lambda z: _vf(t, z, None), y[b])
        torch.testing.assert_close(J[b], want, rtol=1e-13, atol=1e-13)
    assert not J.requires_grad


ROSENBROCKS = [tn.Rodas5, tn.Rodas4, tn.Ros3p]


def _robertson(t: torch.Tensor, y: torch.Tensor, args: object) -> torch.Tensor:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    r = 3e7 * y2 * y2
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - r, r], -1)


def _stiff_solve(term, solver, y0, t1=1e3, **kw):
    ts = torch.linspace(0.0, t1, 5, dtype=torch.float64)
    return tn.solve(
        term, solver, 0.0, t1, y0, saveat=tn.SaveAt(ts=ts),
        controller=tn.PIDController(rtol=1e-6, atol=1e-10, **kw),
    )  # fmt: skip


@pytest.mark.parametrize("jac", ["finite_difference", "autograd"])
@pytest.mark.parametrize("solver_cls", ROSENBROCKS, ids=str)
def test_one_rosenbrock_system_takes_the_same_steps_in_any_shape(solver_cls, jac) -> None:
    # Shapes (3,) and (1, 3) of a joint solve are one system, stepped as a vector: the
    # field sees (3,) without a reshape, (1, 3) through one; the steps are the same.
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for f in (_robertson, lambda t, y, a: _robertson(t, y, a) * (1 + 0.1 * torch.sin(t))):
        vec = _stiff_solve(tn.ODETerm(f), solver_cls(jacobian=jac), y0)
        row = _stiff_solve(tn.ODETerm(f), solver_cls(jacobian=jac), y0[None])
        assert vec.ys.shape == (5, 3) and row.ys.shape == (5, 1, 3)
        assert torch.equal(vec.ys, row.ys[:, 0]) and vec.stats == row.stats


@pytest.mark.parametrize("how", ["autograd", "finite_difference"])
def test_jacobians_at_a_vector_are_those_of_the_block(how: str) -> None:
    y = torch.tensor([0.3, -0.7], dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    g = FlatODE(tn.ODETerm(_vf), None, y, False, how, t)
    assert g.B == 1 and torch.equal(g(t, y), _vf(t, y, None))
    J_vec = g.jacobian(t, g.vector(y))
    J_block = g.jacobian(t, g.flat(y))
    assert J_vec.shape == (2, 2) and J_block.shape == (1, 2, 2)
    assert torch.equal(J_vec, J_block[0])
    if how == "finite_difference":
        assert torch.equal(J_vec, fd_jacobian(g, t, y, None))


@pytest.mark.parametrize("jac", ["finite_difference", "autograd"])
@pytest.mark.parametrize("solver_cls", ROSENBROCKS, ids=str)
def test_declared_autonomous_term_saves_the_time_derivative_only(solver_cls, jac) -> None:
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    cases = [
        (y0, 1e3, {}),
        (y0, -1e-3, {}),  # reverse time: the term is wrapped
        (y0 * torch.tensor([[1.0], [0.8]], dtype=torch.float64), 1e3, {"per_sample": True}),
    ]
    for y, t1, kw in cases:
        plain = _stiff_solve(tn.ODETerm(_robertson), solver_cls(jacobian=jac), y, t1, **kw)
        auto = _stiff_solve(
            tn.ODETerm(_robertson, autonomous=True), solver_cls(jacobian=jac), y, t1, **kw
        )
        assert torch.equal(plain.ys, auto.ys)
        steps = plain.stats["num_steps"]
        assert torch.equal(torch.as_tensor(steps), torch.as_tensor(auto.stats["num_steps"]))
        # One evaluation less per step (per sample: each sample's own steps).
        saved = torch.as_tensor(plain.stats["num_fevals"]) - auto.stats["num_fevals"]
        assert torch.equal(saved, torch.as_tensor(steps)), (saved, steps)


def test_autonomous_is_declared_not_guessed() -> None:
    assert tn.ODETerm(_vf).autonomous is False
    with pytest.raises(TypeError, match="`autonomous` must be True or False"):
        tn.ODETerm(_robertson, autonomous=1)  # type: ignore[arg-type]
    # Declared for a field that does depend on t, the derivative is dropped: the solution
    # changes (the flag is what the solver reads, never a probe of the field).
    y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    plain = _stiff_solve(tn.ODETerm(_vf), tn.Rodas5(), y0, T)
    wrong = _stiff_solve(tn.ODETerm(_vf, autonomous=True), tn.Rodas5(), y0, T)
    assert not torch.equal(plain.ys, wrong.ys)
