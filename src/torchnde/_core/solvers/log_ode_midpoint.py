r"""The log-ODE midpoint method for Stratonovich SDEs (torchsde's ``log_ode``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..sde import AbstractSDESolver, jvp
from ..terms import ControlTerm, ODETerm, broadcast_time

__all__ = ["LogODEMidpoint"]


class LogODEMidpoint(AbstractSDESolver):
    r"""The log-ODE method with the explicit midpoint rule for Stratonovich SDEs: over each
    step the SDE is replaced by the ODE driven by the step's log-signature (the increment
    $\Delta W$ and the Lévy area $A$), solved by one midpoint step,

    $$ \tilde y = y_n + \tfrac12\big(f(t_n, y_n)\,h + g(t_n, y_n)\,\Delta W_n\big), $$
    $$ y_{n+1} = y_n + f(\tilde t, \tilde y)\,h + g(\tilde t, \tilde y)\,\Delta W_n
       + \sum_{j,k} \big(\partial_y g_j\, g_k\big)(\tilde t, \tilde y)\, A_{kj}, $$

    $\tilde t = t_n + h/2$, $A_{kj} = \tfrac12\int (W^k dW^j - W^j dW^k)$ over the step. The
    Lévy-area term is the bracket $\tfrac12\sum_{k<j}[g_k, g_j] A_{kj}$ written with the
    antisymmetry of $A$; it vanishes for commutative noise (diagonal, scalar, additive), where
    the method is the midpoint method.

    Strong order 1.0 for commutative noise; 0.5 for general noise (the Lévy areas are
    approximated: Davie's or Foster's approximation, the Brownian motion's ``levy_area``).
    No embedded error estimate (``adaptive=True`` estimates it by step doubling). Two drift
    and two diffusion evaluations per step, plus one Jacobian-vector product per Brownian
    channel for general noise. Dense output: linear. Explicit. Stratonovich. Every noise type;
    general noise needs a Brownian motion built with ``levy_area="davie"`` or ``"foster"``.

    Reference:
        J. Foster, T. Lyons, H. Oberhauser, *An optimal polynomial approximation of Brownian
        motion*, SIAM J. Numer. Anal. 58 (2020); the scheme of torchsde's ``log_ode``
        (``LogODEMidpoint``).
    """

    strong_order: ClassVar[float] = 1.0
    calculus: ClassVar[str] = "stratonovich"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive", "general")
    num_fevals_step: ClassVar[int] = 4
    levy_area: ClassVar[str | None] = "foster"

    def _step(
        self,
        drift: ODETerm | None,
        diffusion: ControlTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
    ) -> torch.Tensor:
        general = diffusion.noise == "general"
        if general:
            dw, area = _increment_and_area(diffusion, t0, t1)
        else:
            dw, area = diffusion.contr(t0, t1), None
        h = broadcast_time(t1 - t0, y0)
        tm = t0 + 0.5 * (t1 - t0)
        y_mid = y0 + 0.5 * diffusion.prod(diffusion.vf(t0, y0, args), dw)
        if drift is not None:
            y_mid = torch.addcmul(y_mid, drift.vf(t0, y0, args), 0.5 * h)
        g_mid = diffusion.vf(tm, y_mid, args)
        y1 = y0 + diffusion.prod(g_mid, dw)
        if drift is not None:
            y1 = torch.addcmul(y1, drift.vf(tm, y_mid, args), h)
        if area is not None:
            # Σ_j (∂g_j/∂y) v_j with v_j = Σ_k g_k A_kj (= (g A)_{:, j}): one
            # Jacobian-vector product per Brownian channel j.
            ga = g_mid @ _align(area, g_mid)
            for j in range(g_mid.shape[-1]):
                _, c = jvp(lambda z, j=j: diffusion.vf(tm, z, args)[..., j], y_mid, ga[..., j])
                y1 = y1 + c
        return y1


def _align(area: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The area ``(batch, m, m)`` with singleton state dimensions inserted to match ``g`` of
    shape ``(batch, *state, m)``."""
    extra = g.ndim - area.ndim
    if extra <= 0:
        return area
    return area.reshape(area.shape[:1] + (1,) * extra + area.shape[1:])


def _increment_and_area(
    diffusion: ControlTerm, t0: torch.Tensor, t1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    control = diffusion.control
    try:
        inc = control(t0, t1, return_levy_area=True)  # type: ignore[call-arg, operator]
    except TypeError:
        inc = None
    area = getattr(inc, "A", None)
    if area is None:
        raise ValueError(
            "LogODEMidpoint with general noise needs the Lévy area A of the Brownian motion, "
            f"but {control!r} gives none; build it with levy_area='davie' or 'foster' (e.g. "
            "BrownianInterval(t0, t1, shape, levy_area='foster'))."
        )
    return inc.W, area  # type: ignore[union-attr]
