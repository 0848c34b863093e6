"""compat_torchdiffeq: torchdiffeq's README examples, run by torchdiffeq and by
``torchnde.compat.torchdiffeq`` side by side in one process.

Each example is the same code with ``torchdiffeq`` swapped for the compat module:

* ``spiral_odeint``: the README/ode_demo spiral ``dy/dt = y**3 @ A`` with
  ``odeint(func, y0, t)`` (dopri5, 1000 save times on [0, 25]), no gradients.
* ``spiral_rk4``: the same with ``method="rk4", options=dict(step_size=0.025)``.
* ``ode_demo_train_step``: one training step of ode_demo.py (MLP on ``y**3``, batch 20
  windows of 10 times), ``odeint`` forward + backward.
* ``ode_demo_adjoint_step``: the same step with ``odeint_adjoint``.
* ``bouncing_ball_event``: ``odeint_event`` of a ball under gravity with drag until it hits
  the ground, and the gradient of the event time.

Reported per example: median wall time of each, the ratio t_torchdiffeq / t_compat (> 1:
compat is faster), and the largest difference between the two outputs.

    .venv/bin/python benchmarks/compat_torchdiffeq.py            # about 1 min
    .venv/bin/python benchmarks/compat_torchdiffeq.py --quick    # about 20 s
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before torch.
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
import torchdiffeq

import torchnde.compat.torchdiffeq as compat

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = torch.tensor([[2.0, 0.0]])
T = torch.linspace(0.0, 25.0, 1000)


class Lambda(torch.nn.Module):
    def forward(self, t, y):
        return torch.mm(y**3, A)


class ODEFunc(torch.nn.Module):
    """ode_demo.py's vector field."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2)
        )

    def forward(self, t, y):
        return self.net(y**3)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        true_y = torchdiffeq.odeint(Lambda(), Y0, T, method="dopri5")
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 1000 - 10, (20,), generator=g)
    return true_y[s], T[:10], torch.stack([true_y[s + i] for i in range(10)], dim=0)


def examples() -> dict[str, Callable[[Any], Any]]:
    batch_y0, batch_t, batch_y = _batch()
    func = ODEFunc()

    def spiral(lib):
        with torch.no_grad():
            return lib.odeint(Lambda(), Y0, T, method="dopri5")

    def spiral_rk4(lib):
        with torch.no_grad():
            return lib.odeint(Lambda(), Y0, T, method="rk4", options=dict(step_size=0.025))

    def train(lib, adjoint: bool):
        func.zero_grad()
        solve = lib.odeint_adjoint if adjoint else lib.odeint
        pred = solve(func, batch_y0, batch_t)
        loss = (pred - batch_y).abs().mean()
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in func.parameters()])

    def ball(lib):
        drag = torch.tensor(0.05, requires_grad=True)

        def f(t, y):
            return torch.stack([y[1], -9.81 - drag * y[1] * y[1].abs()])

        t_ev, ys = lib.odeint_event(
            f,
            torch.tensor([10.0, 0.0]),
            torch.tensor(0.0),
            event_fn=lambda t, y: y[0],
            rtol=1e-8,
            atol=1e-8,
        )
        (g,) = torch.autograd.grad(t_ev, drag)
        return torch.cat([t_ev.reshape(1).detach(), ys[-1].detach(), g.reshape(1)])

    return {
        "spiral_odeint": spiral,
        "spiral_rk4": spiral_rk4,
        "ode_demo_train_step": lambda lib: train(lib, False),
        "ode_demo_adjoint_step": lambda lib: train(lib, True),
        "bouncing_ball_event": ball,
    }


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchdiffeq,compat")
    p.add_argument("--quick", action="store_true", help="shorter timing budget")
    p.add_argument("--target-s", type=float, default=None)
    args = p.parse_args()
    set_threads(args.threads)
    target = args.target_s if args.target_s is not None else (0.3 if args.quick else 1.5)
    rows = []
    for name, run in examples().items():
        out_a, out_b = run(torchdiffeq), run(compat)  # warm-up and outputs
        diff = float((out_a.detach() - out_b.detach()).abs().max())
        res = time_interleaved(
            {"torchdiffeq": lambda r=run: r(torchdiffeq), "compat": lambda r=run: r(compat)},
            min_rounds=3 if args.quick else 5,
            target_s=target,
        )
        a, b = res["torchdiffeq"], res["compat"]
        rows.append(
            {
                "example": name,
                "torchdiffeq_s": a["median"],
                "compat_s": b["median"],
                "ratio": a["median"] / b["median"],
                "ratio_cpu": a["cpu_median"] / b["cpu_median"],
                "max_abs_diff": diff,
                "timings": res,
            }
        )
        print(
            f"{name:24s} torchdiffeq {a['median'] * 1e3:9.2f} ms  compat {b['median'] * 1e3:9.2f} "
            f"ms  ratio {a['median'] / b['median']:5.2f}  diff {diff:.1e}",
            flush=True,
        )
    cols = [
        ("example", "example", "s"),
        ("torchdiffeq_s", "torchdiffeq (ms)", "ms"),
        ("compat_s", "compat (ms)", "ms"),
        ("ratio", "t_torchdiffeq / t_compat", "x"),
        ("ratio_cpu", "same, CPU time", "x"),
        ("max_abs_diff", "max abs diff", "e"),
    ]
    print()
    print(markdown_table(rows, cols))
    path = write_json("compat_torchdiffeq", {"machine": machine_info(), "rows": rows}, out=args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
