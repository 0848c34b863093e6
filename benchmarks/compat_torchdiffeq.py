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
* ``bouncing_ball_bounces`` / ``bouncing_ball_bounces_adjoint``: examples/bouncing_ball.py's
  ``get_collision_times`` (tuple state ``(pos, vel, log_radius)``, event ``pos - radius``, a
  velocity reset at each event, rtol = atol = 1e-8) for 3 bounces and the gradient of the
  last event time, with ``odeint`` and with ``odeint_adjoint``.
* ``cnf_train_step`` / ``cnf_adjoint_step``: one training step of examples/cnf.py (the
  hypernetwork CNF whose vector field computes its exact trace with autograd, tuple state
  ``(z, logp)``, t from 10 to 0, dopri5 at 1e-5, batch 128), ``odeint`` and ``odeint_adjoint``.

Reported per example: median wall time of each, the ratio t_torchdiffeq / t_compat (> 1:
compat is faster), the vector-field evaluations of each (forward + backward) and the
largest difference between the two outputs.

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


class BouncingBall(torch.nn.Module):
    """examples/bouncing_ball.py's system: a ball with a learnable radius bouncing on the
    ground, the velocity reset by a learnable restitution at each event."""

    def __init__(self, adjoint: bool) -> None:
        super().__init__()
        self.gravity = torch.nn.Parameter(torch.tensor([9.8]))
        self.log_radius = torch.nn.Parameter(torch.log(torch.tensor([0.2])))
        self.t0 = torch.nn.Parameter(torch.tensor([0.0]))
        self.init_pos = torch.nn.Parameter(torch.tensor([10.0]))
        self.init_vel = torch.nn.Parameter(torch.tensor([0.0]))
        self.absorption = torch.nn.Parameter(torch.tensor([0.2]))
        self.adjoint = adjoint
        self.nfe = 0

    def forward(self, t, state):
        self.nfe += 1
        pos, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        pos, _, log_radius = state
        return pos - torch.exp(log_radius)

    def collision_times(self, lib, nbounces: int) -> torch.Tensor:
        state = (self.init_pos, self.init_vel, self.log_radius)
        t0 = self.t0
        times = []
        for _ in range(nbounces):
            solve = lib.odeint_adjoint if self.adjoint else lib.odeint
            event_t, sol = lib.odeint_event(
                self, state, t0, event_fn=self.event_fn, reverse_time=False, atol=1e-8,
                rtol=1e-8, odeint_interface=solve,
            )  # fmt: skip
            times.append(event_t)
            pos, vel, log_radius = (s[-1] for s in sol)
            state = (pos + 1e-7 * vel, -vel * (1 - self.absorption), log_radius)
            t0 = event_t
        return torch.stack(times)


class HyperCNF(torch.nn.Module):
    """examples/cnf.py's CNF: a hypernetwork of t gives the weights of a width-``w`` layer;
    the trace of df/dz is exact (one autograd pass per dimension) inside the vector field."""

    def __init__(self, dim: int = 2, hidden: int = 32, width: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dim, self.width = dim, width
        self.fc = torch.nn.Sequential(
            torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
            torch.nn.Tanh(), torch.nn.Linear(hidden, 3 * width * dim + width),
        )  # fmt: skip
        self.nfe = 0

    def forward(self, t, states):
        self.nfe += 1
        z = states[0]
        with torch.set_grad_enabled(True):
            z.requires_grad_(True)
            p = self.fc(t.reshape(1, 1)).reshape(-1)
            wd = self.width * self.dim
            W = p[:wd].reshape(self.width, self.dim, 1)
            U = p[wd : 2 * wd].reshape(self.width, 1, self.dim)
            G = torch.sigmoid(p[2 * wd : 3 * wd].reshape(self.width, 1, self.dim))
            B = p[3 * wd :].reshape(self.width, 1, 1)
            h = torch.tanh(torch.matmul(z.unsqueeze(0).repeat(self.width, 1, 1), W) + B)
            dz = torch.matmul(h, U * G).mean(0)
            tr = sum(
                torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
                for i in range(self.dim)
            )
        return dz, -tr.reshape(-1, 1)


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

    def bounces(lib, adjoint: bool):
        system = BouncingBall(adjoint)
        times = system.collision_times(lib, 3)
        times[-1].backward()
        grads = [p.grad.reshape(-1) for p in system.parameters() if p.grad is not None]
        _NFE[lib.__name__] = system.nfe
        return torch.cat([times.detach().reshape(-1), *grads])

    cnf = HyperCNF()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(128, 2, generator=g) * 0.5 + 1.0
    logp1 = torch.zeros(128, 1)
    base = torch.distributions.MultivariateNormal(torch.zeros(2), 0.1 * torch.eye(2))

    def cnf_step(lib, adjoint: bool):
        cnf.zero_grad()
        cnf.nfe = 0
        solve = lib.odeint_adjoint if adjoint else lib.odeint
        z_t, logp_t = solve(
            cnf, (x, logp1), torch.tensor([10.0, 0.0]), atol=1e-5, rtol=1e-5, method="dopri5"
        )
        loss = -(base.log_prob(z_t[-1]) - logp_t[-1].view(-1)).mean()
        loss.backward()
        _NFE[lib.__name__] = cnf.nfe
        return torch.cat(
            [loss.detach().reshape(1)] + [p.grad.reshape(-1) for p in cnf.parameters()]
        )

    return {
        "spiral_odeint": spiral,
        "spiral_rk4": spiral_rk4,
        "ode_demo_train_step": lambda lib: train(lib, False),
        "ode_demo_adjoint_step": lambda lib: train(lib, True),
        "bouncing_ball_event": ball,
        "bouncing_ball_bounces": lambda lib: bounces(lib, False),
        "bouncing_ball_bounces_adjoint": lambda lib: bounces(lib, True),
        "cnf_train_step": lambda lib: cnf_step(lib, False),
        "cnf_adjoint_step": lambda lib: cnf_step(lib, True),
    }


# Vector-field evaluations of the last call of an example, by library (forward + backward).
_NFE: dict[str, int] = {}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchdiffeq,compat")
    p.add_argument("--quick", action="store_true", help="shorter timing budget")
    p.add_argument("--target-s", type=float, default=None)
    p.add_argument("--examples", default="", help="comma-separated subset (default: all)")
    args = p.parse_args()
    set_threads(args.threads)
    target = args.target_s if args.target_s is not None else (0.3 if args.quick else 1.5)
    rows = []
    wanted = set(filter(None, args.examples.split(",")))
    for name, run in examples().items():
        if wanted and name not in wanted:
            continue
        _NFE.clear()
        out_a = run(torchdiffeq)  # warm-up and outputs
        nfe_a = _NFE.get(torchdiffeq.__name__)
        out_b = run(compat)
        nfe_b = _NFE.get(compat.__name__)
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
                "nfe_torchdiffeq": nfe_a,
                "nfe_compat": nfe_b,
                "timings": res,
            }
        )
        print(
            f"{name:24s} torchdiffeq {a['median'] * 1e3:9.2f} ms  compat {b['median'] * 1e3:9.2f} "
            f"ms  ratio {a['median'] / b['median']:5.2f}  nfe {nfe_a} / {nfe_b}  diff {diff:.1e}",
            flush=True,
        )
    cols = [
        ("example", "example", "s"),
        ("torchdiffeq_s", "torchdiffeq (ms)", "ms"),
        ("compat_s", "compat (ms)", "ms"),
        ("ratio", "t_torchdiffeq / t_compat", "x"),
        ("ratio_cpu", "same, CPU time", "x"),
        ("nfe_torchdiffeq", "NFE torchdiffeq", "s"),
        ("nfe_compat", "NFE compat", "s"),
        ("max_abs_diff", "max abs diff", "e"),
    ]
    print()
    print(markdown_table(rows, cols))
    path = write_json("compat_torchdiffeq", {"machine": machine_info(), "rows": rows}, out=args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
