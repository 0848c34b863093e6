"""Tuple states and reverse time, as term wrappers, so the loop only sees one increasing
time axis and one tensor."""

from __future__ import annotations

from typing import Any

import torch

from .terms import AbstractTerm, MultiTerm, ODETerm

__all__ = ["StateSpec", "PackedTerm", "ReversedTerm"]


class StateSpec:
    """How a tuple of tensors is packed into one tensor and back.

    Joint stepping flattens every component completely: ``(N,)``. Per-sample stepping keeps
    the leading batch dimension: ``(batch, N)``.
    """

    def __init__(self, parts: tuple[torch.Tensor, ...], per_sample: bool) -> None:
        self.per_sample = per_sample
        lead = 1 if per_sample else 0
        self.shapes = [tuple(p.shape[lead:]) for p in parts]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]

    def pack(self, parts: Any) -> torch.Tensor:
        if self.per_sample:
            return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)
        return torch.cat([p.reshape(-1) for p in parts])

    def unpack(self, flat: torch.Tensor, lead: tuple[int, ...] | None = None) -> tuple:
        """Split the last dimension of ``flat``; leading dimensions (time, batch) are kept."""
        lead_shape = flat.shape[:-1] if lead is None else lead
        pieces = torch.split(flat, self.sizes, dim=-1)
        return tuple(p.reshape(tuple(lead_shape) + tuple(s)) for p, s in zip(pieces, self.shapes))


class PackedTerm(AbstractTerm):
    """A term on a tuple state, seen by the loop as a term on one packed tensor."""

    def __init__(self, term: AbstractTerm, spec: StateSpec) -> None:
        if not (
            isinstance(term, ODETerm)
            or (isinstance(term, MultiTerm) and all(isinstance(t, ODETerm) for t in term.terms))
        ):
            raise NotImplementedError(
                "Tuple states are supported for ODE terms; for controlled terms stack the state "
                "into one tensor."
            )
        self.term = term
        self.spec = spec

    def _pack_vf(self, vf: Any) -> torch.Tensor:
        if not isinstance(vf, (tuple, list)) or len(vf) != len(self.spec.shapes):
            raise ValueError(
                f"The vector field must return a tuple of {len(self.spec.shapes)} tensors "
                f"matching the tuple state, got {type(vf).__name__}"
                + (f" of length {len(vf)}" if isinstance(vf, (tuple, list)) else "")
                + "."
            )
        return self.spec.pack(vf)

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        parts = self.spec.unpack(y)
        vf = self.term.vf(t, parts, args)
        if isinstance(self.term, MultiTerm):
            return tuple(self._pack_vf(v) for v in vf)
        return self._pack_vf(vf)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> Any:
        return self.term.contr(t0, t1)

    def base_term(self) -> AbstractTerm:
        return self.term.base_term()

    def control_scale(self) -> float | None:
        # A MultiTerm's vector field is a tuple: no single scaled tensor.
        return self.term.control_scale() if isinstance(self.term, ODETerm) else None

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:
        self.term.check_times(t0, t1)

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        return self.term.prod(vf, control)


class ReversedTerm(AbstractTerm):
    """The same equation in ``τ = -t``, so a reverse-time solve steps forward in τ."""

    def __init__(self, term: AbstractTerm) -> None:
        self.term = term

    def vf(self, t: torch.Tensor, y: Any, args: Any) -> Any:
        return self.term.vf(-t, y, args)

    def contr(self, t0: torch.Tensor, t1: torch.Tensor) -> Any:
        return self.term.contr(-t0, -t1)

    def control_scale(self) -> float | None:
        # contr(-t0, -t1) of an ODE term is -(t1 - t0).
        c = self.term.control_scale()
        return None if c is None else -c

    def base_term(self) -> AbstractTerm:
        return self.term.base_term()

    def prod(self, vf: Any, control: Any) -> torch.Tensor:
        return self.term.prod(vf, control)
