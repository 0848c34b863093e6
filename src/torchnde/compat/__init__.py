"""Drop-in replacements for the APIs of other neural-differential-equation libraries.

Each submodule mirrors one library's public functions, signatures, defaults and method names
as a thin layer over torchnde's engine, so migrating costs one import line:

* :mod:`torchnde.compat.torchdiffeq` for ``torchdiffeq`` (``odeint``, ``odeint_adjoint``,
  ``odeint_event``, ``odeint_dense``);
* :mod:`torchnde.compat.torchsde` for ``torchsde`` (``sdeint``, ``sdeint_adjoint``, the
  Brownian motions);
* :mod:`torchnde.compat.torchcde` for ``torchcde`` (``cdeint``, interpolation coefficients and
  paths, log-signature windows).

Every option these functions accept either behaves as in the original or raises a
``NotImplementedError`` naming it. See ``docs/usage/from-*.md``.
"""
