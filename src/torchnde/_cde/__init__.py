"""Controlled differential equations: interpolation, signatures, ``cdeint``, streaming."""

from .cdeint import cdeint as cdeint
from .cubic import CubicSpline as CubicSpline
from .cubic import natural_cubic_coeffs as natural_cubic_coeffs
from .hermite import hermite_cubic_coeffs as hermite_cubic_coeffs
from .linear import LinearInterpolation as LinearInterpolation
from .linear import linear_interpolation_coeffs as linear_interpolation_coeffs
from .linear import rectilinear_interpolation_coeffs as rectilinear_interpolation_coeffs
from .log_ode import logsig_windows as logsig_windows
from .lyndon import logsignature_channels as logsignature_channels
from .lyndon import lyndon_words as lyndon_words
from .lyndon import signature_channels as signature_channels
from .missing import add_observation_counts as add_observation_counts
from .missing import fill_forward as fill_forward
from .path import AbstractInterpolation as AbstractInterpolation
from .signature import logsignature as logsignature
from .signature import signature as signature
from .signature import signature_to_logsignature as signature_to_logsignature
from .stream import CDEStream as CDEStream
from .term import CDETerm as CDETerm
