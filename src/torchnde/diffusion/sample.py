r"""``sample``: every sampler of the diffusion literature behind one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import torchnde as tn

from ._checks import check_positive, check_score, check_sde, check_steps, describe
from .base import AbstractForwardSDE
from .ddim import ddim_sample
from .dpm_solver import dpm_solver_sample
from .karras import karras_heun_sample
from .pf_ode import pf_ode_sample
from .reverse_sde import pc_sample, reverse_sde_sample
from .schedules import SCHEDULES, time_grid
from .score import Score, data_prediction

__all__ = ["SAMPLERS", "sample"]

#: Sampler names accepted by :func:`sample`, with the default time grid of each.
SAMPLERS: dict[str, str] = {
    "euler_maruyama": "time",
    "srk": "time",
    "reversible_heun": "time",
    "pc": "time",
    "pf_ode": "time",
    "ddim": "time",
    "heun": "karras",
    "dpm_solver": "log_snr",
    "dpm_solver++": "log_snr",
}

_SDE_SOLVERS = {
    "euler_maruyama": tn.EulerMaruyama,
    "srk": tn.SRA1,
    "reversible_heun": tn.ReversibleHeun,
}


def sample(
    sde: AbstractForwardSDE,
    score: Score,
    shape: Sequence[int],
    *,
    sampler: str = "pf_ode",
    steps: int | None = None,
    schedule: str | None = None,
    solver: tn.AbstractSolver | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eta: float = 0.0,
    snr: float = 0.16,
    corrector_steps: int = 1,
    denoise: bool = False,
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    r"""Draw samples of the model defined by ``sde`` and ``score``: prior noise at $T$ carried
    to $\epsilon$ by a sampler.

    Samplers (``steps`` steps on a grid from :func:`time_grid`):

    - ``"pf_ode"``: the probability-flow ODE with ``solver``; adaptive (:class:`Tsit5` at
      ``rtol``/``atol``) when ``steps`` is None, else fixed steps of any ODE solver.
    - ``"euler_maruyama"``, ``"srk"`` (:class:`SRA1`, strong order 1.5 for the additive
      noise), ``"reversible_heun"``: the reverse-time SDE on the engine (or any SDE
      ``solver``). Reversible Heun's stability region is a segment of the imaginary axis
      (Kidger et al. 2021), so it is unstable on the dissipative reverse drift once the data
      are much narrower than the prior (it fails on the 2-D experiment's data of standard
      deviation 0.15 at every step count, and passes on unit-variance Gaussians).
    - ``"pc"``: predictor-corrector, Euler-Maruyama + ``corrector_steps`` Langevin steps at
      signal-to-noise ratio ``snr`` (Song et al. 2021).
    - ``"ddim"``: DDIM with ``eta`` (Song, Meng, Ermon 2021); ``eta=0`` is deterministic.
    - ``"heun"``: Karras et al. (2022)'s second-order Heun sampler on their $\rho=7$ grid.
    - ``"dpm_solver"`` / ``"dpm_solver++"``: DPM-Solver (noise prediction) and
      DPM-Solver++(2M) (data prediction), multistep second order (Lu et al. 2022).

    Score evaluations per step: 1 (Euler-Maruyama, reversible Heun, DDIM, DPM-Solver), 2
    (Karras Heun, SRA1, PC with one corrector); ``stats["nfe"]`` counts them.

    Args:
        sde: the forward SDE.
        score: ``score(x, t)``, ``t`` of shape ``(batch,)``.
        shape: the shape of the output, ``(batch, *event)``.
        sampler: a name from :data:`SAMPLERS`.
        steps: the number of steps (required except for the adaptive ``"pf_ode"``).
        schedule: the grid, one of :data:`SCHEDULES`; by default the sampler's own.
        solver: the ODE solver of ``"pf_ode"`` or the SDE solver of the reverse SDE.
        rtol, atol: tolerances of the adaptive ``"pf_ode"``.
        eta: DDIM's stochasticity, in ``[0, 1]``.
        snr, corrector_steps: the Langevin corrector of ``"pc"``.
        denoise: end with Tweedie's denoising step $\hat x_0 = (x + \sigma^2 s)/\alpha$ at
            $\epsilon$ (one more evaluation).
        x_T: the initial noise at $T$ (of ``shape``) instead of a prior draw.
        generator: the generator of every random draw (the reverse SDE's Brownian motion is
            seeded from it).
        dtype, device: of the output (by default torch's default dtype, CPU).
        stats: a dict to fill with ``nfe`` and ``num_steps``.

    Returns:
        Samples of ``shape``.
    """
    check_sde("sample", sde)
    check_score("sample", score)
    if sampler == "dpm_solver_pp":
        sampler = "dpm_solver++"
    if sampler not in SAMPLERS:
        raise ValueError(f"sample: `sampler` must be one of {list(SAMPLERS)}, got {sampler!r}.")
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(
            f"sample: `shape` must be a tuple of positive ints (batch, *event), got {shape!r}."
        )
    if steps is None and sampler != "pf_ode":
        raise ValueError(f"sample: sampler {sampler!r} needs `steps=` (e.g. steps=50).")
    if steps is not None:
        check_steps("sample", steps)
    schedule = SAMPLERS[sampler] if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"sample: `schedule` must be one of {SCHEDULES}, got {schedule!r}.")
    if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
        raise ValueError(f"sample: `eta` must be a number in [0, 1], got {eta!r}.")
    if eta != 0 and sampler != "ddim":
        raise ValueError(f"sample: `eta` applies to sampler='ddim' only, got sampler={sampler!r}.")
    check_positive("sample", "snr", snr)
    if solver is not None and not isinstance(solver, tn.AbstractSolver):
        raise TypeError(f"sample: `solver` must be a torchnde solver, got {describe(solver)}.")
    if solver is not None and sampler not in ("pf_ode", *_SDE_SOLVERS):
        raise ValueError(
            f"sample: `solver` applies to 'pf_ode' and the reverse-SDE samplers, not {sampler!r}."
        )
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if x_T is None:
        x_T = sde.prior_sample(shape, dtype=dtype, device=device, generator=generator)
    elif not isinstance(x_T, torch.Tensor) or tuple(x_T.shape) != shape:
        raise ValueError(f"sample: `x_T` must have shape {shape}, got {describe(x_T)}.")
    out: dict[str, Any] = {}
    calls = [0]
    user_score = score

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return user_score(x, t)

    score = counted

    ts = (
        None
        if steps is None
        else time_grid(sde, steps, schedule, dtype=torch.float64, device=x_T.device)
    )
    if sampler == "pf_ode":
        x = pf_ode_sample(sde, score, x_T, ts, solver or tn.Tsit5(), rtol, atol, out)
    else:
        if ts is None:  # unreachable: `steps` is checked above
            raise ValueError(f"sample: sampler {sampler!r} needs `steps=`.")
        if sampler in _SDE_SOLVERS:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            x = reverse_sde_sample(
                sde, score, x_T, ts, solver or _SDE_SOLVERS[sampler](), seed, out
            )
        elif sampler == "pc":
            x = pc_sample(sde, score, x_T, ts, snr, corrector_steps, generator, out)
        elif sampler == "ddim":
            x = ddim_sample(sde, score, x_T, ts, float(eta), generator, out)
        elif sampler == "heun":
            x = karras_heun_sample(sde, score, x_T, ts, out)
        else:
            x = dpm_solver_sample(sde, score, x_T, ts, sampler == "dpm_solver++", out)
    if denoise:
        x = data_prediction(sde, score, x, sde.eps)
    out["nfe"] = calls[0]
    if stats is not None:
        stats.update(out)
    return x
