r"""ODE-Net on scikit-learn's bundled 8x8 digits, with and without kinetic/Jacobian regularisation.

The classifier is $x \mapsto \mathrm{softmax}(W h(1))$, $h(0) = \mathrm{Linear}(x)$,
$dh/dt = \mathrm{MLP}([h, t])$: the ODE-Net of Chen et al. 2018, on the 1797 8x8 digits that
ship with scikit-learn (no download; 80/20 split by ``data_seed``). Two copies are trained
together on the same batches: a plain one (cross-entropy) and a regularised one (cross-entropy
$+ \lambda_K \int \lVert f \rVert^2 dt + \lambda_J \int \lVert \partial f/\partial h
\rVert_F^2 dt$, Finlay et al. 2020, the Frobenius norm by Hutchinson's estimator). The
regulariser makes the learned dynamics simpler, so the adaptive solver needs fewer function
evaluations at the same accuracy. Headline: test accuracy and NFE of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import DepthCat, JacobianFrobenius, KineticEnergy, NeuralODE
from . import harness, require
from ._models import mlp
from .config import ODEConfig, check, is_int
from .harness import Headline, StepOutput, ode_solver_setup
from .runfolder import read_jsonl

__all__ = ["Config", "Task", "load_digits"]


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run digits``."""

    out: Path = field(default=Path("runs/digits"), metadata={"help": "run folder"})
    epochs: int = field(default=15, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "images per step (global)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate (cosine decay)"})
    rtol: float = field(default=1e-4, metadata={"help": "relative tolerance (adaptive methods)"})
    atol: float = field(default=1e-5, metadata={"help": "absolute tolerance (adaptive methods)"})
    width: int = field(default=32, metadata={"help": "dimension of the ODE state"})
    hidden: int = field(default=64, metadata={"help": "hidden width of the vector field"})
    kinetic: float = field(default=0.05, metadata={"help": "weight of the kinetic energy"})
    jacobian: float = field(default=0.05, metadata={"help": "weight of the Jacobian norm"})
    data_seed: int = field(default=0, metadata={"help": "seed of the train/test split"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("width", "hidden"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        for key in ("kinetic", "jacobian"):
            v = getattr(self, key)
            check(isinstance(v, float) and v >= 0, key, "a number >= 0", v)
        check(
            is_int(self.data_seed) and self.data_seed >= 0,
            "data_seed",
            "an int >= 0",
            self.data_seed,
        )


def load_digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 8x8 digits scaled to [0, 1], split 80/20: ``x_train (n, 64)``,
    ``y_train (n,)``, ``x_test``, ``y_test``."""
    datasets = require("sklearn.datasets", "scikit-learn", "digits")
    data = datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[te], y[te]


class Task(harness.Task):
    name = "digits"
    title = "ODE-Net on 8x8 digits, plain vs kinetic + Jacobian regularised"
    paper = (
        "Chen et al. 2018, Neural ODEs (ODE-Net); Finlay, Jacobsen, Nurbekyan, Oberman 2020, "
        "How to train your neural ODE"
    )
    Config = Config

    MODELS = ("plain", "regularised")

    def setup(self) -> nn.Module:
        cfg = self.config
        self.x, self.y, self.x_test, self.y_test = (
            v.to(self.device) for v in load_digits(cfg.data_seed)
        )
        solver, controller, dt0 = ode_solver_setup(cfg)
        w = cfg.width
        models, self.train_odes, self.eval_odes = {}, {}, {}
        for key in self.MODELS:
            field_ = DepthCat(mlp([w + 1, cfg.hidden, cfg.hidden, w]), dim=1)
            regs = [KineticEnergy(), JacobianFrobenius()] if key == "regularised" else []
            kw: dict[str, Any] = dict(solver=solver, controller=controller, dt0=dt0)
            self.train_odes[key] = NeuralODE(field_, regularisers=regs, **kw)
            # The same field without the running costs: the test-time solve of both models.
            self.eval_odes[key] = NeuralODE(field_, **kw)
            models[key] = nn.ModuleDict(
                {
                    "embed": nn.Linear(64, w),
                    "ode": self.train_odes[key],
                    "readout": nn.Linear(w, 10),
                }
            )
        return nn.ModuleDict(models)

    def _forward(self, model: Any, key: str, x: torch.Tensor, train: bool) -> torch.Tensor:
        ode = self.train_odes[key] if train else self.eval_odes[key]
        return model[key]["readout"](ode(model[key]["embed"](x)))

    def nfe(self, key: str, train: bool = True) -> int:
        ode = self.train_odes[key] if train else self.eval_odes[key]
        return int(ode.last_stats["num_fevals"])

    @property
    def num_train(self) -> int:
        return len(self.x)

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        index = index.to(self.device)
        x, y = self.x[index], self.y[index]
        cfg = self.config
        ce = nn.functional.cross_entropy
        loss_plain = ce(self._forward(model, "plain", x, True), y, reduction="none")
        loss_reg = ce(self._forward(model, "regularised", x, True), y, reduction="none")
        # Batch means of the running costs, spread over the samples: their sum over a shard is
        # the shard's sum, so the global-batch average stays right under torchrun.
        reg = self.train_odes["regularised"].regularisation
        ones = torch.ones_like(loss_reg)
        kin, jac = reg["kinetic_energy"] * ones, reg["jacobian_frobenius"] * ones
        nfe = {f"nfe_{k}": self.nfe(k) for k in self.MODELS}
        loss = loss_plain + loss_reg + cfg.kinetic * kin + cfg.jacobian * jac
        logs = {"ce_plain": loss_plain, "ce_regularised": loss_reg, "kinetic": kin, "jacobian": jac}
        return StepOutput(loss, logs, {"nfe": sum(nfe.values()), **nfe})

    def evaluate(self, model: Any) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        with torch.no_grad():
            for key in self.MODELS:
                logits = self._forward(model, key, self.x_test, False)
                metrics[key] = {
                    "test_accuracy": float((logits.argmax(-1) == self.y_test).float().mean()),
                    "test_nfe": self.nfe(key, False),
                }
                if key == "plain":
                    self.logits = logits
        return metrics

    #: The largest accuracy drop that counts as "keeps the accuracy".
    SAME_ACCURACY = 0.01

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        p, r = metrics["plain"], metrics["regularised"]
        drop = p["test_accuracy"] - r["test_accuracy"]
        if drop <= cls.SAME_ACCURACY:
            acc = f"yes: {drop:+.1%} (a drop of at most {cls.SAME_ACCURACY:.0%} counts as kept)"
        else:
            acc = f"no: the regularised model is {drop:.1%} less accurate"
        nfe = (
            f"yes: {1 - r['test_nfe'] / p['test_nfe']:.0%} fewer"
            if r["test_nfe"] < p["test_nfe"]
            else "no: the regularised model needs no fewer function evaluations"
        )
        return [
            Headline(
                "test accuracy, plain vs regularised",
                f"{p['test_accuracy']:.1%} vs {r['test_accuracy']:.1%}",
                "regularisation keeps the accuracy (Finlay et al. 2020, Table 1)",
                acc,
            ),
            Headline(
                "forward NFE on the test set, plain vs regularised",
                f"{p['test_nfe']} vs {r['test_nfe']}",
                "kinetic + Jacobian regularisation needs fewer function evaluations "
                "(Finlay et al. 2020, Table 1)",
                nfe,
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        fig = new_figure(13, 4.2)
        ax_img, ax_nfe, ax_ce = fig.subplots(1, 3)
        # A mosaic of test digits with the plain model's prediction.
        pred = self.logits.argmax(-1).cpu()
        imgs = self.x_test[:24].cpu().reshape(-1, 8, 8)
        mosaic = torch.ones(3 * 9, 8 * 9)
        for i, img in enumerate(imgs):
            r, c = divmod(i, 8)
            mosaic[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = 1 - img
        ax_img.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1)
        for i in range(len(imgs)):
            r, c = divmod(i, 8)
            ok = int(pred[i]) == int(self.y_test[i])
            ax_img.text(
                c * 9 + 6.5,
                r * 9 + 1.5,
                str(int(pred[i])),
                color="tab:green" if ok else "tab:red",
                fontsize=8,
                fontweight="bold",
            )
        ax_img.set(title="test digits, plain ODE-Net's predictions", xticks=[], yticks=[])
        path = self.config.out / "metrics.jsonl"
        hist = read_jsonl(path)
        if hist:
            steps = [r["step"] for r in hist]
            for key in self.MODELS:
                ax_nfe.plot(steps, [r[f"nfe_{key}"] for r in hist], lw=1, label=key)
                ax_ce.plot(steps, [r[f"ce_{key}"] for r in hist], lw=0.8, label=key)
            ax_nfe.legend()
            ax_ce.legend()
            ax_ce.set_yscale("log")
        ev = metrics["eval"]
        ax_nfe.set(
            xlabel="step",
            ylabel="forward NFE per step",
            title=f"NFE (test: {ev['plain']['test_nfe']} vs {ev['regularised']['test_nfe']})",
        )
        ax_ce.set(xlabel="step", ylabel="cross-entropy", title="training cross-entropy")
        fig.suptitle(
            "torchnde: ODE-Net on 8x8 digits, with and without kinetic + Jacobian regularisation"
        )
        return fig
