"""Toy and bundled datasets, and the generators that made them."""

from .basicmotions import load_basicmotions as load_basicmotions
from .graphs import generate_kuramoto as generate_kuramoto
from .graphs import load_digits_knn as load_digits_knn
from .graphs import load_karate_club as load_karate_club
from .spiral import generate_spiral as generate_spiral
from .spiral import load_spiral as load_spiral

__all__ = [
    "generate_kuramoto",
    "generate_spiral",
    "load_basicmotions",
    "load_digits_knn",
    "load_karate_club",
    "load_spiral",
]

# isort: split
# irregular time series (issue 15, ts-latent)
from .periodic import generate_periodic as generate_periodic
from .periodic import subsample_points as subsample_points

__all__ += ["generate_periodic", "subsample_points"]
