"""Runnable experiments (paper reproductions), behind ``torchnde run NAME``.

An experiment is a module with a ``Config`` dataclass (subclassing
:class:`~torchnde.experiments.config.ExperimentConfig`) and a ``Task`` class (subclassing
:class:`~torchnde.experiments.harness.Task`): data, model, per-sample loss, evaluation, figure
and headline numbers. The shared harness (:func:`~torchnde.experiments.harness.run`) trains it,
checkpoints, resumes, runs data-parallel under ``torchrun`` and writes the run folder.

Register a new experiment with one :func:`register` call at the bottom of this file; its module
is imported only when the experiment is run (``torchnde list`` imports none).
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError as CheckpointError
from .config import ExperimentConfig as ExperimentConfig
from .config import ODEConfig as ODEConfig
from .config import make_config as make_config
from .runfolder import RunFolderError as RunFolderError

__all__ = [
    "EXPERIMENTS",
    "CheckpointError",
    "Experiment",
    "ExperimentConfig",
    "MissingDependency",
    "ODEConfig",
    "RunFolderError",
    "get_experiment",
    "make_config",
    "register",
    "require",
    "seed_everything",
]


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, a one-line summary, the paper and its module."""

    name: str
    summary: str
    paper: str
    module: str

    def load(self) -> ModuleType:
        """Import the experiment's module (which defines ``Config`` and ``Task``)."""
        return importlib.import_module(self.module)

    @property
    def config_cls(self) -> type[ExperimentConfig]:
        return self.load().Config

    @property
    def task_cls(self) -> Any:
        return self.load().Task


#: All registered experiments, by name, in registration order.
EXPERIMENTS: dict[str, Experiment] = {}


def register(name: str, summary: str, paper: str, module: str) -> Experiment:
    """Register an experiment run by ``module`` (a dotted module path) under ``name``."""
    if name in EXPERIMENTS:
        raise ValueError(f"an experiment named {name!r} is already registered.")
    EXPERIMENTS[name] = exp = Experiment(name, summary, paper, module)
    return exp


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ``ValueError`` lists the known ones."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(EXPERIMENTS)}."
        ) from None


class MissingDependency(ImportError):
    """An optional package an experiment needs is not installed."""


def require(module: str, package: str, experiment: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependency` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            f"experiment {experiment!r} needs {package}, which is not installed: "
            f"pip install 'torchnde[experiments]' (or pip install {package})."
        ) from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (legacy global generator) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


register(
    "spiral",
    "neural ODE fitted to a 2-D spiral trajectory (bundled data)",
    "Chen, Rubanova, Bettencourt, Duvenaud 2018, Neural Ordinary Differential Equations",
    "torchnde.experiments.spiral",
)
register(
    "mackey-glass",
    "neural DDE vs neural ODE of the same size on the chaotic Mackey-Glass series",
    "Zhu, Guo, Lin 2021, Neural Delay Differential Equations",
    "torchnde.experiments.mackey_glass",
)
register(
    "circles",
    "nested circles: plain neural ODE vs augmented neural ODE, accuracy and NFE",
    "Dupont, Doucet, Teh 2019, Augmented Neural ODEs",
    "torchnde.experiments.circles",
)
register(
    "digits",
    "ODE-Net on sklearn's 8x8 digits; kinetic-energy + Jacobian regularisation lowers NFE",
    "Chen et al. 2018 (ODE-Net); Finlay et al. 2020, How to train your neural ODE",
    "torchnde.experiments.digits",
)
register(
    "density",
    "FFJORD on 2-D densities (moons, circles, swiss roll) vs a Gaussian, with/without RNODE",
    "Grathwohl et al. 2019, FFJORD; Finlay et al. 2020, How to train your neural ODE",
    "torchnde.experiments.density",
)
register(
    "motions",
    "neural CDE on UEA BasicMotions (bundled) with 30% of the observations dropped",
    "Kidger, Morrill, Foster, Lyons 2020, Neural Controlled Differential Equations",
    "torchnde.experiments.motions",
)
register(
    "sde",
    "neural SDE fitted to Ornstein-Uhlenbeck / geometric Brownian motion paths, marginals",
    "Kidger, Foster, Li, Lyons 2021, Neural SDEs as Infinite-Dimensional GANs",
    "torchnde.experiments.sde",
)
register(
    "graph-digits",
    "GRAND and a graph neural ODE vs a GCN on a kNN graph of digits, 10 labels per class",
    "Chamberlain et al. 2021, GRAND: Graph Neural Diffusion; Poli et al. 2020, Graph Neural "
    "Ordinary Differential Equations",
    "torchnde.experiments.graph_digits",
)
register(
    "graph-dynamics",
    "graph neural ODE forecasting Kuramoto oscillators on a random geometric graph",
    "Poli et al. 2020/2021, Graph Neural Ordinary Differential Equations (dynamic graph "
    "prediction)",
    "torchnde.experiments.graph_dynamics",
)
register(
    "burgers",
    "FNO1d on 1-D viscous Burgers (nu = 0.1) at 256 points, zero-shot at 1024",
    "Li et al. 2021, Fourier Neural Operator for Parametric Partial Differential Equations",
    "torchnde.experiments.burgers",
)
register(
    "darcy",
    "FNO2d and Transform Once (T1) on 2-D Darcy flow: error and seconds per epoch",
    "Li et al. 2021 (FNO); Poli et al. 2022, Transform Once",
    "torchnde.experiments.darcy",
)
register(
    "bouncing-ball",
    "gravity and restitution of a bouncing ball from noisy heights, one solve with resets",
    "Chen, Amos, Nickel 2021, Learning Neural Event Functions for Ordinary Differential "
    "Equations (torchdiffeq's bouncing_ball.py)",
    "torchnde.experiments.bouncing_ball",
)
register(
    "hybrid-modes",
    "a two-mode thermostat: neural hybrid automaton vs a single-mode neural ODE, switching times",
    "Poli et al. 2021, Neural Hybrid Automata",
    "torchnde.experiments.hybrid_modes",
)
register(
    "jump-sde",
    "neural jump SDE on a simulated Hawkes process: test log-likelihood vs the true intensity",
    "Jia, Benson 2019, Neural Jump Stochastic Differential Equations",
    "torchnde.experiments.jump_sde",
)
register(
    "pendulum",
    "ideal pendulum: Hamiltonian neural network vs a baseline neural ODE, energy drift",
    "Greydanus, Dzamba, Yosinski 2019, Hamiltonian Neural Networks",
    "torchnde.experiments.pendulum",
)
register(
    "double-pendulum",
    "double pendulum: Lagrangian neural network vs a baseline neural ODE, energy drift",
    "Cranmer, Greydanus, Hoyer, Battaglia, Spergel, Ho 2020, Lagrangian Neural Networks",
    "torchnde.experiments.double_pendulum",
)
register(
    "energy-shaping",
    "a pendulum brought to a target by a neural potential and damping injection",
    "Massaroli, Poli, Califano, Park, Yamashita, Asama 2021, Optimal Energy Shaping via Neural "
    "Approximators",
    "torchnde.experiments.energy_shaping",
)
register(
    "chain",
    "constrained chain: Cartesian constrained HNN vs an HNN in generalised coordinates",
    "Finzi, Wang, Wilson 2020, Simplifying Hamiltonian and Lagrangian Neural Networks via "
    "Explicit Constraints",
    "torchnde.experiments.chain",
)
register(
    "lotka-volterra-ude",
    "UDE (known linear terms + network) then SINDy recovers Lotka-Volterra; NODE baseline",
    "Rackauckas et al. 2020, Universal Differential Equations for Scientific Machine Learning",
    "torchnde.experiments.lotka_volterra_ude",
)
register(
    "latent-sde",
    "latent SDE on the stochastic Lorenz attractor: ELBO, test NLL bound, prior sample paths",
    "Li, Wong, Chen, Duvenaud 2020, Scalable Gradients for Stochastic Differential Equations",
    "torchnde.experiments.latent_sde",
)
register(
    "sde-gan",
    "SDE-GAN (neural CDE critic) on a time-dependent Ornstein-Uhlenbeck process: KS of marginals",
    "Kidger, Foster, Li, Oberhauser, Lyons 2021, Neural SDEs as Infinite-Dimensional GANs",
    "torchnde.experiments.sde_gan",
)
register(
    "vowels",
    "neural CDE (cubic and causal Hermite paths) vs GRU-D vs ODE-RNN on sktime's JapaneseVowels",
    "Kidger, Morrill, Foster, Lyons 2020, Neural Controlled Differential Equations; Morrill et "
    "al. 2021, Neural CDEs for Online Prediction Tasks",
    "torchnde.experiments.vowels",
)
register(
    "pinn-ode",
    "physics-informed networks (exact initial conditions) on a damped oscillator and "
    "Lotka-Volterra: max error against torchnde's solver",
    "Lagaris, Likas, Fotiadis 1998; Chen et al. 2020, NeuroDiffEq",
    "torchnde.experiments.pinn_ode",
)
register(
    "pinn-poisson",
    "physics-informed network with exact Dirichlet values on 2-D Poisson: relative L2 error",
    "Lagaris, Likas, Fotiadis 1998, Artificial Neural Networks for Solving Ordinary and "
    "Partial Differential Equations",
    "torchnde.experiments.pinn_poisson",
)
register(
    "pinn-burgers",
    "physics-informed network on 1-D viscous Burgers (nu = 0.01/pi): relative L2 error "
    "against a spectral reference",
    "Raissi, Perdikaris, Karniadakis 2019, Physics-informed neural networks",
    "torchnde.experiments.pinn_burgers",
)
register(
    "deep-bsde",
    "deep BSDE on the 100-dimensional HJB and Allen-Cahn equations: u(0, 0) against the references",
    "Han, Jentzen, E 2018, Solving high-dimensional partial differential equations using "
    "deep learning",
    "torchnde.experiments.deep_bsde",
)
register(
    "flows-2d",
    "FFJORD, Monge-Ampere flow and CP-Flow on one 2-D density, beside the true density",
    "Grathwohl et al. 2019, FFJORD; Zhang, E, Wang 2018, Monge-Ampere Flow; Huang et al. 2021, "
    "Convex Potential Flows",
    "torchnde.experiments.flows_2d",
)
register(
    "dimer",
    "equivariant (EGNN) CNF vs a plain CNF of the same size on the double-well DW-4 system",
    "Koehler, Klein, Noe 2020, Equivariant Flows; Satorras et al. 2021, E(n) Equivariant "
    "Normalizing Flows",
    "torchnde.experiments.dimer",
)
register(
    "trajectorynet",
    "TrajectoryNet vs linear OT interpolation of a held-out snapshot of a branching process",
    "Tong, Huang, Wolf, van Dijk, Krishnaswamy 2020, TrajectoryNet",
    "torchnde.experiments.trajectorynet",
)
register(
    "periodic",
    "latent ODE vs ODE-RNN vs RNN-dt on the toy periodic series, 10/20/50% observed",
    "Rubanova, Chen, Duvenaud 2019, Latent ODEs for Irregularly-Sampled Time Series",
    "torchnde.experiments.periodic",
)
register(
    "co2",
    "latent ODE vs seasonal naive forecasting the Mauna Loa CO2 series (statsmodels, gaps)",
    "Rubanova, Chen, Duvenaud 2019, Latent ODEs for Irregularly-Sampled Time Series",
    "torchnde.experiments.co2",
)
register(
    "diffusion-2d",
    "VP / VE / sub-VP diffusion on 2-D densities: PF-ODE NLL vs the true one, MMD of every sampler",
    "Song et al. 2021, Score-Based Generative Modeling through Stochastic Differential Equations; "
    "Karras et al. 2022; Lu et al. 2022 (DPM-Solver)",
    "torchnde.experiments.diffusion_2d",
)
register(
    "diffusion-digits",
    "VP diffusion on sklearn's 8x8 digits: PF-ODE bits/dim, FD of DDIM/Heun/DPM-Solver++ vs EM",
    "Song et al. 2021; Song, Meng, Ermon 2021 (DDIM); Karras et al. 2022; Lu et al. 2022",
    "torchnde.experiments.diffusion_digits",
)
register(
    "pde-net",
    "PDE-Net (moment-constrained filters + SymNet) on 2-D convection-diffusion: PDE and rollout",
    "Long, Lu, Ma, Dong 2018, PDE-Net: Learning PDEs from Data",
    "torchnde.experiments.pde_net",
)
register(
    "gp-ode",
    "GP-ODE (sparse GP vector field, whitened inducing values) on noisy Van der Pol: bands",
    "Heinonen, Yildiz, Mannerström, Intosalmi, Lähdesmäki 2018, Learning unknown ODE models "
    "with Gaussian processes",
    "torchnde.experiments.gp_ode",
)
