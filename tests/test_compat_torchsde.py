"""torchnde.compat.torchsde: the same numbers as torchsde on the same Brownian increments, the
SDE protocol (f/g/h, f_and_g, names, noise and SDE types), logqp, adjoints and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde.compat import torchsde as tsde

torchsde = pytest.importorskip("torchsde")

B, D = 4, 3
TS = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)


class SDE(nn.Module):
    def __init__(self, noise_type="diagonal", sde_type="ito"):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        torch.manual_seed(0)
        self.lin = nn.Linear(D, D).double()
        self.s = nn.Parameter(torch.linspace(0.2, 0.5, D, dtype=torch.float64))

    def f(self, t, y):
        return torch.tanh(self.lin(y))

    def h(self, t, y):
        return -y

    def g(self, t, y):
        g = self.s * torch.cos(y)
        if self.noise_type == "scalar":
            return g[..., None]
        if self.noise_type == "general":
            return g[..., None] * torch.tensor([1.0, -0.5], dtype=torch.float64)
        return g


def _bm(noise_type):
    m = {"diagonal": D, "scalar": 1, "general": 2}[noise_type]
    return torchsde.BrownianInterval(0.0, 1.0, (B, m), dtype=torch.float64, entropy=1)


@pytest.mark.parametrize(
    "method, noise_type, sde_type",
    [
        ("euler", "diagonal", "ito"),
        ("euler", "general", "ito"),
        ("milstein", "diagonal", "ito"),
        ("milstein", "scalar", "ito"),
        ("milstein", "diagonal", "stratonovich"),
        ("midpoint", "diagonal", "stratonovich"),
        ("heun", "general", "stratonovich"),
        ("euler_heun", "diagonal", "stratonovich"),
        ("reversible_heun", "diagonal", "stratonovich"),
    ],
)
def test_same_solution_as_torchsde_on_the_same_increments(method, noise_type, sde_type):
    sde = SDE(noise_type, sde_type)
    y0 = torch.full((B, D), 0.3, dtype=torch.float64)
    bm = _bm(noise_type)
    with torch.no_grad():
        # dt a power of two: both libraries then query the Brownian motion at the same times to
        # the bit (with dt=0.05 their step ends differ in the last bit, W by ~sqrt(1e-17)).
        ref = torchsde.sdeint(sde, y0, TS, bm=bm, method=method, dt=2.0**-4)
        ours = tsde.sdeint(sde, y0, TS, bm=bm, method=method, dt=2.0**-4)
    assert ours.shape == ref.shape == (5, B, D)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_logqp_and_f_and_g_and_names():
    class Renamed(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def drift_and_diffusion(self, t, y):
            return -y + 0.7, 0.5 * torch.ones_like(y)

        def prior(self, t, y):
            return -y

    y0 = torch.zeros(B, D, dtype=torch.float64)
    names = {"drift_and_diffusion": "drift_and_diffusion", "prior_drift": "prior"}
    ys, log_ratio = tsde.sdeint(Renamed(), y0, TS, dt=0.05, logqp=True, names=names)
    assert ys.shape == (5, B, D) and log_ratio.shape == (4, B)
    # u = 0.7 / 0.5 per component: KL over each interval of 0.25 is ½ D u² · 0.25
    torch.testing.assert_close(log_ratio, torch.full((4, B), 0.5 * D * 1.4**2 * 0.25,
                                                     dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize(
    "method, adjoint_method", [("midpoint", None), ("reversible_heun", "adjoint_reversible_heun")]
)
def test_sdeint_adjoint_gradients(method, adjoint_method):
    sde = SDE("diagonal", "stratonovich")
    y0 = torch.full((B, D), 0.3, dtype=torch.float64)
    bm = tsde.BrownianInterval(0.0, 1.0, (B, D), dtype=torch.float64, entropy=3)
    ys = tsde.sdeint(sde, y0, TS, bm=bm, method=method, dt=2.0**-7)
    direct = torch.autograd.grad(ys[-1].square().sum(), list(sde.parameters()))
    ys = tsde.sdeint_adjoint(
        sde, y0, TS, bm=bm, method=method, adjoint_method=adjoint_method, dt=2.0**-7
    )
    adj = torch.autograd.grad(ys[-1].square().sum(), list(sde.parameters()))
    tol = 1e-10 if adjoint_method else 2e-2
    for a, d in zip(adj, direct):
        assert float((a - d).norm() / d.norm()) < tol


def test_brownian_constructors():
    w0 = torch.zeros(B, D, dtype=torch.float64)
    for bm in (
        tsde.BrownianInterval(0.0, 1.0, size=(B, D), dtype=torch.float64, dt=0.01),
        tsde.BrownianTree(0.0, w0, t1=1.0, tol=1e-5),
        tsde.BrownianPath(0.0, w0, t1=1.0),
    ):
        assert isinstance(bm, tn.AbstractBrownianPath)
        assert bm(0.2, 0.7).shape == (B, D)
        torch.testing.assert_close(bm(0.0, 0.5) + bm(0.5, 1.0), bm(0.0, 1.0))


def test_errors():
    y0 = torch.zeros(B, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="`method` must be one of"):
        tsde.sdeint(SDE(), y0, TS, method="rk4")
    with pytest.raises(ValueError, match="requires one of \\('davie', 'foster'\\)"):
        bm = tsde.BrownianInterval(0.0, 1.0, (B, D), levy_area_approximation="space-time")
        tsde.sdeint(SDE("diagonal", "stratonovich"), y0, TS, bm=bm, method="log_ode")
    with pytest.raises(ValueError, match="SDE is of type stratonovich but solver"):
        tsde.sdeint(SDE("diagonal", "stratonovich"), y0, TS, method="euler")
    with pytest.raises(ValueError, match="sde.noise_type"):
        tsde.sdeint(SDE("diag"), y0, TS)
    with pytest.raises(AttributeError, match="needs the prior drift"):  # as torchsde

        class NoPrior(SDE):
            h = None

        tsde.sdeint(NoPrior(), y0, TS, logqp=True)

    class GProdOnly(nn.Module):
        noise_type, sde_type = "general", "ito"

        def f_and_g_prod(self, t, y, v):
            return -y, y * v.sum(-1, keepdim=True)

    with pytest.raises(NotImplementedError, match="f_and_g_prod"):
        tsde.sdeint(GProdOnly(), y0, TS)

    class NoDiffusion(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -y

    with pytest.raises(ValueError, match="must define `f` and `g`"):
        tsde.sdeint(NoDiffusion(), y0, TS)
    with pytest.raises(NotImplementedError, match="extra"):
        tsde.sdeint(SDE(), y0, TS, extra=True)


# --- torchsde's contract, case by case: the same outcome (error type or output shapes, and
# the adaptive Euler warning) as torchsde on the matrix of upstream test_sdeint.py's
# test_sdeint_run_shape_method (its problems.py is not in the sdist; these SDEs stand in).
M = 2


class _Small(nn.Module):
    def __init__(self, noise_type, sde_type):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.a = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def f(self, t, y):
        return -self.a * y

    def h(self, t, y):
        return -y

    def g(self, t, y):
        s = 0.2 * torch.sin(y) + 0.1
        if self.noise_type == "diagonal":
            return s
        if self.noise_type == "scalar":
            return s[..., None]
        if self.noise_type == "additive":
            return torch.full((y.shape[0], D, M), 0.1, dtype=y.dtype)
        return s[..., None] * torch.tensor([1.0, -0.5], dtype=y.dtype)


def _outcome(lib, noise, sde_type, method, levy, adaptive, logqp):
    import warnings

    options = {}
    if method == "milstein_grad_free":
        method, options = "milstein", {"grad_free": True}
    y0 = torch.ones(B, D, dtype=torch.float64)
    ts = torch.linspace(0.0, 0.3, 5, dtype=torch.float64)
    bm = None
    if levy is not None:
        m = {"scalar": 1, "diagonal": D + logqp}.get(noise, M)
        bm = lib.BrownianInterval(
            0.0, 0.3, (B, m), dtype=torch.float64, levy_area_approximation=levy
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                out = lib.sdeint(
                    _Small(noise, sde_type), y0, ts, bm, method=method, dt=0.05,
                    adaptive=adaptive, logqp=logqp, options=options,
                )  # fmt: skip
        except (ValueError, NotImplementedError) as e:
            return type(e).__name__
    warned = any("Euler--Maruyama" in str(w.message) for w in caught)
    shapes = [tuple(o.shape) for o in out] if isinstance(out, tuple) else tuple(out.shape)
    return shapes, warned


@pytest.mark.slow  # every method x option of both libraries: about 15 s
@pytest.mark.parametrize("noise", ["diagonal", "scalar", "additive", "general"])
@pytest.mark.parametrize("sde_type", ["ito", "stratonovich"])
def test_contract_matches_torchsde(noise, sde_type):
    methods = ["blah", "euler", "milstein", "milstein_grad_free", "srk", "euler_heun", "heun"]
    methods += ["midpoint", "reversible_heun", "log_ode"]
    for method in methods:
        for levy, adaptive, logqp in [
            (None, False, False), (None, False, True), ("none", False, True),
            ("space-time", False, False), ("foster", True, False), (None, True, True),
        ]:  # fmt: skip
            ours = _outcome(tsde, noise, sde_type, method, levy, adaptive, logqp)
            theirs = _outcome(torchsde, noise, sde_type, method, levy, adaptive, logqp)
            assert ours == theirs, (method, levy, adaptive, logqp)


def test_brownian_conditioning_and_offsets():
    """Given end values pin the path exactly (Brownian-bridge transform), sub-intervals still
    add up, and BrownianTree / BrownianPath point values start at w0, as in torchsde."""
    W = torch.randn(B, D, dtype=torch.float64)
    H = torch.randn(B, D, dtype=torch.float64)
    bm = tsde.BrownianInterval(0.0, 2.0, W=W, H=H, levy_area_approximation="space-time")
    W01, U01 = bm(0.0, 2.0, return_U=True)
    torch.testing.assert_close(W01, W)
    torch.testing.assert_close(U01, 2.0 * (H + 0.5 * W))  # U = h (H + W / 2)
    (Wa, Ua), (Wb, Ub) = bm(0.0, 0.7, return_U=True), bm(0.7, 2.0, return_U=True)
    torch.testing.assert_close(Wa + Wb, W)
    torch.testing.assert_close(Ua + Ub + (2.0 - 0.7) * Wa, U01)  # U is additive this way
    w0 = torch.randn(B, D, dtype=torch.float64)
    w1 = torch.randn(B, D, dtype=torch.float64)
    tree = tsde.BrownianTree(0.0, w0, t1=1.0, w1=w1, entropy=3)
    torch.testing.assert_close(tree(0.0), w0)
    torch.testing.assert_close(tree(1.0), w1)
    path = tsde.BrownianPath(0.0, w0)
    torch.testing.assert_close(path(0.5), w0 + path(0.0, 0.5))
    with pytest.raises(RuntimeError, match="must respect ta <= tb"):
        bm(0.5, 0.2)


def test_unsupported_options_raise():
    y0 = torch.zeros(B, D, dtype=torch.float64)
    sde = SDE()
    with pytest.raises(NotImplementedError, match="dt_min"):
        tsde.sdeint(sde, y0, TS, dt_min=1e-3)
    with pytest.raises(NotImplementedError, match="adjoint_adaptive"):
        tsde.sdeint_adjoint(sde, y0, TS, adjoint_adaptive=True)
    with pytest.raises(NotImplementedError, match="extra"):
        tsde.sdeint(sde, y0, TS, extra=True)
    rev = tsde.ReverseBrownian(tsde.BrownianInterval(0.0, 1.0, (B, D), dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="ReverseBrownian"):
        tsde.sdeint(sde, y0, TS, bm=rev)


@pytest.mark.parametrize("noise_type", ["diagonal", "general", "scalar"])
def test_logqp_and_gradients_match_torchsde(noise_type):
    """logqp (torchsde's augmented state: d + 1 Brownian channels for diagonal noise) and the
    backprop gradients agree with torchsde's on the same increments."""
    sde = SDE(noise_type, "ito")
    m = {"diagonal": D + 1, "scalar": 1, "general": 2}[noise_type]
    bm = torchsde.BrownianInterval(0.0, 1.0, (B, m), dtype=torch.float64, entropy=5)
    y0 = torch.full((B, D), 0.3, dtype=torch.float64)
    out = {}
    for name, lib in (("ref", torchsde), ("ours", tsde)):
        ys, log_ratio = lib.sdeint(sde, y0, TS, bm=bm, method="euler", dt=2.0**-4, logqp=True)
        loss = ys[-1].square().sum() + log_ratio.sum()
        out[name] = (ys, log_ratio, torch.autograd.grad(loss, list(sde.parameters())))
    torch.testing.assert_close(out["ours"][0], out["ref"][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["ours"][1], out["ref"][1], rtol=1e-10, atol=1e-10)
    for a, b in zip(out["ours"][2], out["ref"][2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_adaptive_midpoint():
    """method='midpoint': the step-doubling solver behind adaptive=True takes the same steps
    as the fixed-step Midpoint, and adaptive solves converge to the exact solution of
    dy = a y dt + b y o dW (Stratonovich): y = y0 exp(a t + b W_t)."""
    from torchnde._core.solvers.sde_midpoint import SDEMidpoint

    class Linear(nn.Module):
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return 0.5 * y

        def g(self, t, y):
            return 0.8 * y

    y0 = torch.ones(64, 1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    bm = tsde.BrownianInterval(0.0, 1.0, (64, 1), dtype=torch.float64, entropy=11)
    fixed = tsde.sdeint(Linear(), y0, ts, bm=bm, method="midpoint", dt=2.0**-6)
    ours = tn.sdeint(
        lambda t, y: 0.5 * y, lambda t, y: 0.8 * y, y0, ts, calculus="stratonovich",
        method=SDEMidpoint(), dt=2.0**-6, bm=bm,
    )  # fmt: skip
    torch.testing.assert_close(ours, fixed, rtol=1e-12, atol=1e-12)
    exact = y0 * torch.exp(0.5 + 0.8 * bm(0.0, 1.0))
    errs = []
    for rtol in (1e-2, 1e-4):
        ys = tsde.sdeint(Linear(), y0, ts, bm=bm, method="midpoint", dt=0.1, adaptive=True,
                         rtol=rtol, atol=rtol)  # fmt: skip
        errs.append(float((ys[-1] - exact).abs().mean()))
    # 100x tighter tolerances: over 10x smaller error (strong order 0.5-1 in the step)
    assert errs[1] < 0.1 * errs[0], errs


class _Counted(SDE):
    def __init__(self, noise_type, sde_type):
        super().__init__(noise_type, sde_type)
        self.num_f = 0

    def f(self, t, y):
        self.num_f += 1
        return super().f(t, y)


OFF_GRID = torch.linspace(0.0, 1.0, 7, dtype=torch.float64)  # 1/6, 2/6, ...: between steps


@pytest.mark.parametrize(
    "method, noise_type, sde_type",
    [
        ("euler", "diagonal", "ito"),
        ("milstein", "diagonal", "ito"),
        ("srk", "diagonal", "ito"),
        ("midpoint", "diagonal", "stratonovich"),
        ("heun", "general", "stratonovich"),
        ("euler_heun", "diagonal", "stratonovich"),
        ("reversible_heun", "diagonal", "stratonovich"),
        ("log_ode", "diagonal", "stratonovich"),
        ("log_ode", "general", "stratonovich"),
    ],
)
def test_same_steps_and_numbers_as_torchsde_with_output_times_between_steps(
    method, noise_type, sde_type
):
    # torchsde steps on t0 + k·dt and interpolates the outputs linearly between the step
    # states; the same Brownian motion (torchsde's own, with the Lévy area the method needs)
    # must give the same numbers, and the same number of drift evaluations.
    m = {"diagonal": D, "general": 2}[noise_type]
    levy = {"srk": "space-time", "log_ode": "foster"}.get(method, "none")
    bm = torchsde.BrownianInterval(
        0.0, 1.0, (B, m), dtype=torch.float64, entropy=2, levy_area_approximation=levy
    )
    y0 = torch.full((B, D), 0.3, dtype=torch.float64)
    theirs, ours = _Counted(noise_type, sde_type), _Counted(noise_type, sde_type)
    with torch.no_grad():
        ref = torchsde.sdeint(theirs, y0, OFF_GRID, bm=bm, method=method, dt=2.0**-5)
        got = tsde.sdeint(ours, y0, OFF_GRID, bm=bm, method=method, dt=2.0**-5)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    if method == "srk":
        return  # torchsde's SRK tableau has other stages than SRI2: counts differ per step
    # The same steps: torchsde evaluates the drift once more, to check its shape; torchnde's
    # Runge–Kutta midpoint and Heun methods once more, at t0 (the first stage of the first
    # step; both libraries' reversible Heun evaluate there for its initial state).
    extra = {"heun": 1, "midpoint": 1}.get(method, 0)
    assert ours.num_f == theirs.num_f - 1 + extra


def test_srk_accepts_torchsde_own_space_time_interval():
    bm = torchsde.BrownianInterval(
        0.0, 1.0, (B, D), dtype=torch.float64, entropy=3, levy_area_approximation="space-time"
    )
    y0 = torch.full((B, D), 0.3, dtype=torch.float64)
    with torch.no_grad():
        ref = torchsde.sdeint(SDE(), y0, TS, bm=bm, method="srk", dt=2.0**-4)
        got = tsde.sdeint(SDE(), y0, TS, bm=bm, method="srk", dt=2.0**-4)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_adaptive_euler_warns_before_the_method_check_as_torchsde():
    y0 = torch.zeros(B, D, dtype=torch.float64)
    with pytest.warns(UserWarning, match="Euler--Maruyama"):
        with pytest.raises(ValueError, match="SDE is of type stratonovich but solver"):
            tsde.sdeint(SDE("diagonal", "stratonovich"), y0, TS, method="euler", adaptive=True)


def test_logqp_evaluates_the_diffusion_as_often_as_torchsde():
    class CountedG(SDE):
        num_g = 0

        def g(self, t, y):
            self.num_g += 1
            return super().g(t, y)

    bm = torchsde.BrownianInterval(0.0, 1.0, (B, D + 1), dtype=torch.float64, entropy=1)
    y0 = torch.full((B, D), 0.3, dtype=torch.float64)
    theirs, ours = CountedG(), CountedG()
    with torch.no_grad():
        torchsde.sdeint(theirs, y0, TS, bm=bm, method="euler", dt=2.0**-4, logqp=True)
        tsde.sdeint(ours, y0, TS, bm=bm, method="euler", dt=2.0**-4, logqp=True)
    # one per step (16) plus the contract check's; torchsde checks with a few more
    assert ours.num_g == 16 + 1 <= theirs.num_g


def test_brownian_interval_nan_query_is_a_value_error():
    bm = tsde.BrownianInterval(0.0, 1.0, (B, D))
    with pytest.raises(ValueError, match=r"`tb`=nan is not finite.*\[0.0, 1.0\]"):
        bm(float("nan"))


def test_brownian_without_entropy_leaves_torch_global_stream_alone() -> None:
    # torchsde draws a missing entropy from NumPy: a script seeded with torch.manual_seed
    # (sde_gan.py) initialises its models identically whichever library makes its Brownian
    # motions; drawing the seed from torch's generator shifted every later torch.randn.
    import numpy as np

    for make in (
        lambda: tsde.BrownianInterval(0.0, 1.0, size=(2, 3)),
        lambda: tsde.BrownianTree(0.0, torch.zeros(2, 3)),
    ):
        torch.manual_seed(0)
        expected = torch.randn(4)
        torch.manual_seed(0)
        np.random.seed(1)  # noqa: NPY002
        first = make()
        assert torch.equal(torch.randn(4), expected)
        np.random.seed(1)  # noqa: NPY002
        assert torch.equal(first(0.0, 0.5), make()(0.0, 0.5))  # seeded from NumPy


@pytest.mark.parametrize(
    "adjoint, noise_type, sde_type, method",
    [
        (False, "diagonal", "ito", None),
        (False, "scalar", "ito", "srk"),
        (False, "general", "stratonovich", "reversible_heun"),
        (True, "general", "stratonovich", "reversible_heun"),
        (True, "diagonal", "stratonovich", "midpoint"),
    ],
)
def test_default_brownian_motion_draws_the_random_streams_as_torchsde(
    adjoint, noise_type, sde_type, method
) -> None:
    # With bm=None torchsde's sdeint draws the Brownian entropy from NumPy's global generator
    # (one randint) and leaves torch's global stream alone. torchnde's default drew a seed
    # from torch's stream, so sde_gan.py (torch.manual_seed(0), get_data's sdeint, then the
    # models) initialised different models: a step-0 loss of -4.87 instead of -1.21.
    import numpy as np

    sde = SDE(noise_type, sde_type)
    y0 = torch.full((B, D), 0.1, dtype=torch.float64)
    kwargs = {"method": method, "dt": 0.125}
    if adjoint and method == "reversible_heun":
        kwargs["adjoint_method"] = "adjoint_reversible_heun"
    streams = []
    for lib in (torchsde, tsde):
        torch.manual_seed(0)
        np.random.seed(1)  # noqa: NPY002
        solve = lib.sdeint_adjoint if adjoint else lib.sdeint
        ys = solve(sde, y0.clone().requires_grad_(adjoint), TS, **kwargs)
        if adjoint:
            ys.sum().backward()
        streams.append((torch.randn(4), np.random.randint(0, 2**31 - 1)))  # noqa: NPY002
    torch.testing.assert_close(streams[1][0], streams[0][0], rtol=0, atol=0)
    assert streams[1][1] == streams[0][1]
