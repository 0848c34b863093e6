"""Physics-structured models: HNN, SeparableHNN, LNN, DeLaN against analytic mechanics,
symplecticity to round-off, gradients against float64 finite differences, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import torchnde as tn
from torchnde.data.mechanics import (
    DOUBLE_PENDULUM_G,
    double_pendulum_dynamics,
    double_pendulum_energy,
    forced_pendulum_dynamics,
    generate_double_pendulum,
    generate_mass_spring,
    generate_pendulum,
    mass_spring_energy,
    pendulum_energy,
    pendulum_period,
)
from torchnde.models import (
    CHNN,
    CLNN,
    HNN,
    LNN,
    DeLaN,
    EnergyShaping,
    NeuralODE,
    PortHamiltonian,
    SemiMarkovPolicy,
    SeparableHNN,
    SymODEN,
)

F64 = torch.float64


def _net(i: int, o: int, h: int = 8, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(i, h), act(), nn.Linear(h, o)).to(F64)


class _Fn(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


# --------------------------------------------------------------------------- HNN


def test_hnn_field_is_the_symplectic_gradient_of_an_analytic_hamiltonian():
    # H = q1^2 p2 + sin(q2) p1^2 / 2 + q1 q2 p1: J grad H written out by hand.
    def h(x):
        q1, q2, p1, p2 = x.unbind(1)
        return q1**2 * p2 + torch.sin(q2) * p1**2 / 2 + q1 * q2 * p1

    x = torch.randn(5, 4, dtype=F64)
    q1, q2, p1, p2 = x.unbind(1)
    expected = torch.stack(
        [
            torch.sin(q2) * p1 + q1 * q2,  # dH/dp1
            q1**2,  # dH/dp2
            -(2 * q1 * p2 + q2 * p1),  # -dH/dq1
            -(torch.cos(q2) * p1**2 / 2 + q1 * p1),  # -dH/dq2
        ],
        1,
    )
    got = HNN(_Fn(h))(torch.tensor(0.0), x)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


def test_hnn_field_conserves_its_energy_pointwise():
    hnn = HNN(_net(4, 1))
    x = torch.randn(16, 4, dtype=F64)
    with torch.no_grad():
        f = hnn(torch.tensor(0.0), x)
    x_ = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(hnn.hamiltonian(0.0, x_).sum(), x_)
    assert float((g * f).sum(1).abs().max()) < 1e-14


def test_hnn_gradients_match_finite_differences():
    hnn = HNN(_net(2, 1, h=4))
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    params = tuple(hnn.parameters())

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            hnn, dict(zip([n for n, _ in hnn.named_parameters()], ps))
        ):
            return hnn(torch.tensor(0.0), x)

    assert gradcheck(f, (x, *params))


def test_hnn_trains_through_a_solve_with_finite_difference_gradients():
    hnn = HNN(_net(2, 1, h=4))
    node = NeuralODE(hnn, solver=tn.RK4(), dt0=0.1, t1=0.5)
    x0 = torch.randn(3, 2, dtype=F64)
    names = [n for n, _ in hnn.named_parameters()]

    def f(*ps):
        with torch.nn.utils.stateless._reparametrize_module(hnn, dict(zip(names, ps))):
            return node(x0)

    assert gradcheck(f, tuple(p.detach().requires_grad_(True) for p in hnn.parameters()))


def test_hnn_with_implicit_midpoint_conserves_a_quadratic_hamiltonian_to_round_off():
    # Implicit midpoint conserves quadratic invariants exactly: H = |W x|^2 / 2, fixed W.
    torch.manual_seed(1)
    w = torch.randn(4, 4, dtype=F64)
    hnn = HNN(_Fn(lambda x: 0.5 * ((x @ w.T) ** 2).sum(1)))
    x0 = torch.randn(2, 4, dtype=F64)
    with torch.no_grad():
        sol = tn.solve(
            tn.ODETerm(hnn), tn.ImplicitMidpoint(), 0.0, 10.0, x0, dt0=0.05,
            saveat=tn.SaveAt(ts=torch.linspace(0, 10, 41, dtype=F64)),
            controller=tn.ConstantStepSize(),
        )  # fmt: skip
        e = hnn.hamiltonian(0.0, sol.ys.reshape(-1, 4)).reshape(41, 2)
    assert float(((e - e[0]) / e[0]).abs().max()) < 1e-10


@pytest.mark.parametrize("solver", [tn.Leapfrog(), tn.Yoshida4()], ids=repr)
def test_separable_hnn_step_is_symplectic_to_round_off(solver):
    # The one-step map Phi of a fixed network satisfies D Phi^T J D Phi = J exactly.
    hnn = SeparableHNN(_net(2, 1), _net(2, 1, h=6))
    j = torch.zeros(4, 4, dtype=F64)
    j[:2, 2:], j[2:, :2] = torch.eye(2, dtype=F64), -torch.eye(2, dtype=F64)

    def phi(y):
        sol = tn.solve(tn.ODETerm(hnn), solver, 0.0, 0.3, (y[None, :2], y[None, 2:]),
                       dt0=0.3, controller=tn.ConstantStepSize())  # fmt: skip
        return torch.cat([sol.ys[0][-1, 0], sol.ys[1][-1, 0]])

    jac = torch.autograd.functional.jacobian(phi, torch.randn(4, dtype=F64))
    torch.testing.assert_close(jac.T @ j @ jac, j, rtol=0, atol=1e-13)
    assert float((jac - torch.eye(4, dtype=F64)).abs().max()) > 1e-2  # not a trivial map


def test_separable_hnn_takes_a_tuple_or_a_flat_state():
    hnn = SeparableHNN(None, _net(1, 1))
    q, p = torch.randn(4, 1, dtype=F64), torch.randn(4, 1, dtype=F64)
    dq, dp = hnn(0.0, (q, p))
    torch.testing.assert_close(torch.cat([dq, dp], 1), hnn(0.0, torch.cat([q, p], 1)))
    torch.testing.assert_close(dq, p)


class _Confining(nn.Module):
    """A fixed network potential plus q^2, so that the motion stays bounded."""

    def __init__(self):
        super().__init__()
        self.net = _net(1, 1, h=16)

    def forward(self, q):
        return self.net(q)[:, 0] + q[:, 0] ** 2


@pytest.mark.slow  # 10^4 leapfrog steps and 2000 RK4 steps through an autograd field: ~12 s
def test_separable_hnn_energy_error_stays_bounded_over_ten_thousand_steps_where_rk4_drifts():
    # A symplectic method conserves a modified Hamiltonian: its energy error oscillates with
    # a bounded amplitude (no method conserves a non-quadratic H exactly, Ge-Marsden), where
    # RK4's grows linearly. Every step is saved so that the windows' maxima are not aliased.
    hnn = SeparableHNN(None, _Confining())
    y0 = (torch.tensor([[1.0]], dtype=F64), torch.tensor([[0.0]], dtype=F64))
    e0 = hnn.hamiltonian(y0).detach()
    drift = {}
    with torch.no_grad():
        for name, solver, dt in (("leapfrog", tn.Leapfrog(), 0.1), ("rk4", tn.RK4(), 0.5)):
            n = round(1000.0 / dt)
            ts = torch.linspace(0, 1000.0, n + 1, dtype=F64)
            sol = tn.solve(tn.ODETerm(hnn), solver, 0.0, 1000.0, y0, dt0=dt,
                           saveat=tn.SaveAt(ts=ts), controller=tn.ConstantStepSize(),
                           max_steps=n + 10)  # fmt: skip
            e = hnn.hamiltonian((sol.ys[0][1:, 0], sol.ys[1][1:, 0])) - e0
            window = e.abs().reshape(10, -1).max(1).values
            drift[name] = float(window[-1] / window[0])
    assert drift["leapfrog"] < 1.01, drift
    assert drift["rk4"] > 2, drift  # linear growth; 3.8 on this network (1.0000005 leapfrog)


# --------------------------------------------------------------------------- LNN


class _DoublePendulumLagrangian(nn.Module):
    def forward(self, x):
        t1, t2, w1, w2 = x.unbind(1)
        g = DOUBLE_PENDULUM_G
        kinetic = w1**2 + 0.5 * w2**2 + w1 * w2 * torch.cos(t1 - t2)
        return kinetic + 2 * g * torch.cos(t1) + g * torch.cos(t2)


def test_lnn_reproduces_the_double_pendulum_equations_of_motion():
    lnn = LNN(_DoublePendulumLagrangian())
    x = torch.randn(32, 4, dtype=F64)
    got = lnn(torch.tensor(0.0), x)
    torch.testing.assert_close(got, double_pendulum_dynamics(0.0, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lnn.energy(x), double_pendulum_energy(x), rtol=1e-12, atol=1e-12)


def test_lnn_on_a_harmonic_oscillator_gives_minus_k_over_m_q():
    m, k = 2.0, 3.0
    lnn = LNN(_Fn(lambda x: 0.5 * m * x[:, 1] ** 2 - 0.5 * k * x[:, 0] ** 2))
    x = torch.randn(6, 2, dtype=F64)
    torch.testing.assert_close(lnn.acceleration(x)[:, 0], -k / m * x[:, 0])


def test_lnn_gradients_match_finite_differences():
    lnn = LNN(_net(2, 1, h=4, act=nn.Softplus))
    names = [n for n, _ in lnn.named_parameters()]
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(lnn, dict(zip(names, ps))):
            return lnn.acceleration(x)

    assert gradcheck(f, (x, *(p.detach().requires_grad_(True) for p in lnn.parameters())))


def test_lnn_works_without_autograd_recording():
    lnn = LNN(_DoublePendulumLagrangian())
    x = torch.randn(4, 4, dtype=F64)
    with torch.no_grad():
        got = lnn(0.0, x)
    torch.testing.assert_close(got, double_pendulum_dynamics(0.0, x))


# --------------------------------------------------------------------------- DeLaN


def test_delan_mass_matrix_is_symmetric_positive_definite():
    torch.manual_seed(0)
    delan = DeLaN(3, hidden=16, eps=1e-3).to(F64)
    with torch.no_grad():
        m = delan.mass_matrix(10 * torch.randn(64, 3, dtype=F64))
    torch.testing.assert_close(m, m.transpose(1, 2), rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(m).min()) >= 1e-3 * (1 - 1e-9)


def test_delan_forward_dynamics_inverts_inverse_dynamics():
    torch.manual_seed(0)
    delan = DeLaN(2, hidden=16).to(F64)
    q, qd, qdd = torch.randn(3, 8, 2, dtype=F64).unbind(0)
    tau = delan.inverse_dynamics(q, qd, qdd)
    torch.testing.assert_close(delan.forward_dynamics(q, qd, tau), qdd)


def test_delan_matches_the_euler_lagrange_equations_of_its_own_lagrangian():
    # LNN (checked above against analytic mechanics) on L = qd'M(q)qd/2 - V(q).
    torch.manual_seed(0)
    delan = DeLaN(2, hidden=8).to(F64)

    def lagrangian(x):
        q, qd = x[:, :2], x[:, 2:]
        return delan.energy(q, qd) - 2 * delan.potential_energy(q)

    x = torch.randn(5, 4, dtype=F64)
    expected = LNN(_Fn(lagrangian)).acceleration(x)
    torch.testing.assert_close(delan.forward_dynamics(x[:, :2], x[:, 2:]), expected)


class _Const(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, q):
        return torch.full((q.shape[0], 1), self.value, dtype=q.dtype)


def test_delan_with_the_pendulum_mass_and_potential_gives_the_forced_pendulum():
    # M = softplus(log(e - 1)) = 1, V = -g cos q: q'' = -g sin q + tau (no damping).
    delan = DeLaN(1, eps=0.0, cholesky=_Const(math.log(math.e - 1)),
                  potential=_Fn(lambda q: -DOUBLE_PENDULUM_G * torch.cos(q[:, 0])))  # fmt: skip
    x, tau = torch.randn(7, 2, dtype=F64), torch.randn(7, 1, dtype=F64)
    expected = forced_pendulum_dynamics(0.0, x, tau, damping=0.0)
    torch.testing.assert_close(delan(0.0, x, tau), expected)
    torch.testing.assert_close(delan(0.0, x, lambda t, x: tau), expected)


def test_delan_inverse_dynamics_gradients_match_finite_differences():
    torch.manual_seed(0)
    delan = DeLaN(2, hidden=3, depth=1).to(F64)
    names = [n for n, _ in delan.named_parameters()]
    q, qd, qdd = (torch.randn(2, 2, dtype=F64, requires_grad=True) for _ in range(3))

    def f(q, qd, qdd, *ps):
        with torch.nn.utils.stateless._reparametrize_module(delan, dict(zip(names, ps))):
            return delan.inverse_dynamics(q, qd, qdd)

    ps = tuple(p.detach().requires_grad_(True) for p in delan.parameters())
    assert gradcheck(f, (q, qd, qdd, *ps))


# --------------------------------------------------------------------------- data


def test_generators_follow_their_dynamics_and_conserve_energy():
    t, x, dxdt = generate_mass_spring(4, noise_std=0.0)
    e = mass_spring_energy(x)
    torch.testing.assert_close(e, e[:1].expand_as(e))
    t, x, dxdt = generate_pendulum(3, noise_std=0.0)
    e = pendulum_energy(x)
    torch.testing.assert_close(e, e[:1].expand_as(e), rtol=1e-9, atol=1e-9)
    t, x, dxdt = generate_double_pendulum(2, num_times=20, t1=2.0)
    e = double_pendulum_energy(x)
    torch.testing.assert_close(e, e[:1].expand_as(e), rtol=1e-8, atol=1e-8)
    # Noise is on the states only, seeded.
    _, x1, d1 = generate_pendulum(3, noise_std=0.1, seed=5)
    _, x2, d2 = generate_pendulum(3, noise_std=0.1, seed=5)
    torch.testing.assert_close(x1, x2)
    assert 0.05 < float((x1 - generate_pendulum(3, noise_std=0.0, seed=5)[1]).std()) < 0.15


def test_pendulum_period_matches_a_solve():
    e = 2.0
    period = pendulum_period(e)
    q0 = math.acos(1 - e / (2 * 3.0))  # at rest at the turning point
    assert abs(period - 2 * math.pi / math.sqrt(6)) > 0.1  # not the small-angle period
    from torchnde.data.mechanics import _reference, pendulum_dynamics

    ts = torch.tensor([0.0, period], dtype=F64)
    x = _reference(pendulum_dynamics, torch.tensor([[q0, 0.0]], dtype=F64), ts)
    torch.testing.assert_close(x[-1], x[0], rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match=r"HNN: `hamiltonian` must be a module"):
        HNN(3)
    with pytest.raises(ValueError, match=r"HNN: the state must be a tensor \(batch, 2 d\)"):
        HNN(_net(3, 1))(0.0, torch.randn(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"one value per sample, shape \(2,\) or \(2, 1\), got"):
        HNN(_net(2, 2))(0.0, torch.randn(2, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"SeparableHNN: the state must be a tuple"):
        SeparableHNN(None, _net(1, 1))(0.0, torch.randn(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"LNN: `eps` must be a number >= 0, got -1"):
        LNN(_net(2, 1), eps=-1)
    with pytest.raises(ValueError, match=r"LNN: the state must be a tensor"):
        LNN(_net(3, 1))(0.0, torch.randn(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"DeLaN: `dof` must be an int >= 1, got 0"):
        DeLaN(0)
    delan = DeLaN(2).to(F64)
    with pytest.raises(ValueError, match=r"DeLaN: `qdd` must be a tensor \(batch, 2\)"):
        delan.inverse_dynamics(*torch.randn(2, 4, 2, dtype=F64), torch.randn(4, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"DeLaN: `args \(the torque\)` must be a tensor"):
        delan(0.0, torch.randn(4, 4, dtype=F64), torch.randn(4, 1, dtype=F64))


# --------------------------------------------------------------------------- control


def _shaping() -> EnergyShaping:
    return EnergyShaping(_net(1, 1, h=6), _net(2, 1, h=4))


def test_energy_shaping_control_is_minus_the_potential_gradient_minus_the_damping():
    k = 2.5
    ctrl = EnergyShaping(_Fn(lambda q: 0.5 * k * q[:, 0] ** 2), _Fn(lambda x: x[:, :1] * 0 + 1.0))
    x = torch.randn(6, 2, dtype=F64)
    expected = -k * x[:, :1] - torch.nn.functional.softplus(torch.tensor(1.0, dtype=F64)) * x[:, 1:]
    torch.testing.assert_close(ctrl.control(x), expected)


def test_energy_shaping_closed_loop_dissipates_the_shaped_energy():
    # Plant q'' = -sin q + u; E = qd^2/2 + 1 - cos q + V(q): dE/dt = -softplus(k) qd^2 <= 0.
    ctrl = _shaping()
    f = ctrl.closed_loop(lambda t, x, u: torch.cat([x[:, 1:], -torch.sin(x[:, :1]) + u], 1))
    x = 3 * torch.randn(64, 2, dtype=F64)
    with torch.no_grad():
        dx = f(torch.tensor(0.0), x)
    x_ = x.clone().requires_grad_(True)
    energy = 0.5 * x_[:, 1] ** 2 + 1 - torch.cos(x_[:, 0]) + ctrl.shaped_potential(x_[:, :1])
    (grad,) = torch.autograd.grad(energy.sum(), x_)
    rate = (grad * dx).sum(1)
    expected = -torch.nn.functional.softplus(ctrl.damping(x))[:, 0].detach() * x[:, 1] ** 2
    torch.testing.assert_close(rate, expected)
    assert bool((rate <= 1e-15).all())


def test_energy_shaping_gradients_through_an_integral_cost_match_finite_differences():
    ctrl = _shaping()
    names = [n for n, _ in ctrl.named_parameters()]
    f = ctrl.closed_loop(lambda t, x, u: torch.cat([x[:, 1:], -torch.sin(x[:, :1]) + u], 1))
    x0 = torch.randn(2, 2, dtype=F64)

    def cost(*ps):
        with torch.nn.utils.stateless._reparametrize_module(ctrl, dict(zip(names, ps))):
            sol = tn.solve(tn.ODETerm(f), tn.RK4(), 0.0, 0.3, x0, dt0=0.1,
                           controller=tn.ConstantStepSize(),
                           integral=lambda t, x, a: (x**2).sum(1))  # fmt: skip
            return sol.integral[-1]

    assert gradcheck(cost, tuple(p.detach().requires_grad_(True) for p in ctrl.parameters()))


def test_energy_shaping_bad_inputs():
    with pytest.raises(TypeError, match=r"EnergyShaping: `potential` must be a module"):
        EnergyShaping(1, _net(2, 1))
    with pytest.raises(ValueError, match=r"`damping` must return \(batch, dof\) = \(3, 1\)"):
        EnergyShaping(_net(1, 1), _net(2, 2)).control(torch.randn(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"EnergyShaping: the state must be a tensor"):
        _shaping().control(torch.randn(3, 3, dtype=F64))


# --------------------------------------------------------------------------- port-Hamiltonian


def _port(n: int = 4, m: int = 1) -> PortHamiltonian:
    return PortHamiltonian(
        _net(n, 1, h=6),
        interconnection=_net(n, n * n, h=4),
        dissipation=_net(n, n * n, h=4),
        input_matrix=_net(n, n * m, h=4),
    )


def test_port_hamiltonian_field_matches_the_formula_on_analytic_parts():
    # H = |x|^2 / 2, A = [[0, x0], [0, 0]] (J = A - A'), B = diag(1, 2), G = [1, x1]'.
    def a(x):
        z = torch.zeros_like(x[:, 0])
        return torch.stack([z, x[:, 0], z, z], 1)

    def b(x):
        o = torch.ones_like(x[:, 0])
        return torch.stack([o, 0 * o, 0 * o, 2 * o], 1)

    def g(x):
        return torch.stack([x[:, 0] * 0 + 1, x[:, 1]], 1)

    ph = PortHamiltonian(
        _Fn(lambda x: 0.5 * (x**2).sum(1)),
        interconnection=_Fn(a),
        dissipation=_Fn(b),
        input_matrix=_Fn(g),
    )
    x, u = torch.randn(5, 2, dtype=F64), torch.randn(5, 1, dtype=F64)
    x0, x1 = x.unbind(1)
    # (J - R) x + G u with J = [[0, x0], [-x0, 0]], R = diag(1, 4).
    expected = torch.stack([x0 * x1 - x0 + u[:, 0], -x0 * x0 - 4 * x1 + x1 * u[:, 0]], 1)
    torch.testing.assert_close(ph(0.0, x, u), expected)


def test_port_hamiltonian_energy_balance_holds_pointwise():
    # dH/dt = -grad H' R grad H + grad H' G u, whatever the networks.
    ph = _port()
    x, u = torch.randn(32, 4, dtype=F64), torch.randn(32, 1, dtype=F64)
    with torch.no_grad():
        dx = ph(0.0, x, u)
        j, r = ph.structure(x)
        g = ph.input_gain(x, 1)
    x_ = x.clone().requires_grad_(True)
    (dh,) = torch.autograd.grad(ph.hamiltonian(x_).sum(), x_)
    rate = (dh * dx).sum(1)
    dissipated = (dh[:, None, :] @ r @ dh[:, :, None])[:, 0, 0]
    supplied = (dh[:, None, :] @ g @ u[:, :, None])[:, 0, 0]
    torch.testing.assert_close(rate, -dissipated + supplied)
    assert bool((dissipated >= 0).all())
    torch.testing.assert_close(j, -j.transpose(1, 2), rtol=0, atol=0)
    # Without input and dissipation the energy is conserved (rate 0).
    conservative = PortHamiltonian(ph.net, interconnection=ph.interconnection)
    with torch.no_grad():
        dx0 = conservative(0.0, x)
    assert float((dh * dx0).sum(1).abs().max()) < 1e-13


def test_port_hamiltonian_gradients_match_finite_differences():
    ph = _port(n=2)
    names = [n for n, _ in ph.named_parameters()]
    x = torch.randn(2, 2, dtype=F64, requires_grad=True)
    u = torch.randn(2, 1, dtype=F64)

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(ph, dict(zip(names, ps))):
            return ph(0.0, x, u)

    assert gradcheck(f, (x, *(p.detach().requires_grad_(True) for p in ph.parameters())))


def test_port_hamiltonian_bad_inputs():
    with pytest.raises(ValueError, match=r"canonical interconnection needs an even state"):
        PortHamiltonian(_net(3, 1))(0.0, torch.randn(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"`dissipation` must return \(batch, n \* n\) = \(2, 4\)"):
        PortHamiltonian(_net(2, 1), dissipation=_net(2, 3))(0.0, torch.randn(2, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"an input `args` was given but the model has no"):
        PortHamiltonian(_net(2, 1))(0.0, torch.randn(2, 2, dtype=F64), torch.randn(2, 1))


# --------------------------------------------------------------------------- SymODEN


def test_symoden_energy_balance_and_hamiltonian_structure():
    # dq/dt = dH/dp = M^-1(q) p and dH/dt = qdot' g(q) u, whatever the networks.
    torch.manual_seed(0)
    sym = SymODEN(2, control_dim=1, hidden=8).to(F64)
    x, u = torch.randn(16, 4, dtype=F64), torch.randn(16, 1, dtype=F64)
    with torch.no_grad():
        dx = sym(0.0, x, u)
        minv = sym.inverse_mass(x[:, :2])
        g = sym.input_gain(x[:, :2])
    torch.testing.assert_close(dx[:, :2], (minv @ x[:, 2:, None])[..., 0])
    assert float(torch.linalg.eigvalsh(minv).min()) > 0
    x_ = x.clone().requires_grad_(True)
    (dh,) = torch.autograd.grad(sym.hamiltonian(x_).sum(), x_)
    supplied = (dx[:, None, :2] @ g @ u[:, :, None])[:, 0, 0]
    torch.testing.assert_close((dh * dx).sum(1), supplied)
    with torch.no_grad():
        assert float((dh * sym(0.0, x)).sum(1).abs().max()) < 1e-13  # no input: conserved


def test_symoden_gradients_match_finite_differences():
    torch.manual_seed(0)
    sym = SymODEN(2, control_dim=1, hidden=3, depth=1).to(F64)
    names = [n for n, _ in sym.named_parameters()]
    x = torch.randn(2, 4, dtype=F64, requires_grad=True)
    u = torch.randn(2, 1, dtype=F64, requires_grad=True)

    def f(x, u, *ps):
        with torch.nn.utils.stateless._reparametrize_module(sym, dict(zip(names, ps))):
            return sym(0.0, x, u)

    assert gradcheck(f, (x, u, *(p.detach().requires_grad_(True) for p in sym.parameters())))


def test_symoden_bad_inputs():
    with pytest.raises(ValueError, match=r"SymODEN: `control_dim` must be an int >= 1, got 0"):
        SymODEN(1, 0)
    sym = SymODEN(1).to(F64)
    with pytest.raises(ValueError, match=r"SymODEN: the state must be a tensor \(batch, 2\)"):
        sym(0.0, torch.randn(3, 4, dtype=F64))
    with pytest.raises(
        ValueError, match=r"the input `args` must be a tensor \(batch, control_dim\)"
    ):
        sym(0.0, torch.randn(3, 2, dtype=F64), torch.randn(3, 2, dtype=F64))


# --------------------------------------------------------------------------- CHNN


def _rod(x):
    return (x**2).sum(0, keepdim=True) - 1.0  # a bob on a unit rod pinned at the origin


def test_chnn_on_a_cartesian_pendulum_reproduces_the_pendulum_equations():
    # V = g y, unit mass, |x| = 1: theta'' = -g sin(theta), with x = (sin, -cos) theta.
    g = 9.8
    chnn = CHNN(_rod, _Fn(lambda x: g * x[:, 1]), 2, learn_mass=False).to(F64)
    theta, omega = torch.randn(6, dtype=F64), torch.randn(6, dtype=F64)
    s, c = torch.sin(theta), torch.cos(theta)
    z = torch.stack([s, -c, omega * c, omega * s], 1)  # positions and momenta (unit mass)
    with torch.no_grad():
        dz = chnn(0.0, z)
    alpha = -g * s
    expected = torch.stack(
        [omega * c, omega * s, alpha * c - omega**2 * s, alpha * s + omega**2 * c], 1
    )
    torch.testing.assert_close(dz, expected)


@pytest.mark.slow  # a tight Dopri5 solve through per-sample torch.func Jacobians: ~6 s
def test_chnn_constraint_drift_stays_small_and_energy_is_conserved():
    torch.manual_seed(0)
    pot = _net(2, 1, h=8)
    chnn = CHNN(_rod, pot, 2).to(F64)
    theta, omega = torch.randn(4, dtype=F64), torch.randn(4, dtype=F64)
    z0 = torch.stack([torch.sin(theta), -torch.cos(theta), omega * torch.cos(theta),
                      omega * torch.sin(theta)], 1)  # fmt: skip
    with torch.no_grad():
        sol = tn.solve(tn.ODETerm(chnn), tn.Dopri5(), 0.0, 5.0, z0,
                       saveat=tn.SaveAt(ts=torch.linspace(0, 5, 26, dtype=F64)),
                       controller=tn.PIDController(rtol=1e-9, atol=1e-11))  # fmt: skip
        zs = sol.ys.reshape(-1, 4)
        drift = chnn.constraint_violation(zs).abs().max()
        e = chnn.hamiltonian(zs).reshape(26, 4)
    assert float(drift) < 1e-7, float(drift)
    assert float((e - e[0]).abs().max()) < 1e-7


def test_chnn_gradients_match_finite_differences():
    torch.manual_seed(0)
    chnn = CHNN(_rod, _net(2, 1, h=3), 2).to(F64)
    names = [n for n, _ in chnn.named_parameters()]
    z = torch.randn(2, 4, dtype=F64, requires_grad=True)

    def f(z, *ps):
        with torch.nn.utils.stateless._reparametrize_module(chnn, dict(zip(names, ps))):
            return chnn(0.0, z)

    assert gradcheck(f, (z, *(p.detach().requires_grad_(True) for p in chnn.parameters())))


def test_chnn_bad_inputs():
    with pytest.raises(ValueError, match=r"CHNN: `num_positions` must be an int >= 1, got 0"):
        CHNN(_rod, _net(2, 1), 0)
    with pytest.raises(ValueError, match=r"CHNN: the state must be a tensor \(batch, 4\)"):
        CHNN(_rod, _net(2, 1), 2)(0.0, torch.randn(3, 3))


# --------------------------------------------------------------------------- CLNN


def _pendulum_state(theta, omega):
    s, c = torch.sin(theta), torch.cos(theta)
    return torch.stack([s, -c, omega * c, omega * s], 1)  # on the unit rod, tangent velocity


def test_clnn_on_a_cartesian_pendulum_reproduces_the_pendulum_equations():
    # L = |xdot|^2 / 2 - g y, |x| = 1: theta'' = -g sin(theta), with x = (sin, -cos) theta.
    g = 9.8
    clnn = CLNN(_rod, _Fn(lambda x: g * x[:, 1]), 2, learn_mass=False).to(F64)
    theta, omega = torch.randn(6, dtype=F64), torch.randn(6, dtype=F64)
    s, c = torch.sin(theta), torch.cos(theta)
    with torch.no_grad():
        dz = clnn(0.0, _pendulum_state(theta, omega))
    alpha = -g * s
    expected = torch.stack(
        [omega * c, omega * s, alpha * c - omega**2 * s, alpha * s + omega**2 * c], 1
    )
    torch.testing.assert_close(dz, expected)


def test_clnn_with_masses_is_the_lagrangian_form_of_chnn():
    # Same potential and masses: CLNN's acceleration is CHNN's pdot / m at p = M xdot.
    torch.manual_seed(1)
    pot = _net(2, 1, h=8)
    chnn, clnn = CHNN(_rod, pot, 2).to(F64), CLNN(_rod, pot, 2).to(F64)
    with torch.no_grad():
        for m in (chnn, clnn):
            m.raw_mass.copy_(torch.tensor([0.3, 1.7], dtype=F64))
        minv = clnn.inverse_mass().to(F64)
        zv = _pendulum_state(torch.randn(5, dtype=F64), torch.randn(5, dtype=F64))
        zp = torch.cat([zv[:, :2], zv[:, 2:] / minv], 1)
        dv, dp = clnn(0.0, zv), chnn(0.0, zp)
        torch.testing.assert_close(dv[:, :2], dp[:, :2])
        torch.testing.assert_close(dv[:, 2:], dp[:, 2:] * minv)
        torch.testing.assert_close(clnn.energy(zv), chnn.hamiltonian(zp))


def test_clnn_constraint_drift_stays_small_and_energy_is_conserved():
    torch.manual_seed(0)
    clnn = CLNN(_rod, _net(2, 1, h=8), 2).to(F64)
    z0 = _pendulum_state(torch.randn(3, dtype=F64), torch.randn(3, dtype=F64))
    ts = torch.linspace(0, 2, 11, dtype=F64)
    with torch.no_grad():
        sol = tn.solve(tn.ODETerm(clnn), tn.Dopri5(), 0.0, 2.0, z0, saveat=tn.SaveAt(ts=ts),
                       controller=tn.PIDController(rtol=1e-9, atol=1e-11))  # fmt: skip
        zs = sol.ys.reshape(-1, 4)
        drift = clnn.constraint_violation(zs).abs().max()
        e = clnn.energy(zs).reshape(11, 3)
    assert float(drift) < 1e-7, float(drift)
    assert float((e - e[0]).abs().max()) < 1e-7


def test_clnn_gradients_match_finite_differences():
    torch.manual_seed(0)
    clnn = CLNN(_rod, _net(2, 1, h=3), 2).to(F64)
    names = [n for n, _ in clnn.named_parameters()]
    z = torch.randn(2, 4, dtype=F64, requires_grad=True)

    def f(z, *ps):
        with torch.nn.utils.stateless._reparametrize_module(clnn, dict(zip(names, ps))):
            return clnn(0.0, z)

    assert gradcheck(f, (z, *(p.detach().requires_grad_(True) for p in clnn.parameters())))


def test_clnn_bad_inputs():
    with pytest.raises(ValueError, match=r"CLNN: `num_positions` must be an int >= 1, got 0"):
        CLNN(_rod, _net(2, 1), 0)
    with pytest.raises(TypeError, match=r"CLNN: `constraints` must be callable phi\(x\)"):
        CLNN(3, _net(2, 1), 2)
    with pytest.raises(
        ValueError, match=r"CLNN: the state must be a tensor \(batch, 4\) holding \[x, xdot\]"
    ):
        CLNN(_rod, _net(2, 1), 2)(0.0, torch.randn(3, 3))


# --------------------------------------------------------------------------- SemiMarkovPolicy


def test_semi_markov_rollout_holds_each_action_until_the_next_decision_time():
    # x' = u with u = -x sampled and held: x_{k+1} = (1 - tau_k) x_k exactly, and the cost
    # l = u^2, constant on each interval, integrates to sum_k tau_k x_k^2.
    pol = SemiMarkovPolicy(_Fn(lambda x: -x))
    ts = torch.tensor([0.0, 0.1, 0.35, 0.4, 0.9], dtype=F64)
    x0 = torch.tensor([[1.0], [-2.0]], dtype=F64)
    xs, cost = pol.rollout(lambda t, x, u: u, x0, ts, lambda x, u: (u**2).sum(1), steps=3)
    taus = ts.diff()
    expected = [x0]
    for tau in taus:
        expected.append(expected[-1] * (1 - tau))
    expected_xs = torch.stack(expected)
    torch.testing.assert_close(xs, expected_xs)
    torch.testing.assert_close(cost, (taus[:, None] * expected_xs[:-1, :, 0] ** 2).sum(0))


def test_semi_markov_rollout_gradients_match_finite_differences():
    torch.manual_seed(0)
    pol = SemiMarkovPolicy(nn.Linear(2, 1).to(F64))
    ts = torch.tensor([0.0, 0.2, 0.5, 0.6], dtype=F64)
    x0 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    names = [n for n, _ in pol.named_parameters()]

    def f(x0, *ps):
        with torch.nn.utils.stateless._reparametrize_module(pol, dict(zip(names, ps))):
            xs, c = pol.rollout(forced_pendulum_dynamics, x0, ts, lambda x, u: (x**2).sum(1))
        return xs, c

    assert gradcheck(f, (x0, *(p.detach().requires_grad_(True) for p in pol.parameters())))


class _Bounded(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, x):
        return 3 * torch.tanh(self.net(x))


@pytest.mark.slow  # model fit + 80 policy steps through the model: ~6 s
def test_semi_markov_policy_trained_through_a_learned_model_improves_the_true_cost():
    # Du et al. 2020, simplest form: learn f_theta(x, u) of the damped forced pendulum from
    # random (x, u) samples, train the policy through the learned model's solves with random
    # irregular decision times, act on the true system at unseen decision times and states.
    torch.manual_seed(0)

    def true(t, x, u):
        return forced_pendulum_dynamics(t, x, u, damping=0.1)

    net = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 2))
    xs, us = torch.rand(1024, 2) * 4 - 2, torch.rand(1024, 1) * 6 - 3
    dx = true(0.0, xs, us)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(400):
        opt.zero_grad()
        ((net(torch.cat([xs, us], 1)) - dx) ** 2).mean().backward()
        opt.step()

    def model(t, x, u):
        return net(torch.cat([x, u], 1))

    def cost(x, u):
        return (x**2).sum(1) + 0.01 * (u**2).sum(1)

    g = torch.Generator().manual_seed(1)

    def times():  # 9 random decision times in (0, 3), then the horizon
        inner = torch.sort(torch.rand(9, generator=g) * 3).values
        return torch.cat([torch.zeros(1), inner, torch.tensor([3.0])])

    pol = SemiMarkovPolicy(_Bounded())
    x_eval, t_eval = torch.rand(64, 2, generator=g) * 2 - 1, times()
    with torch.no_grad():
        untrained = float(pol.rollout(true, x_eval, t_eval, cost, steps=2)[1].mean())
    opt = torch.optim.Adam(pol.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        x0 = torch.rand(64, 2, generator=g) * 2 - 1
        pol.rollout(model, x0, times(), cost, steps=2)[1].mean().backward()
        opt.step()
    with torch.no_grad():
        trained = float(pol.rollout(true, x_eval, t_eval, cost, steps=2)[1].mean())
    assert trained < 0.7 * untrained, (trained, untrained)  # measured: 1.93 against 3.83


def test_semi_markov_policy_bad_inputs():
    with pytest.raises(TypeError, match=r"SemiMarkovPolicy: `policy` must be a module, got"):
        SemiMarkovPolicy(3)
    pol = SemiMarkovPolicy(nn.Linear(2, 1))
    x0, ts = torch.randn(3, 2), torch.tensor([0.0, 0.5, 1.0])

    def plant(t, x, u):
        return x

    def cost(x, u):
        return (x**2).sum(1)

    with pytest.raises(ValueError, match=r"`decision_times` must be a 1-D increasing tensor"):
        pol.rollout(plant, x0, torch.tensor([0.0, 1.0, 0.5]), cost)
    with pytest.raises(ValueError, match=r"`x0` must be a tensor \(batch, d\)"):
        pol.rollout(plant, torch.randn(2), ts, cost)
    with pytest.raises(ValueError, match=r"`steps` must be an int >= 1, got 0"):
        pol.rollout(plant, x0, ts, cost, steps=0)
    with pytest.raises(TypeError, match=r"`plant` must be callable"):
        pol.rollout(None, x0, ts, cost)
    with pytest.raises(ValueError, match=r"`policy` must return \(batch, m\) with batch = 3"):
        SemiMarkovPolicy(_Fn(lambda x: x[0])).rollout(plant, x0, ts, cost)
