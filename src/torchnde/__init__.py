"""torchnde: neural differential equations in PyTorch."""

from ._adjoint import AbstractAdjoint as AbstractAdjoint
from ._adjoint import BacksolveAdjoint as BacksolveAdjoint
from ._adjoint import CheckpointAdjoint as CheckpointAdjoint
from ._adjoint import DirectAdjoint as DirectAdjoint
from ._adjoint import ImplicitAdjoint as ImplicitAdjoint
from ._adjoint import InterpolatedAdjoint as InterpolatedAdjoint
from ._adjoint import ReversibleAdjoint as ReversibleAdjoint
from ._convenience import METHODS as METHODS
from ._convenience import odeint as odeint
from ._core.controllers import AbstractStepSizeController as AbstractStepSizeController
from ._core.controllers import ConstantStepSize as ConstantStepSize
from ._core.controllers import PIDController as PIDController
from ._core.events import Event as Event
from ._core.runge_kutta import AbstractRungeKutta as AbstractRungeKutta
from ._core.runge_kutta import ExplicitRungeKutta as ExplicitRungeKutta
from ._core.solution import SaveAt as SaveAt
from ._core.solution import Solution as Solution
from ._core.solution import SolveError as SolveError
from ._core.solution import Status as Status
from ._core.solver import AbstractReversibleSolver as AbstractReversibleSolver
from ._core.solver import AbstractSolver as AbstractSolver
from ._core.solvers import ALF as ALF
from ._core.solvers import RK4 as RK4
from ._core.solvers import RK38 as RK38
from ._core.solvers import Bosh3 as Bosh3
from ._core.solvers import Dopri5 as Dopri5
from ._core.solvers import Dopri8 as Dopri8
from ._core.solvers import Euler as Euler
from ._core.solvers import Fehlberg2 as Fehlberg2
from ._core.solvers import Heun as Heun
from ._core.solvers import Leapfrog as Leapfrog
from ._core.solvers import Midpoint as Midpoint
from ._core.solvers import Ralston as Ralston
from ._core.solvers import ReversibleHeun as ReversibleHeun
from ._core.solvers import SemiImplicitEuler as SemiImplicitEuler
from ._core.solvers import Tsit5 as Tsit5
from ._core.solvers import Yoshida4 as Yoshida4
from ._core.tableau import ButcherTableau as ButcherTableau
from ._core.terms import AbstractPath as AbstractPath
from ._core.terms import AbstractTerm as AbstractTerm
from ._core.terms import ControlTerm as ControlTerm
from ._core.terms import MultiTerm as MultiTerm
from ._core.terms import ODETerm as ODETerm
from ._solve import solve as solve

# isort: split
# The zoo uses the public names above, so it is imported last.
from . import models as models

__version__ = "0.1.0"
