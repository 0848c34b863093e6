"""One explicit Runge–Kutta step straight from a public ButcherTableau (exactly s evaluations:
no first-same-as-last or end-of-step evaluation, which the zoo's one-off steps would waste)."""

from __future__ import annotations

from typing import Any

import torch

import torchnde as tn

from ._config import describe

__all__ = ["rk_slope", "tableau_of"]


def tableau_of(owner: str, name: str, solver: Any) -> tn.ButcherTableau:
    """The tableau of a built-in explicit Runge–Kutta solver, or the tableau itself."""
    if isinstance(solver, tn.ButcherTableau):
        return solver
    if isinstance(solver, tn.AbstractRungeKutta) and "tableau" in vars(type(solver)):
        return type(solver).tableau
    raise TypeError(
        f"{owner}: `{name}` must be an explicit Runge-Kutta solver such as torchnde.Euler() / "
        f"RK4(), or a ButcherTableau (for ExplicitRungeKutta(tab), pass tab), got "
        f"{describe(solver)}."
    )


def rk_slope(
    f: Any, tab: tn.ButcherTableau, t: torch.Tensor, h: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    r"""$\sum_i b_i k_i$, the increment of one step of size ``h`` divided by ``h``; ``t``,
    ``h`` scalar or per sample ``(batch,)``."""
    hb = h if h.ndim == 0 else h.reshape(h.shape + (1,) * (x.ndim - h.ndim))
    ks: list[torch.Tensor] = [f(t, x)]
    for i, row in enumerate(tab.a, start=1):
        yi = x
        for aij, kj in zip(row, ks):
            if aij != 0:
                yi = yi + (hb * aij) * kj
        ks.append(f(t + tab.c[i] * h, yi))
    out = tab.b[0] * ks[0]
    for bi, ki in zip(tab.b[1:], ks[1:]):
        if bi != 0:
            out = out + bi * ki
    return out
