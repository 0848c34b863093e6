"""Toy and bundled datasets, and the generators that made them."""

from .basicmotions import load_basicmotions as load_basicmotions
from .spiral import generate_spiral as generate_spiral
from .spiral import load_spiral as load_spiral

__all__ = ["generate_spiral", "load_basicmotions", "load_spiral"]
