"""Diffusion sampling and probability-flow likelihoods: torchnde against diffusers and
torchdiffeq on the same score.

The score is the exact one of an 8-component 2-D Gaussian mixture under the VP SDE
(beta 0.1 -> 20): $p_t$ is again a mixture, so every sampler is fed the same, exact "network"
(a few dozen tensor operations per call, about as costly as a small MLP) and sample quality
is measured against exact draws (unbiased MMD^2, RBF bandwidths 0.05-1).

1. Sampling throughput at equal steps: torchnde's DDIM and DPM-Solver++(2M) against
   diffusers' ``DDIMScheduler`` and ``DPMSolverMultistepScheduler`` (linear betas 1e-4 ->
   0.02 over 1000 steps, the discretisation of the same VP SDE; their noise predictor is
   the exact one at each discrete step), plus torchnde's Karras Heun and Euler-Maruyama for
   reference: samples per second, score evaluations (NFE), MMD^2.
2. Probability-flow log-likelihood of 1000 points: ``torchnde.diffusion.log_prob`` (exact
   trace, Dopri5 / Tsit5) against ``torchdiffeq.odeint`` (dopri5) on the hand-written
   augmented state (x, log p) with the trace by two vector-Jacobian products, both at
   rtol = atol = 1e-5: time, NFE and the error against the exact mixture log-density.

Run: ``python benchmarks/diffusion.py [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

_common.set_threads(1)

import torch  # noqa: E402

from torchnde import diffusion as dn  # noqa: E402
from torchnde.experiments._diffusion import mmd2  # noqa: E402

ANG = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
CENTRES = 1.5 * torch.stack([ANG.cos(), ANG.sin()], 1)
S = 0.15


def mixture_score(x: torch.Tensor, a: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """Score of sum_k N(a c_k, (a^2 s^2 + sig^2) I) / 8; ``a``, ``sig`` of shape (batch,)."""
    c = CENTRES.to(x.dtype)
    var = (a**2 * S**2 + sig**2)[:, None, None]
    diff = x[:, None, :] - a[:, None, None] * c[None]
    logw = -(diff**2).sum(-1, keepdim=True) / (2 * var)
    w = torch.softmax(logw, 1)
    return -(w * diff / var).sum(1)


def mixture_log_prob(x: torch.Tensor, a: float, sig: float) -> torch.Tensor:
    var = a * a * S * S + sig * sig
    d2 = torch.cdist(x, a * CENTRES.to(x.dtype)).pow(2)
    return torch.logsumexp(-d2 / (2 * var), 1) - math.log(2 * math.pi * var) - math.log(8)


def exact_samples(n: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=gen)
    return CENTRES[k] + S * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def sampling(n: int, steps_list: list[int], target_s: float) -> list[dict[str, Any]]:
    sde = dn.VPSDE()

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sig = sde.marginal(t)
        return mixture_score(x, a.to(x.dtype), sig.to(x.dtype))

    ref = exact_samples(2000, torch.Generator().manual_seed(1)).float()
    rows: list[dict[str, Any]] = []
    try:
        import diffusers
    except ImportError:
        diffusers = None
    for steps in steps_list:
        fns: dict[str, Any] = {}
        out: dict[str, Any] = {}

        def ours(sampler: str, steps: int = steps, out: dict[str, Any] = out) -> Any:
            def f() -> None:
                st: dict[str, Any] = {}
                g = torch.Generator().manual_seed(0)
                x = dn.sample(sde, score, (n, 2), sampler=sampler, steps=steps, generator=g,
                              stats=st)  # fmt: skip
                out[f"torchnde {sampler}"] = (x, st["nfe"])

            return f

        for s in ("ddim", "dpm_solver++", "heun"):
            fns[f"torchnde {s}"] = ours(s)
        if diffusers is not None:
            for name, cls in (
                ("diffusers DDIMScheduler", diffusers.DDIMScheduler),
                ("diffusers DPMSolverMultistepScheduler", diffusers.DPMSolverMultistepScheduler),
            ):
                # No clipping of the predicted x0 to [-1, 1] (DDIM's default): the data leave it.
                extra = {"clip_sample": False} if "DDIM" in name else {}
                sched = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                            beta_schedule="linear", **extra)  # fmt: skip
                abar = sched.alphas_cumprod

                def theirs(sched: Any = sched, abar: Any = abar, name: str = name,
                           steps: int = steps, out: dict[str, Any] = out) -> Any:  # fmt: skip
                    def f() -> None:
                        sched.set_timesteps(steps)
                        g = torch.Generator().manual_seed(0)
                        x = torch.randn(n, 2, generator=g)
                        nfe = 0
                        for t in sched.timesteps:
                            ab = abar[int(t)].expand(n)
                            a, sig = ab.sqrt(), (1 - ab).sqrt()
                            eps = -sig[:, None] * mixture_score(x, a, sig)
                            nfe += 1
                            x = sched.step(eps, t, x).prev_sample
                        out[name] = (x, nfe)

                    return f

                fns[name] = theirs()
        for warm in fns.values():
            warm()
        times = _common.time_interleaved(fns, min_rounds=3, target_s=target_s)
        for k in fns:
            x, nfe = out[k]
            rows.append({
                "steps": steps, "method": k, "nfe": nfe,
                "time_s": times[k]["median"], "samples_per_s": n / times[k]["median"],
                "mmd2": mmd2(x[:2000].double(), ref.double()),
            })  # fmt: skip
    # The 1000-step reverse SDE: the quality anchor.
    t0 = time.perf_counter()
    st: dict[str, Any] = {}
    x = dn.sample(sde, score, (n, 2), sampler="euler_maruyama", steps=1000,
                  generator=torch.Generator().manual_seed(0), stats=st)  # fmt: skip
    dt = time.perf_counter() - t0
    rows.append({"steps": 1000, "method": "torchnde euler_maruyama", "nfe": st["nfe"],
                 "time_s": dt, "samples_per_s": n / dt,
                 "mmd2": mmd2(x[:2000].double(), ref.double())})  # fmt: skip
    floor = mmd2(exact_samples(2000, torch.Generator().manual_seed(2)), ref.double())
    rows.append({"steps": 0, "method": "exact draws (floor)", "mmd2": floor})
    return rows


def likelihood(n: int, target_s: float) -> list[dict[str, Any]]:
    import torchdiffeq

    import torchnde as tn

    sde = dn.VPSDE()

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sig = sde.marginal(t)
        return mixture_score(x, a.to(x.dtype), sig.to(x.dtype))

    x = exact_samples(n, torch.Generator().manual_seed(3))
    a, sig = (float(v) for v in sde.marginal(sde.eps))
    exact = mixture_log_prob(x, a, sig)
    out: dict[str, Any] = {}
    fns: dict[str, Any] = {}
    for name, solver in (("torchnde log_prob (Dopri5)", tn.Dopri5()),
                         ("torchnde log_prob (Tsit5)", tn.Tsit5())):  # fmt: skip

        def f(name: str = name, solver: Any = solver) -> None:
            st: dict[str, Any] = {}
            with torch.no_grad():
                lp = dn.log_prob(sde, score, x, solver=solver, rtol=1e-5, atol=1e-5, stats=st)
            out[name] = (lp, st["nfe"])

        fns[name] = f

    field = dn.probability_flow(sde, score)

    def td() -> None:
        nfe = [0]

        def aug(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> Any:
            nfe[0] += 1
            with torch.enable_grad():
                y = state[0].detach().requires_grad_(True)
                dy = field(t, y)
                tr = sum(
                    torch.autograd.grad(dy[:, i].sum(), y, retain_graph=True)[0][:, i]
                    for i in range(2)
                )
            return dy.detach(), tr.detach()

        ts = torch.tensor([sde.eps, sde.T], dtype=torch.float64)
        z, delta = torchdiffeq.odeint(aug, (x, torch.zeros(n, dtype=torch.float64)), ts,
                                      rtol=1e-5, atol=1e-5, method="dopri5")  # fmt: skip
        out["torchdiffeq dopri5 + hand-written trace"] = (
            sde.prior_log_prob(z[-1]) + delta[-1],
            nfe[0],
        )

    fns["torchdiffeq dopri5 + hand-written trace"] = td
    for f in fns.values():
        f()
    times = _common.time_interleaved(fns, min_rounds=3, target_s=target_s)
    rows = []
    for k in fns:
        lp, nfe = out[k]
        rows.append({"method": k, "nfe": nfe, "time_s": times[k]["median"],
                     "max_abs_err": float((lp - exact).abs().max()),
                     "mean_err": float((lp - exact).mean())})  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    steps = [10, 20] if args.quick else [10, 20, 50]
    target = 0.2 if args.quick else 1.0
    samp = sampling(args.samples, steps, target)
    print(f"## Sampling {args.samples} 2-D points (VP SDE, exact mixture score)\n")
    print(_common.markdown_table(samp, [
        ("steps", "steps", "s"), ("method", "method", "s"), ("nfe", "NFE", "s"),
        ("time_s", "time (ms)", "ms"), ("samples_per_s", "samples/s", "g"),
        ("mmd2", "MMD^2", "e")]))  # fmt: skip
    lik = likelihood(1000, target)
    print("\n## PF-ODE log-likelihood of 1000 points (rtol = atol = 1e-5)\n")
    print(_common.markdown_table(lik, [
        ("method", "method", "s"), ("nfe", "NFE", "s"), ("time_s", "time (ms)", "ms"),
        ("max_abs_err", "max |err| (nats)", "e"), ("mean_err", "mean err", "e")]))  # fmt: skip
    payload = {"machine": _common.machine_info(), "sampling": samp, "likelihood": lik}
    path = _common.write_json("diffusion", payload, args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
