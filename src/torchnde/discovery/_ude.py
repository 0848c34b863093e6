"""Universal differential equations (Rackauckas et al. 2020): known terms plus a network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._library import AbstractLibrary
from ._optimizers import AbstractOptimizer
from ._sindy import SINDy

__all__ = ["UniversalODE"]


class UniversalODE(nn.Module):
    r"""The vector field $f(t, y, \mathrm{args}) = \mathrm{known}(t, y, \mathrm{args}) +
    \mathrm{network}(y)$, for ``torchnde.ODETerm``: train it through ``torchnde.solve``, then
    :meth:`discover` fits SINDy to the network's output, and :meth:`recovered` is the vector
    field with the network replaced by the SINDy model.

    ``known`` maps ``(t, y, args)`` to a tensor of ``y``'s shape; ``network`` maps states
    ``(..., num_features)`` to the missing terms, same shape. ``zero_init=True`` zeroes the
    network's last ``nn.Linear`` so training starts from the known terms alone."""

    def __init__(
        self,
        known: Callable[[Any, torch.Tensor, Any], torch.Tensor],
        network: nn.Module,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        if not callable(known):
            raise TypeError(
                f"`known` must be a callable (t, y, args) -> tensor, got {type(known).__name__}."
            )
        if not isinstance(network, nn.Module):
            raise TypeError(f"`network` must be a torch.nn.Module, got {type(network).__name__}.")
        self.known, self.network = known, network
        if zero_init:
            linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError("`zero_init=True` needs an nn.Linear in `network`; it has none.")
            nn.init.zeros_(linears[-1].weight)
            if linears[-1].bias is not None:
                nn.init.zeros_(linears[-1].bias)

    def missing(self, y: torch.Tensor) -> torch.Tensor:
        """The network's output, the learned missing terms, at states ``y``."""
        return self.network(y)

    def forward(self, t: Any, y: torch.Tensor, args: Any = None) -> torch.Tensor:
        return self.known(t, y, args) + self.network(y)

    def discover(
        self,
        states: torch.Tensor,
        *,
        optimizer: AbstractOptimizer | None = None,
        feature_library: AbstractLibrary | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> SINDy:
        """SINDy fitted to the network's output at ``states`` ``(num_samples, num_features)``
        (e.g. along the trained model's trajectory); its equations are the missing terms. The
        network runs on its parameters' device and dtype, SINDy on ``states``'."""
        param = next(self.network.parameters(), None)
        with torch.no_grad():
            x = states if param is None else states.to(device=param.device, dtype=param.dtype)
            u = self.network(x).to(states)
        return SINDy(
            optimizer=optimizer, feature_library=feature_library, feature_names=feature_names
        ).fit(states, x_dot=u)

    def recovered(self, sindy: SINDy) -> Callable[[Any, torch.Tensor, Any], torch.Tensor]:
        """The vector field ``known + sindy`` (the network replaced by its symbolic fit), for
        ``torchnde.ODETerm``; states of shape ``(num_features,)`` or ``(batch, num_features)``."""

        def field(t: Any, y: torch.Tensor, args: Any = None) -> torch.Tensor:
            flat = y.reshape(-1, y.shape[-1])
            return self.known(t, y, args) + sindy.predict(flat).reshape(y.shape)

        return field
