"""Jump diffusions: JumpTerm against closed forms.

Moments are checked within Monte-Carlo error bounds computed from the sample size (4 standard
errors; the standard error of a sample variance from the fourth cumulant), jump times against
the inverse of the integrated intensity, with the clocks the term documents (entry ``i`` of
Exp(1) draws from a generator seeded by ``(seed, k)``).
"""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
from torchnde._core.jumps import _seed_for

F64 = torch.float64


def per_sample(**kw) -> tn.PIDController:
    return tn.PIDController(rtol=1e-10, atol=1e-12, per_sample=True, **kw)


def normal_marks(mean: float, std: float):
    def mark(n, generator):
        return mean + std * torch.randn(n, generator=generator, dtype=F64)

    return mark


def check_moments(x: torch.Tensor, mean: float, var: float, kappa4: float) -> None:
    """Sample mean and variance of ``x`` against the exact ones, within 4 standard errors:
    Var(mean) = var / n, Var(s²) ≈ (κ4 + 2 var²) / n (κ4 the fourth cumulant)."""
    n = x.numel()
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt((kappa4 + 2 * var * var) / n)
    assert abs(float(x.mean()) - mean) < 4 * se_mean, (float(x.mean()), mean, se_mean)
    assert abs(float(x.var()) - var) < 4 * se_var, (float(x.var()), var, se_var)


def test_compound_poisson_mean_and_variance_match_the_closed_form():
    lam, T, m, s = 2.0, 1.5, 1.0, 0.5
    n = 2000
    term = tn.JumpTerm(lam, lambda t, y, args, mark: y + mark[:, None], mark=normal_marks(m, s),
                       seed=0)  # fmt: skip
    sol = tn.solve(tn.MultiTerm(term), tn.Tsit5(), 0.0, T, torch.zeros(n, 1, dtype=F64),
                   controller=per_sample())  # fmt: skip
    x = sol.ys[-1, :, 0]
    # cumulants of a compound Poisson sum: κ_j = λ T E[mark^j]
    m2, m4 = m * m + s * s, m**4 + 6 * m * m * s * s + 3 * s**4
    check_moments(x, lam * T * m, lam * T * m2, lam * T * m4)
    counts = sol.stats["num_jumps"].to(F64)
    check_moments(counts, lam * T, lam * T, lam * T)


@pytest.mark.slow
def test_merton_log_price_moments_match_the_closed_form():
    """d log S = (mu - sigma²/2) dt + sigma dW + J dN, J ~ N(m, delta²): Euler–Maruyama is exact
    in law for these constant coefficients."""
    mu, sigma, lam, m, delta, T = 0.05, 0.2, 3.0, -0.1, 0.15, 1.0
    n = 1000
    bm = tn.BrownianInterval(0.0, T, (n, 1), dtype=F64, seed=1)
    terms = tn.MultiTerm(
        tn.ODETerm(lambda t, y, args: torch.full_like(y, mu - 0.5 * sigma**2)),
        tn.ControlTerm(lambda t, y, args: torch.full_like(y, sigma), bm, noise="diagonal",
                       calculus="ito"),
        tn.JumpTerm(lam, lambda t, y, args, mark: y + mark[:, None], mark=normal_marks(m, delta),
                    seed=2),
    )  # fmt: skip
    sol = tn.solve(terms, tn.EulerMaruyama(), 0.0, T, torch.zeros(n, 1, dtype=F64), dt0=0.05,
                   controller=tn.ConstantStepSize(per_sample=True))  # fmt: skip
    x = sol.ys[-1, :, 0]
    j2 = m * m + delta * delta
    j4 = m**4 + 6 * m * m * delta**2 + 3 * delta**4
    mean = (mu - 0.5 * sigma**2) * T + lam * T * m
    var = sigma**2 * T + lam * T * j2
    check_moments(x, mean, var, lam * T * j4)  # the Gaussian part has no fourth cumulant


def test_jump_times_are_the_inverse_of_the_integrated_intensity_at_the_clocks():
    a, b, T, seed, n = 0.5, 2.0, 2.0, 7, 64
    term = tn.JumpTerm(lambda t, y, args: (a + b * t).expand(y.shape[0]),
                       lambda t, y, args, mark: y + 1, seed=seed)  # fmt: skip
    sol = tn.solve(tn.MultiTerm(term), tn.Tsit5(), 0.0, T, torch.zeros(n, 1, dtype=F64),
                   controller=per_sample())  # fmt: skip

    def big_lambda_inverse(u):
        return (-a + torch.sqrt(a * a + 2 * b * u)) / b

    ts = sol.event_ts  # (n, k), NaN padded
    k_max = ts.shape[1]
    assert k_max >= 3
    clocks = []
    for k in range(k_max + 1):
        gen = torch.Generator().manual_seed(_seed_for(seed, k))
        clocks.append(torch.empty(n, dtype=F64).exponential_(generator=gen))
    u = torch.zeros(n, dtype=F64)
    for k in range(k_max + 1):
        u = u + clocks[k]
        expect = big_lambda_inverse(u)
        jumped = expect <= T
        if k < k_max:
            got = ts[:, k]
            assert torch.equal(torch.isnan(got), ~jumped)
            torch.testing.assert_close(got[jumped], expect[jumped], rtol=0, atol=1e-10)
        else:
            assert not bool(jumped.any())
    counts = (~torch.isnan(ts)).sum(1)
    assert torch.equal(sol.stats["num_jumps"], counts)
    assert torch.equal(sol.ys[-1, :, 0], counts.to(F64))


def test_saved_states_count_the_jumps_before_each_save_time():
    ts = torch.linspace(0.0, 2.0, 9, dtype=F64)
    term = tn.JumpTerm(lambda t, y, args: 1.0 + 0.5 * y[:, 0], lambda t, y, args, mark: y + 1,
                       seed=4)  # fmt: skip
    sol = tn.solve(term, tn.Tsit5(), 0.0, 2.0, torch.zeros(32, 1, dtype=F64),
                   saveat=tn.SaveAt(ts=ts), controller=per_sample())  # fmt: skip
    assert sol.ys.shape == (9, 32, 1)
    before = (sol.event_ts[:, None, :] <= ts[None, :, None]).sum(-1)  # (batch, len(ts))
    assert torch.equal(sol.ys[:, :, 0], before.T.to(F64))


def test_every_located_jump_applies_its_reset_also_at_a_step_end():
    """From y0 = 0 the first adaptive step ends within rounding of a clock's crossing for
    some samples (Hairer's initial step is c0 / rate); the crossing was recorded, its reset
    skipped, and the sample never jumped again (the loop's bug, fixed)."""
    n = 300
    term = tn.JumpTerm(2.0, lambda t, y, args, mark: y + 1, seed=0)
    sol = tn.solve(tn.MultiTerm(term), tn.Tsit5(), 0.0, 1.0, torch.zeros(n, 1, dtype=F64),
                   controller=tn.PIDController(rtol=1e-8, atol=1e-10, per_sample=True))  # fmt: skip
    counts = (~torch.isnan(sol.event_ts)).sum(1)
    assert torch.equal(sol.ys[-1, :, 0], counts.to(F64))


def test_a_seed_reproduces_the_jumps_and_joint_stepping_draws_the_same():
    def run(seed, ctrl):
        term = tn.JumpTerm(lambda t, y, args: 1.0 + y[:, 0].abs(),
                           lambda t, y, args, mark: y + mark[:, None] - 0.5, seed=seed)  # fmt: skip
        terms = tn.MultiTerm(tn.ODETerm(lambda t, y, args: -y), term)
        return tn.solve(terms, tn.Tsit5(), 0.0, 1.0, torch.ones(16, 2, dtype=F64), controller=ctrl)

    a, b = run(3, per_sample()), run(3, per_sample())
    assert torch.equal(a.ys, b.ys) and torch.equal(a.stats["num_jumps"], b.stats["num_jumps"])
    assert not torch.equal(a.ys, run(4, per_sample()).ys)
    joint = run(3, tn.PIDController(rtol=1e-10, atol=1e-12))
    assert torch.equal(joint.stats["num_jumps"], a.stats["num_jumps"])
    torch.testing.assert_close(joint.ys, a.ys, rtol=1e-7, atol=1e-8)


def test_a_generator_seed_gives_new_jumps_each_solve_reproducibly():
    def run(gen):
        term = tn.JumpTerm(3.0, lambda t, y, args, mark: y + 1, seed=gen)
        out = []
        for _ in range(2):
            sol = tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.zeros(32, 1, dtype=F64),
                           controller=per_sample())  # fmt: skip
            out.append(sol.ys[-1])
        return out

    first, second = run(torch.Generator().manual_seed(5))
    again, _ = run(torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_the_first_jump_time_has_the_implicit_function_gradient():
    """Constant rate λ: T_1 = E_1 / λ, dT_1/dλ = -E_1 / λ²."""
    lam = torch.tensor(1.5, dtype=F64, requires_grad=True)
    term = tn.JumpTerm(lambda t, y, args: lam.expand(y.shape[0]), lambda t, y, args, mark: y,
                       seed=11)  # fmt: skip
    gen = torch.Generator().manual_seed(_seed_for(11, 0))
    e1 = torch.empty(4, dtype=F64).exponential_(generator=gen)
    T = float(e1.max()) / 1.5 + 1e-3  # every sample jumps at least once
    sol = tn.solve(term, tn.Tsit5(), 0.0, T, torch.zeros(4, 1, dtype=F64),
                   controller=per_sample())  # fmt: skip
    t1 = sol.event_ts[:, 0]
    torch.testing.assert_close(t1.detach(), e1 / 1.5, rtol=0, atol=1e-10)
    (grad,) = torch.autograd.grad(t1.sum(), lam)
    torch.testing.assert_close(grad, -(e1 / 1.5**2).sum(), rtol=1e-8, atol=1e-10)


def test_too_many_jumps_end_the_solve_with_a_status():
    term = tn.JumpTerm(100.0, lambda t, y, args, mark: y + 1, seed=0, max_jumps=5)
    sol = tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.zeros(3, 1, dtype=F64),
                   controller=per_sample(), throw=False)  # fmt: skip
    assert bool((sol.status == tn.Status.MAX_EVENTS_REACHED).all())
    assert torch.equal(sol.stats["num_jumps"], torch.full((3,), 5))


# --------------------------------------------------------------------------- bad input


def jump_id(t, y, args, mark):
    return y


def test_a_negative_constant_rate_is_refused():
    with pytest.raises(ValueError, match=r"JumpTerm: `rate` must be non-negative .* -0\.5"):
        tn.JumpTerm(-0.5, jump_id)


def test_a_negative_rate_function_is_refused_at_t0():
    term = tn.JumpTerm(lambda t, y, args: y[:, 0] - 1.0, jump_id)
    with pytest.raises(ValueError, match=r"`rate` at t0 must be non-negative"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.zeros(3, 1, dtype=F64))


def test_a_rate_with_one_value_per_element_is_refused():
    term = tn.JumpTerm(lambda t, y, args: y.abs(), jump_id)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(3,\).*got a tensor of "
                       r"shape \(3, 2\).*y\[:, 0\]"):  # fmt: skip
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.ones(3, 2, dtype=F64))


def test_a_jump_map_of_the_wrong_shape_is_refused():
    term = tn.JumpTerm(50.0, lambda t, y, args, mark: y[:, :1], seed=0)
    with pytest.raises(ValueError, match=r"`jump\(t, y, args, mark\)` must return .* shape of y "
                       r"\(3, 2\), got a tensor of shape \(3, 1\)"):  # fmt: skip
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.ones(3, 2, dtype=F64))


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"rate": "fast"}, TypeError, r"`rate` must be a number, a tensor or a callable"),
        ({"rate": torch.ones(2, 2)}, ValueError, r"shape \(\) or \(batch,\)"),
        ({"jump": 3}, TypeError, r"`jump` must be callable as jump\(t, y, args, mark\)"),
        ({"mark": 1.0}, TypeError, r"`mark` must be callable as mark\(num, generator\)"),
        ({"seed": 1.5}, TypeError, r"`seed` must be an int, a torch.Generator or None"),
        ({"max_jumps": -1}, ValueError, r"`max_jumps` must be an int >= 0"),
    ],
)
def test_bad_jump_term_arguments_are_refused(kwargs, err, match):
    full = {"rate": 1.0, "jump": jump_id, **kwargs}
    rate, jump = full.pop("rate"), full.pop("jump")
    with pytest.raises(err, match=match):
        tn.JumpTerm(rate, jump, **full)


def test_states_without_a_batch_dimension_or_tuples_are_refused():
    term = tn.JumpTerm(1.0, jump_id)
    with pytest.raises(ValueError, match=r"`y0` of shape \(batch, \*state\)"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.tensor(1.0, dtype=F64))
    with pytest.raises(NotImplementedError, match=r"tensor `y0`"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, (torch.ones(2, 1, dtype=F64),))


def test_two_jump_terms_are_refused():
    term = tn.JumpTerm(1.0, jump_id)
    with pytest.raises(NotImplementedError, match=r"has 2 JumpTerms; combine them"):
        tn.solve(tn.MultiTerm(term, term), tn.Tsit5(), 0.0, 1.0, torch.ones(2, 1, dtype=F64))


def test_bad_marks_are_refused():
    term = tn.JumpTerm(50.0, jump_id, mark=lambda n, g: torch.zeros(n + 1), seed=0)
    with pytest.raises(ValueError, match=r"leading dimension num=3"):
        tn.solve(term, tn.Tsit5(), 0.0, 1.0, torch.ones(3, 1, dtype=F64))
