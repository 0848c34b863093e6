"""PDE-Net: moment-constrained filters are exact on polynomials to their order, the SymNet's
expansion is the network, the δt-blocks run through torchnde.solve."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.discovery import MomentFilter, PDENet, SymNet, moment_matrix
from torchnde.experiments.pde_net import COEFFICIENTS, convection_diffusion, random_initial_values

D = torch.float64


def _grid(n: int, hx: float, hy: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=D) * hx - 0.7
    y = torch.arange(n, dtype=D) * hy + 0.3
    return torch.meshgrid(x, y, indexing="ij")


def _monomials(degree: int) -> list[tuple[int, int]]:
    return [(i, d - i) for d in range(degree + 1) for i in range(d + 1)]


def _d(i: int, j: int, a: int, b: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d^a/dx^a d^b/dy^b of x^i y^j."""
    if a > i or b > j:
        return torch.zeros_like(x)
    c = math.perm(i, a) * math.perm(j, b)
    return c * x ** (i - a) * y ** (j - b)


@pytest.mark.parametrize(
    ("alpha", "beta", "order", "size"),
    [(1, 0, 2, 3), (0, 1, 4, 5), (2, 0, 2, 5), (1, 1, 2, 5), (0, 2, 3, 5), (1, 1, 3, 7)],
)
def test_filters_are_exact_on_polynomials_to_their_order_whatever_the_free_moments(
    alpha, beta, order, size
):
    hx, hy = 0.1, 0.13
    f = MomentFilter(alpha, beta, kernel_size=size, order=order, dx=hx, dy=hy)
    torch.manual_seed(0)
    with torch.no_grad():
        f.free_moments.normal_()
    x, y = _grid(size + 6, hx, hy)
    p = size // 2
    inner = (slice(p, -p), slice(p, -p))
    exact_degree = alpha + beta + order - 1
    for i, j in _monomials(exact_degree):
        got = f(x**i * y**j, padding="valid")
        want = _d(i, j, alpha, beta, x, y)[inner]
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-8)
    # One degree more is not exact (its moments are free): the order is sharp.
    worst = max(
        float(
            (f(x**i * y**j, padding="valid") - _d(i, j, alpha, beta, x, y)[inner])
            .abs()
            .max()
            .detach()
        )
        for i, j in _monomials(exact_degree + 1)
    )
    assert worst > 1e-4


def test_the_moment_matrix_has_the_fixed_entries():
    f = MomentFilter(1, 1, kernel_size=5, order=2, dx=0.2)
    with torch.no_grad():
        f.free_moments.normal_()
    m = moment_matrix(f.kernel() * 0.2 * 0.2)
    want = torch.zeros(5, 5, dtype=D)
    want[1, 1] = 1.0
    fixed = f.fixed_mask
    torch.testing.assert_close(m[fixed], want[fixed], atol=1e-10, rtol=0)
    torch.testing.assert_close(m[~fixed], f.free_moments[~fixed])


def test_periodic_filters_converge_at_least_at_their_order():
    # Zero free moments cancel more Taylor terms than required: 5 points in x give order 4.
    errs = []
    for n in (16, 32):
        h = 2 * math.pi / n
        x, y = _grid(n, h, h)
        x, y = x + 0.7, y - 0.3
        f = MomentFilter(2, 0, kernel_size=5, order=2, dx=h)
        errs.append(
            float((f(torch.sin(x) * torch.cos(y)) + torch.sin(x) * torch.cos(y)).abs().max())
        )
    assert math.log2(errs[0] / errs[1]) > 2 - 0.1, errs


def test_filter_gradients_match_finite_differences():
    f = MomentFilter(1, 0, kernel_size=3, order=1, dx=0.5)
    u = torch.randn(2, 5, 5, dtype=D)

    def fn(free):
        mask = f.fixed_mask
        moments = torch.where(mask, f.fixed_moments, free)
        kernel = f.v_inv @ moments @ f.v_inv.T / 0.5
        return torch.nn.functional.conv2d(u[:, None], kernel[None, None])

    free = torch.randn(3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (free,))
    # and the module's own graph: its gradient is the same map's
    with torch.no_grad():
        f.free_moments.copy_(free)
    out = f(u, padding="valid").sum()
    out.backward()
    g = torch.autograd.grad(fn(free).sum(), free)[0]
    torch.testing.assert_close(f.free_moments.grad, g)


def test_symnet_expression_is_the_network():
    torch.manual_seed(1)
    net = SymNet(3, num_layers=2, init_scale=0.7)
    poly = net.expression(["a", "b", "c"])
    z = torch.randn(20, 3, dtype=D)

    def evaluate(row):
        env = dict(zip("abc", row.tolist()))
        return sum(c * (1.0 if m == "1" else eval(m, {}, env)) for m, c in poly.items())

    want = torch.tensor([evaluate(r) for r in z], dtype=D)
    torch.testing.assert_close(net(z), want, rtol=1e-9, atol=1e-10)
    assert max(m.count("*") - 2 * m.count("**") for m in poly) <= 3  # degree <= 4


def test_pde_net_with_the_true_right_hand_side_follows_the_exact_solution():
    n = 32
    u0 = random_initial_values(2, n, torch.Generator().manual_seed(0))
    net = PDENet(dx=2 * math.pi / n, kernel_size=7, order=4, learnable_filters=False)
    names = net.feature_names()
    with torch.no_grad():
        for p in net.symnet.parameters():
            p.zero_()
        for k, v in COEFFICIENTS.items():
            net.symnet.out.weight[0, names.index(k)] = v
    assert net.expression() == pytest.approx(COEFFICIENTS)
    dt = 0.001
    ys = net.rollout(u0, dt, 50)
    truth = convection_diffusion(u0, torch.tensor([0.0, 50 * dt], dtype=D))
    assert ys.shape == (51, 2, n, n)
    rel = float(torch.linalg.norm(ys[-1] - truth[-1]) / torch.linalg.norm(truth[-1]))
    assert rel < 5e-3, rel  # Euler at dt = 1e-3 over 50 steps, 4th-order filters


def test_pde_net_bad_inputs():
    with pytest.raises(ValueError, match="`kernel_size` must be odd"):
        MomentFilter(1, 0, kernel_size=4)
    with pytest.raises(ValueError, match=r"`kernel_size` 3 is too small .* >= alpha \+ beta"):
        MomentFilter(2, 0, kernel_size=3, order=2)
    with pytest.raises(ValueError, match="`dx` must be a number > 0"):
        MomentFilter(1, 0, dx=0.0)
    with pytest.raises(ValueError, match="`padding` must be 'periodic' or 'valid'"):
        MomentFilter(1, 0)(torch.zeros(8, 8, dtype=D), padding="same")
    with pytest.raises(ValueError, match=r"other than \(0, 0\)"):
        PDENet([(0, 0)], dx=0.1)
    with pytest.raises(ValueError, match="`names` must give 2 names"):
        SymNet(2).expression(["a"])
