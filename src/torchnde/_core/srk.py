r"""The stochastic Runge–Kutta engine: Rößler's SRA and SRI families as validated tableaux
plus one step.

A method of $s$ stages has drift stages $H^{(0)}_i$ and diffusion stages $H^{(1)}_i$,

$$ \begin{aligned}
   H^{(0)}_i &= y_n + \sum_{j<i} A^{(0)}_{ij} f_j h + \sum_{j<i} B^{(0)}_{ij} g_j
      \frac{I_{(1,0)}}{h}, &
   H^{(1)}_i &= y_n + \sum_{j<i} A^{(1)}_{ij} f_j h + \sum_{j<i} B^{(1)}_{ij} g_j \sqrt h,
   \end{aligned} $$

with $f_j = f(t_n + c^{(0)}_j h, H^{(0)}_j)$ and $g_j = g(t_n + c^{(1)}_j h, H^{(1)}_j)$,
combined as

$$ y_{n+1} = y_n + \sum_i \alpha_i f_i h + \sum_i g_i \Big(\beta^{(1)}_i I_{(1)}
   + \beta^{(2)}_i \frac{I_{(1,1)}}{\sqrt h} + \beta^{(3)}_i \frac{I_{(1,0)}}{h}
   + \beta^{(4)}_i \frac{I_{(1,1,1)}}{h}\Big), $$

$I_{(1)} = \Delta W$, $I_{(1,1)} = (\Delta W^2 - h)/2$, $I_{(1,1,1)} = (\Delta W^3 -
3h\Delta W)/6$ and $I_{(1,0)} = h(\Delta W/2 + H)$ from the space-time Lévy area $H$. This is
Rößler's SRI form (diagonal and scalar noise, Rößler 2010, §5); the SRA form for additive
noise (§6) is the special case $A^{(1)} = B^{(1)} = 0$ (the diffusion does not depend on the
state), $\beta^{(2)} = \beta^{(4)} = 0$, with SRA's $\beta^{(2)}$ in the place of
$\beta^{(3)}$. A stage's drift or diffusion is evaluated only when a weight or a later stage
reads it, so an SRA method of two stages costs two of each and SRI2 three drift and four
diffusion evaluations.

Reference:
    A. Rößler, "Runge–Kutta methods for the strong approximation of solutions of stochastic
    differential equations", SIAM J. Numer. Anal. 48 (2010) 922–952.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .sde import AbstractSDESolver
from .terms import ControlTerm, ODETerm, broadcast_time

__all__ = ["AbstractSRK", "SRKTableau"]

Rows = tuple[tuple[float, ...], ...]


def _vector(name: str, v: Sequence[float], s: int) -> tuple[float, ...]:
    out = tuple(float(x) for x in v)
    if len(out) != s:
        raise ValueError(f"SRKTableau: `{name}` must have {s} entries (stages), got {len(out)}.")
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"SRKTableau: `{name}` must be finite, got {out}.")
    return out


def _lower(name: str, rows: Sequence[Sequence[float]] | None, s: int) -> Rows:
    """A strictly lower-triangular stage matrix as rows of lengths 0, 1, ..., s-1 (``None``:
    all zero)."""
    if rows is None:
        return tuple((0.0,) * i for i in range(s))
    out = tuple(tuple(float(x) for x in r) for r in rows)
    if len(out) != s or any(len(r) != i for i, r in enumerate(out)):
        raise ValueError(
            f"SRKTableau: `{name}` must be strictly lower triangular, rows of lengths 0..{s - 1}"
            f" (one per stage), got row lengths {[len(r) for r in out]}."
        )
    if not all(math.isfinite(x) for r in out for x in r):
        raise ValueError(f"SRKTableau: `{name}` must be finite, got {out}.")
    return out


@dataclass(frozen=True)
class SRKTableau:
    """The coefficients of a stochastic Runge–Kutta method in Rößler's SRI form (see the
    module docstring); matrices as strictly lower-triangular rows (row ``i`` has ``i``
    entries), ``None`` for a zero matrix or weight vector.

    Checked on construction: shapes, finiteness, and the consistency conditions every
    convergent method satisfies (Rößler 2010): $\\sum_i \\alpha_i = 1$,
    $\\sum_i \\beta^{(1)}_i = 1$, $\\sum_i \\beta^{(k)}_i = 0$ for $k = 2, 3, 4$.
    """

    c0: Sequence[float]
    c1: Sequence[float]
    alpha: Sequence[float]
    beta1: Sequence[float]
    # Given as sequences or None; stored as tuples (None as zeros) by __post_init__.
    a0: Any = None
    b0: Any = None
    a1: Any = None
    b1: Any = None
    beta2: Any = None
    beta3: Any = None
    beta4: Any = None

    def __post_init__(self) -> None:
        s = len(self.c0)
        set_ = object.__setattr__
        for name in ("c0", "c1", "alpha", "beta1"):
            set_(self, name, _vector(name, getattr(self, name), s))
        for name in ("beta2", "beta3", "beta4"):
            v = getattr(self, name)
            set_(self, name, (0.0,) * s if v is None else _vector(name, v, s))
        for name in ("a0", "b0", "a1", "b1"):
            set_(self, name, _lower(name, getattr(self, name), s))
        for name, target in (
            ("alpha", 1.0),
            ("beta1", 1.0),
            ("beta2", 0.0),
            ("beta3", 0.0),
            ("beta4", 0.0),
        ):
            total = math.fsum(getattr(self, name))
            if abs(total - target) > 1e-12:
                raise ValueError(
                    f"SRKTableau: the entries of `{name}` must sum to {target:g} (consistency), "
                    f"got {total!r}."
                )
        # Which stages' drift and diffusion the step evaluates, decided once.
        set_(self, "_drift_at", self._read(self.alpha, self.a0, self.a1))
        betas = (self.beta1, self.beta2, self.beta3, self.beta4)
        noise_w = [any(b[j] != 0 for b in betas) for j in range(s)]
        set_(self, "_diffusion_at", self._read(noise_w, self.b0, self.b1))

    @property
    def num_stages(self) -> int:
        return len(self.c0)

    def _read(self, weights: Sequence[float], *matrices: Rows) -> tuple[bool, ...]:
        """Which stages' values are read: by a nonzero weight or by a later stage."""
        s = self.num_stages
        return tuple(
            weights[j] != 0 or any(m[i][j] != 0 for m in matrices for i in range(j + 1, s))
            for j in range(s)
        )

    @property
    def drift_stages(self) -> tuple[bool, ...]:
        """The stages whose drift is evaluated."""
        return self._drift_at  # type: ignore[attr-defined]

    @property
    def diffusion_stages(self) -> tuple[bool, ...]:
        """The stages whose diffusion is evaluated."""
        return self._diffusion_at  # type: ignore[attr-defined]

    @property
    def num_fevals(self) -> int:
        """Drift plus diffusion evaluations of one step."""
        return sum(self.drift_stages) + sum(self.diffusion_stages)


class AbstractSRK(AbstractSDESolver):
    """Stochastic Runge–Kutta methods: subclasses set ``tableau``, ``strong_order``,
    ``calculus`` and ``noise_types``; the step is this engine's."""

    tableau: ClassVar[SRKTableau]
    levy_area: ClassVar[str | None] = "space-time"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.num_fevals_step = tab.num_fevals

    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        tab = self.tableau
        h = t1 - t0
        dw, area = diffusion.contr_levy(t0, t1)
        hw = broadcast_time(h, dw)
        sqrt_h = hw.sqrt()
        i_k0_h = 0.5 * dw + area  # I_(1,0) / h
        # The noise weights of the stages, terms with zero coefficients left out.
        noise: list[tuple[Sequence[float], Any]] = [(tab.beta1, dw), (tab.beta3, i_k0_h)]
        if any(tab.beta2):
            noise.append((tab.beta2, 0.5 * (dw * dw - hw) / sqrt_h))  # I_(1,1) / sqrt(h)
        if any(tab.beta4):
            noise.append((tab.beta4, (dw * dw - 3 * hw) * dw / (6 * hw)))  # I_(1,1,1) / h
        hy = broadcast_time(h, y0)
        prod = diffusion.prod
        a0, b0, a1, b1 = tab.a0, tab.b0, tab.a1, tab.b1
        drift_at, diffusion_at = tab.drift_stages, tab.diffusion_stages
        f_h: list[torch.Tensor | None] = []  # f(H0_j) h
        g: list[torch.Tensor | None] = []  # g(H1_j)
        y1 = y0
        for i in range(tab.num_stages):
            h0 = h1 = y0
            for j in range(i):
                fj, gj = f_h[j], g[j]
                if fj is not None and a0[i][j]:
                    h0 = h0 + a0[i][j] * fj
                if gj is not None and b0[i][j]:
                    h0 = h0 + prod(gj, b0[i][j] * i_k0_h)
                if fj is not None and a1[i][j]:
                    h1 = h1 + a1[i][j] * fj
                if gj is not None and b1[i][j]:
                    h1 = h1 + prod(gj, b1[i][j] * sqrt_h)
            f_i = None
            if drift is not None and drift_at[i]:
                f_i = drift.vf(t0 + tab.c0[i] * h, h0, args) * hy
                if tab.alpha[i]:
                    y1 = y1 + tab.alpha[i] * f_i
            f_h.append(f_i)
            g_i = diffusion.vf(t0 + tab.c1[i] * h, h1, args) if diffusion_at[i] else None
            if g_i is not None:
                weight = None
                for beta, integral in noise:
                    if beta[i]:
                        weight = (
                            beta[i] * integral if weight is None else weight + beta[i] * integral
                        )
                if weight is not None:
                    y1 = y1 + prod(g_i, weight)
            g.append(g_i)
        return y1
