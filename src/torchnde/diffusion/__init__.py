r"""Score-based diffusion on torchnde's engine (Song et al. 2021 and the samplers after it).

- Forward SDEs: :class:`VPSDE`, :class:`VESDE`, :class:`SubVPSDE`, each with its marginal,
  prior and its drift/diffusion as torchnde terms (:meth:`AbstractForwardSDE.terms`).
- Scores: any ``score(x, t)``; :class:`NoisePredictorScore` converts a noise predictor;
  :class:`ScoreMLP` is a small network for vector data.
- Training: :func:`dsm_loss` with the score, likelihood and no weighting.
- Sampling: :func:`sample` with the reverse SDE on any SDE solver, predictor-corrector, the
  probability-flow ODE on any ODE solver, DDIM, Karras et al.'s Heun and DPM-Solver(++).
- Likelihood: :func:`log_prob` (nats) and :func:`bits_per_dim` by the probability-flow ODE.
"""

from .base import AbstractForwardSDE as AbstractForwardSDE
from .ddim import ddim_sample as ddim_sample
from .dpm_solver import dpm_solver_sample as dpm_solver_sample
from .karras import karras_heun_sample as karras_heun_sample
from .karras import karras_ode as karras_ode
from .losses import WEIGHTINGS as WEIGHTINGS
from .losses import dsm_loss as dsm_loss
from .pf_ode import bits_per_dim as bits_per_dim
from .pf_ode import log_prob as log_prob
from .pf_ode import probability_flow as probability_flow
from .reverse_sde import reverse_sde_terms as reverse_sde_terms
from .sample import SAMPLERS as SAMPLERS
from .sample import sample as sample
from .schedules import SCHEDULES as SCHEDULES
from .schedules import time_grid as time_grid
from .score import NoisePredictorScore as NoisePredictorScore
from .score import ScoreMLP as ScoreMLP
from .score import data_prediction as data_prediction
from .score import noise_prediction as noise_prediction
from .subvp import SubVPSDE as SubVPSDE
from .ve import VESDE as VESDE
from .vp import VPSDE as VPSDE

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "WEIGHTINGS",
    "AbstractForwardSDE",
    "NoisePredictorScore",
    "ScoreMLP",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "data_prediction",
    "ddim_sample",
    "dpm_solver_sample",
    "dsm_loss",
    "karras_heun_sample",
    "karras_ode",
    "log_prob",
    "noise_prediction",
    "probability_flow",
    "reverse_sde_terms",
    "sample",
    "time_grid",
]
