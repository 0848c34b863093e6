"""How gradients flow through a solve."""

from .base import AbstractAdjoint as AbstractAdjoint
from .checkpoint import CheckpointAdjoint as CheckpointAdjoint
from .direct import DirectAdjoint as DirectAdjoint
