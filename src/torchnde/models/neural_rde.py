r"""Neural rough differential equations: a neural CDE driven by log-signature windows."""

from __future__ import annotations

import math
from typing import Any

import torch

import torchnde as tn

from .neural_cde import NeuralCDE, check_int

__all__ = ["NeuralRDE"]


class NeuralRDE(NeuralCDE):
    r"""A neural RDE (Morrill, Salvi, Kidger, Foster, Lyons 2021): the neural CDE of a long
    series solved by the log-ODE method, one step per window.

    The series (with time as a channel) is cut into windows $[r_k, r_{k+1}]$ of
    ``window_length`` and each is summarised by its depth-$N$ log-signature
    $\mathrm{LogSig}^N_{r_k, r_{k+1}}(X)$ (:func:`torchnde.logsig_windows`). The state solves

    $$ \frac{dz}{ds} = f_\theta(z)\, \mathrm{LogSig}^N_{r_k, r_{k+1}}(X), \qquad
       s \in [k, k+1], $$

    a CDE on the piecewise-linear path through the cumulative log-signatures, so the
    vector field $f_\theta$ maps to ``(hidden, logsignature_channels(channels, N))``. Depth 1
    is a neural CDE on the linear interpolation of the window ends; depth 2 adds the Lévy
    areas of every pair of channels, which carry what happens inside a window: a series
    of length $T$ costs $T / w$ steps instead of $T$, at an error of order $w^{(N+1)/p}$.

    Args:
        input_channels, hidden, output: as for :class:`NeuralCDE`.
        depth: the log-signature depth $N$.
        window_length: window length in the units of ``t``.
        head: ``"classifier"`` or ``"regressor"``.
        readout: ``"final"``, or ``"all"`` for an output at every window end
            ``(batch, num_windows + 1, output)``.
        **kwargs: the other options of :class:`NeuralCDE` (``time_channel``,
            ``observation_counts``, ``width``, ``depth`` of the vector field is
            ``field_depth`` here, ``solver``, ...).

    Reference:
        J. Morrill, C. Salvi, P. Kidger, J. Foster, T. Lyons, "Neural rough differential
        equations for long time series", ICML 2021.

    Example:
        >>> model = NeuralRDE(input_channels=2, hidden=16, output=3, depth=2, window_length=8)
        >>> coeffs = model.interpolate(x, t)        # (batch, windows + 1, logsig channels)
        >>> logits = model(coeffs)
    """

    def __init__(
        self,
        input_channels: int,
        hidden: int,
        output: int,
        *,
        depth: int = 2,
        window_length: float = 4.0,
        head: str = "classifier",
        readout: str = "final",
        field_depth: int = 2,
        **kwargs: Any,
    ) -> None:
        owner = "NeuralRDE"
        self.logsig_depth = check_int(owner, "depth", depth)
        if (
            isinstance(window_length, bool)
            or not isinstance(window_length, (int, float))
            or not (window_length > 0 and math.isfinite(window_length))
        ):
            raise ValueError(
                f"{owner}: `window_length` must be a positive number, got {window_length!r}."
            )
        if head == "forecaster":
            raise ValueError(
                f"{owner}: head='forecaster' is not supported (the path is indexed by window); "
                "use NeuralCDE(head='forecaster'), or 'classifier' / 'regressor'."
            )
        if "interpolation" in kwargs:
            raise ValueError(
                f"{owner}: the path is the linear one through the log-signature windows; drop "
                f"`interpolation` (got {kwargs['interpolation']!r})."
            )
        self.window_length = float(window_length)
        super().__init__(
            input_channels,
            hidden,
            output,
            head=head,
            readout=readout,
            interpolation="linear",
            depth=field_depth,
            **kwargs,
        )

    def _path_channels(self) -> int:
        return tn.logsignature_channels(super()._path_channels(), self.logsig_depth)

    def interpolate(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """The cumulative log-signatures of the windows ``(batch, num_windows + 1,
        logsignature_channels)``, for :meth:`forward` (compute once per dataset).

        Args:
            x: ``(batch, length, input_channels)``, NaN where not observed (filled linearly).
            t: one time grid ``(length,)`` for the batch; ``0, 1, ...`` when omitted.
        """
        x = self._check_x(x)
        if t is None:
            t = torch.arange(x.shape[-2], dtype=x.dtype, device=x.device)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        feats = self._features(x, t)
        if self.time_channel:
            feats = torch.cat([t.expand(feats.shape[:-1]).unsqueeze(-1), feats], dim=-1)
        return tn.logsig_windows(feats, self.logsig_depth, self.window_length, t)

    def path(self, coeffs: torch.Tensor, t: torch.Tensor | None = None) -> tn.AbstractInterpolation:
        """The linear path through the cumulative log-signatures, on ``0, 1, ...``."""
        return tn.LinearInterpolation(coeffs)
