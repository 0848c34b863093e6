"""The neural-DE model zoo: ``nn.Module``s built on torchnde's public API."""

from .augmented import Augmented as Augmented
from .augmented import SecondOrder as SecondOrder
from .cnf import CNF as CNF
from .constrained import CHNN as CHNN
from .constrained import CLNN as CLNN
from .control import EnergyShaping as EnergyShaping
from .control import SemiMarkovPolicy as SemiMarkovPolicy
from .delan import DeLaN as DeLaN
from .deq import DEQ as DEQ
from .galerkin import GalerkinConv2d as GalerkinConv2d
from .galerkin import GalerkinLinear as GalerkinLinear
from .hamiltonian import HNN as HNN
from .hamiltonian import SeparableHNN as SeparableHNN
from .hybrid import HybridTrajectory as HybridTrajectory
from .hybrid import NeuralHybridAutomaton as NeuralHybridAutomaton
from .hypersolver import HyperSolver as HyperSolver
from .jump_sde import NeuralJumpSDE as NeuralJumpSDE
from .lagrangian import LNN as LNN
from .multiple_shooting import MultipleShooting as MultipleShooting
from .neural_ode import Autonomous as Autonomous
from .neural_ode import DepthCat as DepthCat
from .neural_ode import NeuralODE as NeuralODE
from .port_hamiltonian import PortHamiltonian as PortHamiltonian
from .regularisers import AbstractRegulariser as AbstractRegulariser
from .regularisers import JacobianFrobenius as JacobianFrobenius
from .regularisers import KineticEnergy as KineticEnergy
from .regularisers import RateContext as RateContext
from .regularisers import SolverHeuristic as SolverHeuristic
from .regularisers import TaylorPenalty as TaylorPenalty
from .stable import StableNeuralFlow as StableNeuralFlow
from .symoden import SymODEN as SymODEN

# isort: split
# irregular time series (issue 15, ts-latent)
from .latent_ode import LatentODE as LatentODE
from .ode2vae import ODE2VAE as ODE2VAE
from .odernn import ODERNN as ODERNN
from .rnn import RNN as RNN
from .rnn_decay import RNNDecay as RNNDecay
