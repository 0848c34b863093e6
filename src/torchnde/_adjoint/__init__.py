"""How gradients flow through a solve."""

from .backsolve import BacksolveAdjoint as BacksolveAdjoint
from .backsolve import InterpolatedAdjoint as InterpolatedAdjoint
from .base import AbstractAdjoint as AbstractAdjoint
from .checkpoint import CheckpointAdjoint as CheckpointAdjoint
from .direct import DirectAdjoint as DirectAdjoint
from .implicit import ImplicitAdjoint as ImplicitAdjoint
from .reversible import ReversibleAdjoint as ReversibleAdjoint
