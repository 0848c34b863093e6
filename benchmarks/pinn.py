"""PINN training steps: torchnde.pinn against neurodiffeq and a plain-PyTorch reimplementation.

One training step = trial solution through the condition, residual by autograd, mean squared
residual, backward, Adam step, on the same network (copies of one initialisation) and the
same fixed collocation points:

- ODE: damped oscillator x'' + 0.4 x' + 4 x = 0 with x(0) = 1, x'(0) = 0 (IVP with a
  derivative condition), 256 points on [0, 5], FCNN 1-32-32-1 tanh;
- PDE: 2-D Poisson with Dirichlet values on the four edges (DirichletBVP2D), 32 x 32 points,
  FCNN 2-32-32-1 tanh; torchnde also with the Laplacian by ``torch.func``
  (``vmap(jacfwd(jacrev))``) instead of autograd on the batch.

neurodiffeq's step is ``Solver._run_epoch("train")`` (one batch, what ``fit`` runs per epoch
before validation); the plain-PyTorch step is the same mathematics written inline (the floor
of what any library can do). The losses of the first step are checked equal before timing.

    PYTHONPATH=src .venv/bin/python benchmarks/pinn.py       # about a minute on one core
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    markdown_table,
    set_threads,
    time_interleaved,
    write_json,
)

# isort: split
import torch
from torch import nn

from torchnde import pinn

ZW, W2 = 0.4, 4.0


def _net(d_in: int) -> nn.Module:
    torch.manual_seed(0)
    return pinn.FCNN(d_in, 1, (32, 32))


def _g(x: torch.Tensor) -> torch.Tensor:  # edge values of the Poisson case
    return torch.sin(math.pi * x)


def _source(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x) * (x - 2 + y**3 + 6 * y)


def _steps_ode(points: torch.Tensor) -> tuple[dict[str, Callable[[], float]], str]:
    base = _net(1)
    ours_net, nde_net, plain_net = (copy.deepcopy(base) for _ in range(3))
    fns: dict[str, Callable[[], float]] = {}

    solver = pinn.Solver1D(
        lambda x, t: [pinn.diff(x, t, 2) + ZW * pinn.diff(x, t) + W2 * x],
        [pinn.IVP(0.0, 1.0, 0.0)],
        0.0,
        5.0,
        nets=[ours_net],
        train_generator=pinn.PredefinedGenerator(points),
    )
    opt = torch.optim.Adam(solver.parameters(), lr=1e-3)
    fns["torchnde"] = lambda: solver.train_step(opt)

    t = points.reshape(-1, 1)
    popt = torch.optim.Adam(plain_net.parameters(), lr=1e-3)

    def plain() -> float:
        popt.zero_grad()
        tt = t.detach().requires_grad_(True)
        e = 1 - torch.exp(-tt)
        x = 1.0 + e**2 * plain_net(tt)
        (dx,) = torch.autograd.grad(x.sum(), tt, create_graph=True)
        (ddx,) = torch.autograd.grad(dx.sum(), tt, create_graph=True)
        loss = (ddx + ZW * dx + W2 * x).pow(2).mean()
        loss.backward()
        popt.step()
        return float(loss.detach())

    fns["plain"] = plain
    try:
        from neurodiffeq import diff as ndiff
        from neurodiffeq.conditions import IVP as NIVP
        from neurodiffeq.generators import PredefinedGenerator as NPre
        from neurodiffeq.solvers import Solver1D as NSolver1D

        nde = NSolver1D(
            lambda x, t: [ndiff(x, t, order=2) + ZW * ndiff(x, t) + W2 * x],
            [NIVP(0.0, 1.0, 0.0)],
            t_min=0.0,
            t_max=5.0,
            nets=[nde_net],
            train_generator=NPre(points.clone()),
            valid_generator=NPre(points.clone()),
            optimizer=torch.optim.Adam(nde_net.parameters(), lr=1e-3),
            n_batches_valid=0,
        )

        def nde_step() -> float:
            nde._run_epoch("train")
            return float(nde.metrics_history["train_loss"][-1])

        fns["neurodiffeq"] = nde_step
    except ImportError:
        pass
    return fns, "ODE: damped oscillator, IVP with x'(0), 256 points, FCNN 32x32"


def _steps_pde(n: int) -> tuple[dict[str, Callable[[], float]], str]:
    g = torch.linspace(0, 1, n)
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    xs, ys = gx.reshape(-1), gy.reshape(-1)
    base = _net(2)
    nets = {k: copy.deepcopy(base) for k in ("torchnde", "func", "plain", "neurodiffeq")}
    zero = torch.zeros_like

    def cond() -> pinn.DirichletBVP2D:
        return pinn.DirichletBVP2D(0.0, zero, 1.0, zero, 0.0, zero, 1.0, _g)

    fns: dict[str, Callable[[], float]] = {}
    solver = pinn.Solver2D(
        lambda u, x, y: [pinn.diff(u, x, 2) + pinn.diff(u, y, 2) - _source(x, y)],
        [cond()],
        (0.0, 0.0),
        (1.0, 1.0),
        nets=[nets["torchnde"]],
        train_generator=pinn.PredefinedGenerator(xs, ys),
    )
    opt = torch.optim.Adam(solver.parameters(), lr=1e-3)
    fns["torchnde"] = lambda: solver.train_step(opt)

    fsolver = pinn.Solver2D(
        lambda u, x, y: [u],
        [cond()],
        (0.0, 0.0),
        (1.0, 1.0),
        nets=[nets["func"]],
        train_generator=pinn.PredefinedGenerator(xs, ys),
    )
    fopt = torch.optim.Adam(fsolver.parameters(), lr=1e-3)
    pts = torch.stack([xs, ys], 1)
    trial = fsolver.trial_function(0)

    def func_step() -> float:
        fopt.zero_grad()
        loss = (pinn.laplacian(trial, pts) - _source(pts[:, 0], pts[:, 1])).pow(2).mean()
        loss.backward()
        fopt.step()
        return float(loss.detach())

    fns["torchnde (torch.func)"] = func_step

    pnet = nets["plain"]
    popt = torch.optim.Adam(pnet.parameters(), lr=1e-3)
    x0c, y0c = xs.reshape(-1, 1), ys.reshape(-1, 1)

    def plain() -> float:
        popt.zero_grad()
        x = x0c.detach().requires_grad_(True)
        y = y0c.detach().requires_grad_(True)
        # zero edges except y = 1 (sin pi x): Coons interpolation reduces to y * (g(x) - x g(1)
        # - (1 - x) g(0)) with g(0) = g(1) = 0 (up to rounding)
        g1 = _g(x) - ((1 - x) * _g(torch.zeros_like(x)) + x * _g(torch.ones_like(x)))
        u = y * g1 + x * (1 - x) * y * (1 - y) * pnet(torch.cat([x, y], 1))
        (ux,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        (uxx,) = torch.autograd.grad(ux.sum(), x, create_graph=True)
        (uy,) = torch.autograd.grad(u.sum(), y, create_graph=True)
        (uyy,) = torch.autograd.grad(uy.sum(), y, create_graph=True)
        loss = (uxx + uyy - _source(x, y)).pow(2).mean()
        loss.backward()
        popt.step()
        return float(loss.detach())

    fns["plain"] = plain
    try:
        from neurodiffeq import diff as ndiff
        from neurodiffeq.conditions import DirichletBVP2D as NBVP
        from neurodiffeq.generators import PredefinedGenerator as NPre
        from neurodiffeq.solvers import Solver2D as NSolver2D

        nnet = nets["neurodiffeq"]
        nde = NSolver2D(
            lambda u, x, y: [ndiff(u, x, order=2) + ndiff(u, y, order=2) - _source(x, y)],
            [NBVP(0.0, zero, 1.0, zero, 0.0, zero, 1.0, _g)],
            xy_min=(0.0, 0.0),
            xy_max=(1.0, 1.0),
            nets=[nnet],
            train_generator=NPre(xs.clone(), ys.clone()),
            valid_generator=NPre(xs.clone(), ys.clone()),
            optimizer=torch.optim.Adam(nnet.parameters(), lr=1e-3),
            n_batches_valid=0,
        )

        def nde_step() -> float:
            nde._run_epoch("train")
            return float(nde.metrics_history["train_loss"][-1])

        fns["neurodiffeq"] = nde_step
    except ImportError:
        pass
    return fns, f"PDE: 2-D Poisson, DirichletBVP2D, {n}x{n} points, FCNN 32x32"


def _case(fns: dict[str, Callable[[], float]], label: str, target_s: float) -> list[dict[str, Any]]:
    first = {k: fn() for k, fn in fns.items()}  # same first loss = same problem, net, points
    res = time_interleaved(fns, target_s=target_s)
    ref = "neurodiffeq" if "neurodiffeq" in fns else "plain"
    rows = []
    for k in fns:
        rows.append(
            {
                "case": label,
                "impl": k,
                "ms": res[k]["median"],
                "cpu_ms": res[k]["cpu_median"],
                f"ratio_vs_{ref}": res[k]["median"] / res[ref]["median"],
                "first_loss": first[k],
            }
        )
    return rows


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchnde,neurodiffeq")
    p.add_argument("--target-s", type=float, default=1.0, help="seconds per timed function")
    a = p.parse_args()
    set_threads(a.threads)
    try:
        import neurodiffeq

        version = getattr(neurodiffeq, "__version__", "?")
    except ImportError:
        version = None
    rows = _case(*_steps_ode(torch.linspace(0, 5, 256)), a.target_s)
    rows += _case(*_steps_pde(32), a.target_s)
    out = write_json(
        "pinn", {"machine": machine_info(), "neurodiffeq": version, "timing": rows}, a.out
    )
    ratio = "ratio_vs_neurodiffeq" if version else "ratio_vs_plain"
    print(f"neurodiffeq: {version or 'not installed (plain-PyTorch reference only)'}")
    cols = [("case", "case", "s"), ("impl", "implementation", "s"), ("ms", "ms / step", "ms"),
            ("cpu_ms", "CPU ms", "ms"), (ratio, "time ratio", "x"),
            ("first_loss", "first loss", "e")]  # fmt: skip
    print(markdown_table(rows, cols))
    print(out)


if __name__ == "__main__":
    main()
