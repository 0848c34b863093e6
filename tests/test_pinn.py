"""torchnde.pinn: conditions hold exactly, generators sample what they say, residuals by
autograd and torch.func agree, solvers solve, inverse problems find their coefficient, and
deep BSDE reaches a closed-form solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from torchnde.pinn import (
    FCNN,
    IBVP1D,
    IVP,
    CustomCondition,
    DeepBSDE,
    DirichletBVP,
    DirichletBVP2D,
    DoubleEndedBVP1D,
    Generator1D,
    Generator2D,
    NoCondition,
    PredefinedGenerator,
    ResidualResampler,
    Solver,
    Solver1D,
    Solver2D,
    StaticGenerator,
    derivatives,
    diff,
    hjb_reference,
    laplacian,
)

f64 = torch.float64


def _net(n_in: int) -> nn.Module:
    torch.manual_seed(0)
    return FCNN(n_in, 1, (16, 16)).to(f64)


def _col(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=f64).reshape(-1, 1).requires_grad_(True)


def _d(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return diff(u, x)


# ------------------------------------------------------------------ conditions hold exactly


def test_ivp_holds_the_value_and_the_derivative_exactly():
    net = _net(1)
    t = _col(0.5, 0.5)
    u = IVP(0.5, 1.25).enforce(net, t)
    torch.testing.assert_close(u, torch.full_like(u, 1.25), rtol=0, atol=1e-15)
    u2 = IVP(0.5, 1.25, -0.75).enforce(net, t)
    torch.testing.assert_close(u2.detach(), torch.full_like(u, 1.25), rtol=0, atol=1e-15)
    torch.testing.assert_close(_d(u2, t), torch.full_like(u, -0.75), rtol=0, atol=1e-14)
    # away from t0 the network matters
    assert float(IVP(0.5, 1.25).enforce(net, _col(2.0))) != 1.25


def test_dirichlet_bvp_holds_both_ends_exactly():
    net = _net(1)
    u = DirichletBVP(-1.0, 0.3, 2.0, -1.7).enforce(net, _col(-1.0, 2.0))
    torch.testing.assert_close(u.detach().reshape(-1), torch.tensor([0.3, -1.7], dtype=f64))


@pytest.mark.parametrize(
    "ends",
    [
        {"x_min_val": 0.4, "x_max_val": -1.0},
        {"x_min_val": 0.4, "x_max_prime": 2.5},
        {"x_min_prime": -0.6, "x_max_val": 1.5},
        {"x_min_prime": -0.6, "x_max_prime": 2.5},
    ],
    ids=["DD", "DN", "ND", "NN"],
)
def test_double_ended_bvp_holds_dirichlet_and_neumann_ends_exactly(ends):
    net = _net(1)
    cond = DoubleEndedBVP1D(0.5, 2.0, **ends)
    x = _col(0.5, 2.0)
    u = cond.enforce(net, x)
    du = _d(u, x)
    for i, side in enumerate(("x_min", "x_max")):
        if f"{side}_val" in ends:
            assert abs(float(u[i]) - ends[f"{side}_val"]) < 1e-14
        else:
            assert abs(float(du[i]) - ends[f"{side}_prime"]) < 1e-13
    # the interior is free: two networks give two trial solutions
    other = FCNN(1, 1, (8,)).to(f64)
    xm = _col(1.1)
    assert float(cond.enforce(net, xm)) != float(cond.enforce(other, xm))


def test_dirichlet_bvp_2d_holds_all_four_edges_exactly():
    def exact(x, y):
        return torch.exp(-x) * (x + y**3) + torch.sin(3 * y)

    cond = DirichletBVP2D(
        -1.0,
        lambda y: exact(torch.full_like(y, -1.0), y),
        1.0,
        lambda y: exact(torch.full_like(y, 1.0), y),
        0.0,
        lambda x: exact(x, torch.zeros_like(x)),
        2.0,
        lambda x: exact(x, torch.full_like(x, 2.0)),
    )
    net = _net(2)
    s = torch.linspace(0, 1, 7, dtype=f64).reshape(-1, 1)
    xs, ys = -1 + 2 * s, 2 * s
    for x, y in (
        (torch.full_like(s, -1.0), ys),
        (torch.full_like(s, 1.0), ys),
        (xs, torch.zeros_like(s)),
        (xs, torch.full_like(s, 2.0)),
    ):
        torch.testing.assert_close(
            cond.enforce(net, x, y).detach(), exact(x, y), rtol=0, atol=1e-14
        )


@pytest.mark.parametrize("kinds", ["DD", "DN", "ND", "NN"])
def test_ibvp1d_holds_the_initial_profile_and_each_end_exactly(kinds):
    # u = cos(x) e^{-t} + x t: compatible data for any choice of ends.
    def exact(x, t):
        return torch.cos(x) * torch.exp(-t) + x * t

    def exact_x(x, t):
        return -torch.sin(x) * torch.exp(-t) + t

    a, b = 0.0, 2.0
    kw = {}
    kw["x_min_val" if kinds[0] == "D" else "x_min_prime"] = (
        (lambda t: exact(torch.full_like(t, a), t))
        if kinds[0] == "D"
        else (lambda t: exact_x(torch.full_like(t, a), t))
    )
    kw["x_max_val" if kinds[1] == "D" else "x_max_prime"] = (
        (lambda t: exact(torch.full_like(t, b), t))
        if kinds[1] == "D"
        else (lambda t: exact_x(torch.full_like(t, b), t))
    )
    cond = IBVP1D(a, b, 0.0, lambda x: torch.cos(x), **kw)
    net = _net(2)
    x = torch.linspace(a, b, 9, dtype=f64).reshape(-1, 1)
    torch.testing.assert_close(
        cond.enforce(net, x, torch.zeros_like(x)).detach(), torch.cos(x), rtol=0, atol=1e-14
    )
    t = torch.linspace(0, 1.5, 6, dtype=f64).reshape(-1, 1)
    for kind, end in zip(kinds, (a, b)):
        xe = torch.full_like(t, end).requires_grad_(True)
        u = cond.enforce(net, xe, t)
        if kind == "D":
            torch.testing.assert_close(u.detach(), exact(xe, t).detach(), rtol=0, atol=1e-14)
        else:
            torch.testing.assert_close(_d(u, xe), exact_x(xe, t).detach(), rtol=0, atol=1e-13)


def test_custom_and_no_condition():
    net = _net(1)
    t = _col(0.0, 0.7)
    u = CustomCondition(lambda out, t: 1 + t**2 * out).enforce(net, t)
    assert float(u[0]) == 1.0
    torch.testing.assert_close(NoCondition().enforce(net, t), net(t))


def test_condition_errors_name_the_argument():
    with pytest.raises(ValueError, match="`x_max` must be greater than `x_min`"):
        DoubleEndedBVP1D(1.0, 0.0, x_min_val=0.0, x_max_val=1.0)
    with pytest.raises(ValueError, match="exactly one of `x_min_val`.*both"):
        DoubleEndedBVP1D(0.0, 1.0, x_min_val=0.0, x_min_prime=1.0, x_max_val=1.0)
    with pytest.raises(ValueError, match="exactly one of `x_max_val`.*neither"):
        IBVP1D(0.0, 1.0, 0.0, torch.sin, x_min_val=torch.sin)
    with pytest.raises(TypeError, match="`u_0` must be a finite number"):
        IVP(0.0, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`x_min_val` must be a function"):
        DirichletBVP2D(0, None, 1, torch.sin, 0, torch.sin, 1, torch.sin)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`parameterize` must be a function"):
        CustomCondition(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ generators


@pytest.mark.parametrize(
    "method",
    [
        "uniform",
        "equally-spaced",
        "equally-spaced-noisy",
        "log-spaced-noisy",
        "chebyshev1",
        "chebyshev2",
    ],  # fmt: skip
)
def test_generator1d_stays_in_its_interval(method):
    torch.manual_seed(0)
    (t,) = Generator1D(50, 0.5, 3.0, method).get_examples()
    assert t.shape == (50, 1)
    assert float(t.min()) >= 0.5 and float(t.max()) <= 3.0


def test_generator1d_chebyshev_points_are_the_chebyshev_nodes():
    (t,) = Generator1D(5, -1.0, 1.0, "chebyshev2").get_examples()
    expect = np.sort(np.cos(np.arange(5) * np.pi / 4))
    np.testing.assert_allclose(t.reshape(-1).numpy(), expect, atol=1e-7)
    (t1,) = Generator1D(4, 0.0, 2.0, "chebyshev1").get_examples()
    expect1 = 1 + np.sort(np.cos((2 * np.arange(1, 5) - 1) * np.pi / 8))
    np.testing.assert_allclose(t1.reshape(-1).numpy(), expect1, atol=1e-6)
    (e,) = Generator1D(5, 0.0, 1.0, "equally-spaced").get_examples()
    np.testing.assert_allclose(e.reshape(-1).numpy(), np.linspace(0, 1, 5), atol=1e-7)


def test_generator2d_grid_and_noise():
    x, y = Generator2D((3, 4), (0.0, -1.0), (1.0, 1.0), "equally-spaced").get_examples()
    assert x.shape == y.shape == (12, 1)
    assert sorted(set(x.reshape(-1).tolist())) == [0.0, 0.5, 1.0]
    torch.manual_seed(1)
    xn, yn = Generator2D((8, 8), method="equally-spaced-noisy").get_examples()
    assert 0 <= float(xn.min()) and float(yn.max()) <= 1
    s = StaticGenerator(Generator2D((4, 4), method="uniform"))
    assert s.get_examples()[0] is s.get_examples()[0]


def test_generator_errors():
    with pytest.raises(ValueError, match="`method` must be one of"):
        Generator1D(10, method="sobol")
    with pytest.raises(ValueError, match="`size` must be an int >= 1"):
        Generator1D(0)
    with pytest.raises(ValueError, match="increasing pair"):
        Generator1D(10, 1.0, 0.0)
    with pytest.raises(ValueError, match="needs a positive lower bound"):
        Generator1D(10, 0.0, 1.0, "log-spaced").get_examples()
    with pytest.raises(ValueError, match="must not exceed the pool's size"):
        ResidualResampler(Generator1D(10), 20)
    with pytest.raises(ValueError, match="needs at least one coordinate tensor"):
        PredefinedGenerator()
    with pytest.raises(ValueError, match="must have equal lengths"):
        PredefinedGenerator(torch.zeros(3), torch.zeros(4))
    with pytest.raises(RuntimeError, match="has no residual"):
        ResidualResampler(Generator1D(10), 5).get_examples()


def test_residual_resampler_concentrates_where_the_residual_is_large():
    torch.manual_seed(0)
    gen = ResidualResampler(Generator1D(2000, 0.0, 1.0), 200, k=1.0, c=0.0)
    gen.bind(lambda t: (t > 0.9).to(t.dtype).reshape(-1) + 1e-3)
    (t,) = gen.get_examples()
    assert t.shape == (200, 1)
    assert float((t > 0.9).double().mean()) > 0.9  # uniform would give 0.1


# ------------------------------------------------------------------ residuals


def test_diff_and_torch_func_derivatives_agree():
    net = _net(2)
    cond = DirichletBVP2D(0, torch.sin, 1, torch.cos, 0, torch.sin, 1, torch.cos)
    torch.manual_seed(2)
    p = torch.rand(20, 2, dtype=f64)
    x, y = (c.clone().requires_grad_(True) for c in p.split(1, dim=1))
    u = cond.enforce(net, x, y)
    lap_autograd = diff(u, x, 2) + diff(u, y, 2)

    def fn(q):
        return cond.enforce(net, q[0].reshape(1, 1), q[1].reshape(1, 1)).reshape(())

    val, grad, hess = derivatives(fn, p)
    torch.testing.assert_close(val, u.detach().reshape(-1))
    torch.testing.assert_close(grad[:, 0], diff(u, x).detach().reshape(-1))
    torch.testing.assert_close(laplacian(fn, p), lap_autograd.detach().reshape(-1))
    torch.testing.assert_close(hess[:, 0, 1], hess[:, 1, 0])


def test_diff_errors_and_constant():
    t = _col(1.0, 2.0)
    with pytest.raises(ValueError, match="same shape"):
        diff(t.reshape(-1), t)
    with pytest.raises(ValueError, match="`order` must be an int >= 1"):
        diff(t * 2, t, order=0)
    with pytest.raises(ValueError, match="shape \\(n, d\\)"):
        derivatives(lambda p: p.sum(), torch.zeros(3))
    torch.testing.assert_close(diff(t * 3.0, t, 2), torch.zeros_like(t))


# ------------------------------------------------------------------ solvers


def test_solver1d_solves_an_ode_system_to_the_exact_solution():
    # x' = v, v' = -x, x(0) = 0, v(0) = 1: x = sin t, v = cos t.
    torch.manual_seed(0)
    solver = Solver1D(
        lambda x, v, t: [diff(x, t) - v, diff(v, t) + x],
        [IVP(0.0, 0.0), IVP(0.0, 1.0)],
        0.0,
        1.5,
        train_generator=Generator1D(64, 0.0, 1.5, "equally-spaced-noisy"),
    )
    solver.fit(300, lr=1e-2)
    assert len(solver.metrics_history["train_loss"]) == 300
    assert len(solver.metrics_history["valid_loss"]) == 300
    ts = torch.linspace(0, 1.5, 41)
    x, v = solver.get_solution()(ts)
    assert float((x - torch.sin(ts)).abs().max()) < 2e-2
    assert float((v - torch.cos(ts)).abs().max()) < 2e-2
    xn, _ = solver.get_solution()(ts.numpy(), to_numpy=True)
    assert isinstance(xn, np.ndarray) and xn.shape == (41,)


def test_inverse_problem_recovers_the_coefficient():
    # u' = -k u, u(0) = 1, observed exp(-2 t): k -> 2.
    torch.manual_seed(0)
    k = nn.Parameter(torch.tensor(0.5))
    t_obs = torch.linspace(0, 1, 10)
    solver = Solver1D(
        lambda u, t: [diff(u, t) + k * u],
        [IVP(0.0, 1.0)],
        0.0,
        1.0,
        parameters=[k],
        data=((t_obs,), (torch.exp(-2 * t_obs),)),
    )
    solver.fit(400, lr=3e-2)
    assert abs(float(k) - 2.0) < 0.05, float(k)


def test_solver2d_with_residual_resampling_trains():
    torch.manual_seed(0)
    pool = Generator2D((12, 12), method="uniform")
    solver = Solver2D(
        lambda u, x, y: [diff(u, x, 2) + diff(u, y, 2)],
        [
            DirichletBVP2D(
                0,
                lambda y: 0 * y,
                1,
                lambda y: 0 * y,
                0,
                lambda x: 0 * x,
                1,
                lambda x: torch.sin(math.pi * x),
            )
        ],  # fmt: skip
        (0.0, 0.0),
        (1.0, 1.0),
        train_generator=ResidualResampler(pool, 64),
    )
    first = float(solver.loss(pool.get_examples()))
    solver.fit(80, lr=1e-2, valid_every=0)
    assert solver.metrics_history["valid_loss"] == []
    assert float(solver.loss(pool.get_examples())) < 0.2 * first


def test_solver_errors():
    with pytest.raises(TypeError, match="`conditions\\[0\\]` must be a condition"):
        Solver1D(lambda u, t: [u], [3], 0.0, 1.0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="one network per condition"):
        Solver1D(lambda u, t: [u], [IVP(0, 1)], 0.0, 1.0, nets=[FCNN(), FCNN()])
    with pytest.raises(TypeError, match="`pde_system` must be a function"):
        Solver(None, [IVP(0, 1)], Generator1D(4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`data` must hold 1 coordinate tensors and 1 value"):
        Solver1D(lambda u, t: [u], [IVP(0, 1)], 0.0, 1.0, data=((), ()))
    with pytest.raises(ValueError, match="`max_epochs` must be an int >= 0"):
        Solver1D(lambda u, t: [u], [IVP(0, 1)], 0.0, 1.0).fit(-1)
    with pytest.raises(ValueError, match="`valid_every` must be an int >= 0"):
        Solver1D(lambda u, t: [u], [IVP(0, 1)], 0.0, 1.0).fit(1, valid_every=-1)


# ------------------------------------------------------------------ deep BSDE


def test_deep_bsde_solves_a_discounted_heat_equation_with_a_closed_form_solution():
    # u_t + Δu - r u = 0, g = |x|² (f = -r y, σ = √2): u(0, x) = e^{-rT} (|x|² + 2 d T).
    d, r, T = 10, 0.5, 0.5
    x0 = torch.full((d,), 0.3)
    exact = math.exp(-r * T) * (float(x0.pow(2).sum()) + 2 * d * T)
    torch.manual_seed(0)
    model = DeepBSDE(
        d,
        T,
        5,
        x0,
        math.sqrt(2.0),
        lambda t, x, y, z: -r * y,
        lambda x: x.pow(2).sum(1, keepdim=True),
        hidden=(16, 16),
        y_init_range=(6.0, 10.0),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 200, 6e-4)
    for _ in range(200):
        opt.zero_grad()
        model.loss(128).mean().backward()
        opt.step()
        sched.step()
    # 0.5% at this seed; the Monte Carlo noise of 200 batches of 128 paths is about 0.3%.
    assert abs(model.y0 - exact) / exact < 0.02, (model.y0, exact)


def test_hjb_reference_is_the_papers_value():
    value, se = hjb_reference(num_samples=50_000)
    assert abs(value - 4.5901) < 4 * se + 1e-4, (value, se)


def test_deep_bsde_errors():
    f = lambda t, x, y, z: y
    with pytest.raises(ValueError, match="`dim` must be an int >= 1"):
        DeepBSDE(0, 1.0, 10, 0.0, 1.0, f, f)
    with pytest.raises(ValueError, match="`x0` must be a number or shape \\(3,\\)"):
        DeepBSDE(3, 1.0, 10, torch.zeros(2), 1.0, f, f)
    with pytest.raises(ValueError, match="`total_time` must be a positive number"):
        DeepBSDE(3, -1.0, 10, 0.0, 1.0, f, f)
