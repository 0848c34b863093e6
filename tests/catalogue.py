"""The one list of solvers and adjoints that the test matrices are generated from.

Every solver class exported by ``torchnde`` is either an entry of :data:`SOLVERS` (with its
kind and capabilities, declared here, not probed) or one of the :data:`BASES` exported for
users to build their own methods; ``tests/test_gradient_matrix.py`` checks that and fails
when a new solver is exported without being registered. Every exported adjoint is in
:data:`ADJOINTS`.

To register a solver: add one ``Solver(...)`` line. ``kind`` says which problem the
matrices give it (``state="array"``: a (2, 2) tensor state; ``"partitioned"``: a ``(q, p)``
tuple of a separable Hamiltonian system; SDE solvers an SDE on a fixed Brownian sample);
``representative=True`` puts it in the default (fast) run, the others run under
``@pytest.mark.slow``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torchnde as tn


class Kind(enum.Enum):
    EXPLICIT_RK = "explicit Runge-Kutta"
    IMPLICIT = "implicit (ESDIRK, collocation, Rosenbrock)"
    MULTISTEP = "multistep (Adams)"
    SWITCHING = "stiffness switching"
    REVERSIBLE = "algebraically reversible"
    SYMPLECTIC = "symplectic (partitioned state)"
    SDE = "SDE"


@dataclass(frozen=True)
class Solver:
    cls: type
    kind: Kind
    adaptive: bool
    #: whether ReversibleAdjoint applies (an AbstractReversibleSolver)
    reversible: bool = False
    #: SDE solvers: the calculus of the SDE they solve, the noise type the matrices give
    #: them, and the Lévy area they need from the Brownian motion
    calculus: str | None = None
    noise: str | None = None
    levy_area: str | None = None
    #: in the default test run (a few per kind); the rest run with ``-m slow``
    representative: bool = False
    #: the engine within a kind (implicit: "esdirk", "diagonal", "collocation",
    #: "rosenbrock", "radau5"), for the test files of one engine
    family: str | None = None
    kwargs: dict = field(default_factory=dict)
    #: extra constructor arguments under which DirectAdjoint differentiates the computed
    #: solution exactly (ESDIRKs hold the Newton Jacobian constant, so their gradient is exact
    #: only to the Newton tolerance, which by default follows the step-size controller's)
    exact_gradient_kwargs: dict = field(default_factory=dict)

    def make(self, *, exact_gradient: bool = False) -> Any:
        extra = self.exact_gradient_kwargs if exact_gradient else {}
        return self.cls(**self.kwargs, **extra)

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def state(self) -> str:
        if self.kind is Kind.SYMPLECTIC:
            return "partitioned"
        if self.kind is Kind.SDE:
            return "sde"
        return "array"


E, IMP, M, S = Kind.EXPLICIT_RK, Kind.IMPLICIT, Kind.MULTISTEP, Kind.SDE
# Newton converged to rounding for the finite-difference checks: at 1e-12 the number of Newton
# iterations can change under a 1e-6 perturbation, a 1e-9 kink in the computed solution that
# makes central differences at 1e-6 off by 1e-3 (Trapezoid + terminal event, once the first
# step follows Hairer's formula); at 1e-14 they agree with the gradient to 1e-10.
NEWTON = dict(exact_gradient_kwargs=dict(newton_rtol=1e-14, newton_atol=1e-14))
ESDIRK, DIAG, COLL = dict(family="esdirk"), dict(family="diagonal"), dict(family="collocation")
ROS = dict(family="rosenbrock")

SOLVERS: list[Solver] = [
    Solver(tn.Euler, E, adaptive=False, representative=True),
    Solver(tn.Midpoint, E, adaptive=False, representative=True),  # Hermite dense output
    Solver(tn.Heun, E, adaptive=True),
    Solver(tn.Ralston, E, adaptive=False),
    Solver(tn.RK4, E, adaptive=False, representative=True),
    Solver(tn.RK38, E, adaptive=False),
    Solver(tn.Bosh3, E, adaptive=True),
    Solver(tn.Fehlberg2, E, adaptive=True),
    Solver(tn.Dopri5, E, adaptive=True),
    Solver(tn.Tsit5, E, adaptive=True, representative=True),
    Solver(tn.Dopri8, E, adaptive=True),
    Solver(tn.ImplicitEuler, IMP, adaptive=True, **NEWTON, **ESDIRK),
    Solver(tn.Trapezoid, IMP, adaptive=True, **NEWTON, **ESDIRK),
    Solver(tn.Kvaerno3, IMP, adaptive=True, **NEWTON, **ESDIRK, representative=True),
    Solver(tn.Kvaerno4, IMP, adaptive=True, **NEWTON, **ESDIRK),
    Solver(tn.Kvaerno5, IMP, adaptive=True, **NEWTON, **ESDIRK),
    Solver(tn.SDIRK2, IMP, adaptive=True, **NEWTON, **DIAG),
    Solver(tn.TRBDF2, IMP, adaptive=True, **NEWTON, **DIAG),
    Solver(tn.ImplicitMidpoint, IMP, adaptive=False, **NEWTON, **COLL),
    Solver(tn.GaussLegendre4, IMP, adaptive=False, **NEWTON, **COLL, representative=True),
    Solver(tn.GaussLegendre6, IMP, adaptive=False, **NEWTON, **COLL),
    Solver(tn.RadauIIA3, IMP, adaptive=False, **NEWTON, **COLL),
    Solver(tn.RadauIIA5, IMP, adaptive=False, **NEWTON, **COLL),
    Solver(tn.Radau5, IMP, adaptive=True, family="radau5",
           exact_gradient_kwargs=dict(newton_rtol=1e-14, newton_atol=1e-14,
                                      max_newton_iters=30)),
    Solver(tn.Ros3p, IMP, adaptive=True, **ROS),
    Solver(tn.Rodas4, IMP, adaptive=True, **ROS),
    Solver(tn.Rodas5, IMP, adaptive=True, **ROS),
    Solver(tn.Adams, M, adaptive=True, representative=True),
    Solver(tn.FixedAdams, M, adaptive=False),
    Solver(tn.AutoSwitch, Kind.SWITCHING, adaptive=True),
    Solver(tn.ReversibleHeun, Kind.REVERSIBLE, adaptive=True, reversible=True,
           representative=True),
    Solver(tn.ALF, Kind.REVERSIBLE, adaptive=False, reversible=True),
    Solver(tn.Leapfrog, Kind.SYMPLECTIC, adaptive=False, representative=True),
    Solver(tn.SemiImplicitEuler, Kind.SYMPLECTIC, adaptive=False),
    Solver(tn.Yoshida4, Kind.SYMPLECTIC, adaptive=False),
    Solver(tn.EulerMaruyama, S, adaptive=False, calculus="ito", noise="diagonal",
           representative=True),
    Solver(tn.ItoMilstein, S, adaptive=False, calculus="ito", noise="diagonal"),
    Solver(tn.SRI2, S, adaptive=False, calculus="ito", noise="diagonal",
           levy_area="space-time"),
    Solver(tn.SRA1, S, adaptive=False, calculus="ito", noise="additive",
           levy_area="space-time"),
    Solver(tn.EulerHeun, S, adaptive=False, calculus="stratonovich", noise="diagonal"),
    Solver(tn.StratonovichMilstein, S, adaptive=False, calculus="stratonovich",
           noise="diagonal"),
    Solver(tn.LogODEMidpoint, S, adaptive=False, calculus="stratonovich", noise="diagonal",
           levy_area="foster"),
]  # fmt: skip

#: Exported solver classes that are not methods but bases to build methods from.
BASES: dict[type, str] = {
    tn.AbstractSolver: "the solver contract",
    tn.AbstractReversibleSolver: "the reversible-solver contract",
    tn.AbstractImplicitSolver: "the implicit-solver contract",
    tn.AbstractSDESolver: "the SDE-solver contract",
    tn.AbstractRungeKutta: "the Runge-Kutta engine",
    tn.ExplicitRungeKutta: "a user's explicit method from a Butcher tableau",
    tn.AbstractESDIRK: "the ESDIRK engine",
    tn.AbstractRosenbrock: "the Rosenbrock engine",
}


def classes(kind: Kind, family: str | None = None) -> list[type]:
    """The catalogued solver classes of one kind (and engine family), in catalogue order:
    what a test matrix of one kind of solver parametrises over."""
    return [s.cls for s in SOLVERS if s.kind is kind and (family is None or s.family == family)]


class Exactness(enum.Enum):
    EXACT = "the derivative of the computed solution (to round-off)"
    APPROXIMATE = "the derivative of the exact solution, to the solve's accuracy"
    EQUILIBRIUM = "the derivative of an equilibrium only (final state of a long solve)"


@dataclass(frozen=True)
class Adjoint:
    cls: type
    exactness: Exactness
    #: only for solvers with ``reversible=True``
    needs_reversible: bool = False

    @property
    def name(self) -> str:
        return self.cls.__name__


ADJOINTS: list[Adjoint] = [
    Adjoint(tn.DirectAdjoint, Exactness.EXACT),
    Adjoint(tn.CheckpointAdjoint, Exactness.EXACT),
    Adjoint(tn.ReversibleAdjoint, Exactness.EXACT, needs_reversible=True),
    Adjoint(tn.BacksolveAdjoint, Exactness.APPROXIMATE),
    Adjoint(tn.InterpolatedAdjoint, Exactness.APPROXIMATE),
    Adjoint(tn.ImplicitAdjoint, Exactness.EQUILIBRIUM),
]


def exact_adjoints(solver: Solver) -> list[Adjoint]:
    return [
        a
        for a in ADJOINTS
        if a.exactness is Exactness.EXACT and (solver.reversible or not a.needs_reversible)
    ]


def approximate_adjoints() -> list[Adjoint]:
    return [a for a in ADJOINTS if a.exactness is Exactness.APPROXIMATE]
