"""Reference problems shared by the numerical tests (see :mod:`problems.reference`)."""

from .reference import PROBLEMS as PROBLEMS
from .reference import Problem as Problem
from .reference import get as get
from .reference import reference_solution as reference_solution

__all__ = ["PROBLEMS", "Problem", "get", "reference_solution"]
