"""How gradients flow through a solve."""

from .base import AbstractAdjoint as AbstractAdjoint
from .direct import DirectAdjoint as DirectAdjoint
