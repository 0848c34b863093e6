"""Brownian motions: ``BrownianInterval``, ``VirtualBrownianTree``, ``BrownianPath``,
``BrownianGrid``."""

from .base import AbstractBrownianPath as AbstractBrownianPath
from .base import BrownianIncrement as BrownianIncrement
from .grid import BrownianGrid as BrownianGrid
from .interval import BrownianInterval as BrownianInterval
from .path import BrownianPath as BrownianPath
from .virtual_tree import VirtualBrownianTree as VirtualBrownianTree
