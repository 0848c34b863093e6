r"""1-D viscous Burgers' equation with Gaussian-random-field initial conditions: the Fourier
neural operator's Burgers benchmark (Li et al. 2021).

$$\partial_t u + \partial_x (u^2/2) = \nu\, \partial_{xx} u,\qquad x \in [0, 1)\ \text{periodic},
\qquad u(\cdot, 0) = u_0 \sim \mathcal{N}\big(0,\ 625(-\Delta + 25 I)^{-2}\big),$$

with $\nu = 0.1$; the operator to learn is $u_0 \mapsto u(\cdot, 1)$.

**Initial conditions.** The covariance is diagonal in the Fourier basis of $[0, 1)$:
$u_0 = \sum_{k \ge 1} \sqrt{2\lambda_k}\,(\xi_k \cos 2\pi k x + \eta_k \sin 2\pi k x)$ with
$\lambda_k = 625\,((2\pi k)^2 + 25)^{-2}$ and i.i.d. standard normal $\xi_k, \eta_k$, summed
up to the grid's Nyquist mode. The mean mode $k = 0$ (conserved by the equation) is set to
zero.

**Solver.** Pseudo-spectral in space ($n$ Fourier modes, products dealiased by the 2/3 rule)
with the fourth-order integrating-factor Runge-Kutta scheme (Lawson's IF-RK4): the stiff
diffusion $-\nu k^2$ is integrated exactly, the advection by classical RK4 with a fixed step
(``dt``, default $10^{-3}$). Float64 throughout; tested against exact Cole-Hopf solutions.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ._cache import cached

__all__ = ["burgers", "burgers_solve", "burgers_initial_condition"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def burgers_initial_condition(
    n_samples: int,
    resolution: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""``n_samples`` draws of $\mathcal{N}(0, 625(-\Delta + 25 I)^{-2})$ (mean mode zero) on the
    periodic grid $x_j = j / n$, shape ``(n_samples, resolution)``. ``generator``: a CPU
    ``torch.Generator`` (the draws do not depend on ``device``)."""
    _check_int("n_samples", n_samples, 1)
    _check_int("resolution", resolution, 4)
    k = torch.arange(1, (resolution - 1) // 2 + 1, dtype=torch.float64)
    lam = 625.0 * ((2 * math.pi * k) ** 2 + 25.0) ** -2
    xi = torch.randn(2, n_samples, len(k), generator=generator, dtype=torch.float64)
    coef = torch.zeros(n_samples, resolution // 2 + 1, dtype=torch.complex128)
    # u = (1/n) sum_k c_k e^{2 pi i k x}: a cosine/sine pair of amplitude a, b is n/2 (a - i b)
    coef[:, 1 : len(k) + 1] = (resolution / 2) * torch.sqrt(2 * lam) * torch.complex(xi[0], -xi[1])
    u0 = torch.fft.irfft(coef, n=resolution)
    return u0.to(device=device, dtype=dtype)


def burgers_solve(
    u0: torch.Tensor, t1: float = 1.0, nu: float = 0.1, *, dt: float = 1e-3
) -> torch.Tensor:
    r"""Solve viscous Burgers' equation on $[0, 1)$ (periodic) from ``u0`` (shape
    ``(..., n)``, the values at $x_j = j/n$) to time ``t1``; returns $u(\cdot, t_1)$ in ``u0``'s
    dtype and device (computed in float64).

    ``dt`` is the largest step (the steps are equal, ``ceil(t1 / dt)`` of them). The
    integrating factor removes the stiffness of the diffusion; the explicit advection is then
    stable at ``dt = 1e-3`` for the benchmark ($\nu = 0.1$, $|u_0| \lesssim 3$) at any
    resolution, because the factor damps the high modes where RK4 alone would be unstable
    (tested against ``dt = 1e-4`` and exact Cole-Hopf solutions). A non-finite result raises
    ``ValueError`` asking for a smaller ``dt``.
    """
    if not isinstance(u0, torch.Tensor) or not u0.is_floating_point():
        raise TypeError(f"`u0` must be a floating torch.Tensor, got {type(u0).__name__}.")
    if u0.ndim < 1 or u0.shape[-1] < 4:
        raise ValueError(f"`u0` must have shape (..., n) with n >= 4, got {tuple(u0.shape)}.")
    if not (t1 >= 0 and math.isfinite(t1)):
        raise ValueError(f"`t1` must be a finite time >= 0, got {t1!r}.")
    if not (nu > 0 and math.isfinite(nu)):
        raise ValueError(f"`nu` must be a positive viscosity, got {nu!r}.")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"`dt` must be a positive step, got {dt!r}.")
    u = u0.to(torch.float64)
    n = u.shape[-1]
    wav = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64, device=u.device)  # 0..n/2
    ik = 2j * math.pi * wav
    keep = (wav <= n / 3).to(torch.float64)  # the 2/3 rule
    steps = math.ceil(t1 / dt)
    if steps == 0:
        return u0.clone()
    h = t1 / steps
    e_half = torch.exp(-nu * (2 * math.pi * wav) ** 2 * (h / 2))
    e_full = e_half * e_half

    def nonlinear(c: torch.Tensor) -> torch.Tensor:
        v = torch.fft.irfft(c, n=n)
        return -ik * keep * torch.fft.rfft(0.5 * v * v)

    c = torch.fft.rfft(u)
    for _ in range(steps):
        a = nonlinear(c)
        b = nonlinear(e_half * (c + (h / 2) * a))
        cc = nonlinear(e_half * c + (h / 2) * b)
        d = nonlinear(e_full * c + h * e_half * cc)
        c = e_full * c + (h / 6) * (e_full * a + 2 * e_half * (b + cc) + d)
    out = torch.fft.irfft(c, n=n)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"burgers_solve: the solution is not finite at t1={t1} with dt={dt}: the explicit "
            "advection is unstable at this step; pass a smaller `dt`."
        )
    return out.to(u0.dtype)


def burgers(
    n_samples: int,
    resolution: int = 1024,
    *,
    nu: float = 0.1,
    t1: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The Burgers data set: ``(u0, u1)``, each ``(n_samples, resolution)``, with ``u0`` drawn
    from the Gaussian random field (seed ``seed``) and ``u1`` the solution at ``t1``, solved at
    ``resolution`` (subsample ``u[:, ::k]`` for coarser grids, as the benchmark does).

    With ``cache_dir`` the data are read from / written to
    ``cache_dir/burgers-n{n}-res{resolution}-nu{nu}-t{t1}-seed{seed}.pt``.
    """
    _check_int("n_samples", n_samples, 1)
    _check_int("resolution", resolution, 4)
    _check_int("seed", seed, 0)

    def make() -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        u0 = burgers_initial_condition(n_samples, resolution, generator=gen, device=device)
        return {"u0": u0.cpu(), "u1": burgers_solve(u0, t1, nu).cpu()}

    params = {"n": n_samples, "res": resolution, "nu": float(nu), "t": float(t1), "seed": seed}
    data = cached(cache_dir, "burgers", params, make)
    return data["u0"].to(device, dtype), data["u1"].to(device, dtype)
