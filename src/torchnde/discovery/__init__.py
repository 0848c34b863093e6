"""Model discovery: SINDy (sparse regression over feature libraries), PySINDy's names."""

from ._collocation import KERNELS as KERNELS
from ._collocation import CollocationDerivative as CollocationDerivative
from ._collocation import collocate_data as collocate_data
from ._collocation import fit_collocation as fit_collocation
from ._differentiation import AbstractDifferentiation as AbstractDifferentiation
from ._differentiation import FiniteDifference as FiniteDifference
from ._differentiation import SmoothedFiniteDifference as SmoothedFiniteDifference
from ._differentiation import SplineDerivative as SplineDerivative
from ._library import AbstractLibrary as AbstractLibrary
from ._library import ConcatLibrary as ConcatLibrary
from ._library import CustomLibrary as CustomLibrary
from ._library import FourierLibrary as FourierLibrary
from ._library import PolynomialLibrary as PolynomialLibrary
from ._library import TensoredLibrary as TensoredLibrary
from ._optimizers import SR3 as SR3
from ._optimizers import STLSQ as STLSQ
from ._optimizers import AbstractOptimizer as AbstractOptimizer
from ._sindy import EnsembleSINDy as EnsembleSINDy
from ._sindy import SINDy as SINDy
from ._ude import UniversalODE as UniversalODE
from .gp_ode import GPODEField as GPODEField
from .pde_net import MomentFilter as MomentFilter
from .pde_net import PDENet as PDENet
from .pde_net import SymNet as SymNet
from .pde_net import moment_matrix as moment_matrix
