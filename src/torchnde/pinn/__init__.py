"""Physics-informed solvers: networks trained on equation residuals with the conditions built
in (neurodiffeq's conventions), and the deep BSDE method for high-dimensional PDEs.

See docs/usage/pinn.md.
"""

from .bsde import DeepBSDE as DeepBSDE
from .bsde import allen_cahn as allen_cahn
from .bsde import hjb as hjb
from .bsde import hjb_reference as hjb_reference
from .conditions import IBVP1D as IBVP1D
from .conditions import IVP as IVP
from .conditions import BaseCondition as BaseCondition
from .conditions import CustomCondition as CustomCondition
from .conditions import DirichletBVP as DirichletBVP
from .conditions import DirichletBVP2D as DirichletBVP2D
from .conditions import DoubleEndedBVP1D as DoubleEndedBVP1D
from .conditions import NoCondition as NoCondition
from .generators import BaseGenerator as BaseGenerator
from .generators import Generator1D as Generator1D
from .generators import Generator2D as Generator2D
from .generators import PredefinedGenerator as PredefinedGenerator
from .generators import ResidualResampler as ResidualResampler
from .generators import StaticGenerator as StaticGenerator
from .residuals import derivatives as derivatives
from .residuals import diff as diff
from .residuals import laplacian as laplacian
from .solvers import FCNN as FCNN
from .solvers import Solution as Solution
from .solvers import Solver as Solver
from .solvers import Solver1D as Solver1D
from .solvers import Solver2D as Solver2D

__all__ = [
    "FCNN",
    "IBVP1D",
    "IVP",
    "BaseCondition",
    "BaseGenerator",
    "CustomCondition",
    "DeepBSDE",
    "DirichletBVP",
    "DirichletBVP2D",
    "DoubleEndedBVP1D",
    "Generator1D",
    "Generator2D",
    "NoCondition",
    "PredefinedGenerator",
    "ResidualResampler",
    "Solution",
    "Solver",
    "Solver1D",
    "Solver2D",
    "StaticGenerator",
    "allen_cahn",
    "derivatives",
    "diff",
    "hjb",
    "hjb_reference",
    "laplacian",
]
