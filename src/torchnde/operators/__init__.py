"""Neural operators: maps between functions sampled on grids, on plain PyTorch.

- :class:`FNO1d`, :class:`FNO2d`: Fourier neural operators (Li et al. 2021), with
  :class:`SpectralConv1d`, :class:`SpectralConv2d` their spectral convolutions;
- :class:`FourierField`: a Fourier layer as the vector field of a neural ODE/PDE in time
  (``torchnde.solve(torchnde.ODETerm(field), ...)``);
- :class:`T1`: Transform Once (Poli et al. 2022), learning on one reduced spectrum.

Data: :func:`torchnde.data.burgers` and :func:`torchnde.data.darcy`.
"""

from .fno import FNO1d as FNO1d
from .fno import FNO2d as FNO2d
from .fno import FourierField as FourierField
from .spectral import SpectralConv1d as SpectralConv1d
from .spectral import SpectralConv2d as SpectralConv2d
from .t1 import T1 as T1
from .t1 import dct_matrix as dct_matrix

__all__ = ["FNO1d", "FNO2d", "FourierField", "SpectralConv1d", "SpectralConv2d", "T1", "dct_matrix"]
