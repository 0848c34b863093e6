r"""Semi-supervised node classification on a k-nearest-neighbour graph of scikit-learn's digits:
GRAND and a GCN-based graph neural ODE against a GCN of the same width, 10 labels per class.

The graph (:func:`torchnde.data.load_digits_knn`) joins each of the 1797 8x8 digits to its
``k`` nearest neighbours in pixel space; 10 images per class are labelled (GRAND's few-label
protocol, adapted from the Planetoid splits of its citation graphs), 200 are held out for
validation and the rest are the test set. Three models of the same hidden width are trained
full-batch on the same steps (one step per epoch, the labelled nodes the "samples"):

- GCN (Kipf & Welling 2017): ``GCNConv(64, h) -> ReLU -> dropout -> GCNConv(h, 10)``;
- GRAND-l (Chamberlain et al. 2021): ``Linear(64, h)``, attention diffusion
  $\dot X = (A(X_0) - I)X$ to ``grand_t1``, ``Linear(h, 10)``;
- GDE (Poli et al. 2020): ``Linear(64, h)``, $\dot X = \mathrm{GCN}(\tanh(\mathrm{GCN}(X)))$ to
  ``gde_t1``, ``Linear(h, 10)``.

FDGNN (Gallicchio & Micheli 2020) is evaluated beside them, untrained reservoirs with a ridge
readout on the labelled nodes. Headline: test accuracy of GRAND and of the GDE against the GCN.
``full=true``: width 64 and 400 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..graphs import FDGNN, GDE, GRAND, GCNConv, GraphVectorField
from . import harness, require
from .config import ODEConfig, check, is_int
from .harness import Headline, StepOutput, ode_solver_setup
from .runfolder import read_jsonl

__all__ = ["GCN", "Config", "Task"]

#: The ODE solvers an experiment config accepts (those of ODEConfig).
ODE_METHODS = next(f for f in fields(ODEConfig) if f.name == "method").metadata["choices"]


@dataclass
class Config(ODEConfig):
    """Options of ``torchnde run graph-digits``."""

    out: Path = field(default=Path("runs/graph-digits"), metadata={"help": "run folder"})
    epochs: int = field(default=150, metadata={"help": "full-batch training steps"})
    batch_size: int = field(default=100, metadata={"help": "labelled nodes per step (all)"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (cosine decay)"})
    checkpoint_every: int = field(default=50, metadata={"help": "checkpoint every N epochs"})
    method: str = field(
        default="rk4",
        metadata={"help": "ODE solver of GRAND and the GDE", "choices": ODE_METHODS},
    )
    step_size: float = field(default=0.25, metadata={"help": "step of fixed-step methods"})
    hidden: int = field(default=32, metadata={"help": "hidden width of all three models"})
    k: int = field(default=10, metadata={"help": "neighbours per image in the kNN graph"})
    labels_per_class: int = field(default=10, metadata={"help": "labelled nodes per class"})
    num_val: int = field(default=200, metadata={"help": "validation nodes"})
    grand_t1: float = field(default=3.0, metadata={"help": "GRAND's diffusion time"})
    gde_t1: float = field(default=1.0, metadata={"help": "the GDE's integration time"})
    dropout: float = field(default=0.5, metadata={"help": "dropout on the input features"})
    weight_decay: float = field(default=5e-4, metadata={"help": "Adam weight decay"})
    fdgnn_units: int = field(default=64, metadata={"help": "units per FDGNN reservoir layer"})
    data_seed: int = field(default=0, metadata={"help": "seed of the labelled/test split"})
    full: bool = field(default=False, metadata={"help": "larger scale: width 64, 400 epochs"})

    def __post_init__(self) -> None:
        if self.full:
            if self.epochs == 150:
                self.epochs = 400
            if self.hidden == 32:
                self.hidden = 64
        super().__post_init__()
        for key in ("hidden", "k", "labels_per_class", "fdgnn_units"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, "an int >= 1", v)
        check(is_int(self.num_val) and self.num_val >= 0, "num_val", "an int >= 0", self.num_val)
        for key in ("grand_t1", "gde_t1"):
            v = getattr(self, key)
            check(isinstance(v, float) and v > 0, key, "a positive number", v)
        check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)


class GCN(nn.Module):
    """The two-layer GCN baseline of Kipf & Welling (2017)."""

    def __init__(self, graph: Any, in_features: int, hidden: int, out: int, dropout: float):
        super().__init__()
        self.graph = graph
        self.conv1, self.conv2 = GCNConv(in_features, hidden), GCNConv(hidden, out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(self.dropout(x), self.graph))
        return self.conv2(self.dropout(h), self.graph)


class GCNODE(nn.Module):
    """Encoder, a GDE with a two-layer GCN vector field, decoder."""

    def __init__(self, graph: Any, in_features: int, hidden: int, out: int, t1: float,
                 dropout: float, solve: dict[str, Any]) -> None:  # fmt: skip
        super().__init__()
        self.encoder, self.decoder = nn.Linear(in_features, hidden), nn.Linear(hidden, out)
        field_ = GraphVectorField([GCNConv(hidden, hidden), GCNConv(hidden, hidden)], graph)
        self.gde = GDE(field_, t1, **solve)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.gde(self.encoder(self.dropout(x))))


class Task(harness.Task):
    name = "graph-digits"
    title = "GRAND and a graph neural ODE vs a GCN on a kNN graph of digits, 10 labels per class"
    paper = (
        "Chamberlain et al. 2021, GRAND: Graph Neural Diffusion; Poli et al. 2020, Graph "
        "Neural Ordinary Differential Equations"
    )
    Config = Config

    MODELS = ("grand", "gde", "gcn")

    def setup(self) -> nn.Module:
        require("sklearn.datasets", "scikit-learn", self.name)
        from ..data.graphs import load_digits_knn

        cfg = self.config
        data = load_digits_knn(cfg.k, cfg.labels_per_class, cfg.num_val, cfg.data_seed)
        self.data = data
        self.graph = data.graph.to(self.device)
        self.x, self.y = data.x.to(self.device), data.y.to(self.device)
        self.train_idx = torch.nonzero(data.train_mask).flatten().to(self.device)
        solver, controller, dt0 = ode_solver_setup(cfg)
        solve = dict(solver=solver, controller=controller, dt0=dt0)
        h, c = cfg.hidden, data.num_classes
        return nn.ModuleDict(
            {
                "grand": GRAND(self.graph, 64, h, c, cfg.grand_t1, dropout=cfg.dropout, **solve),
                "gde": GCNODE(self.graph, 64, h, c, cfg.gde_t1, cfg.dropout, solve),
                "gcn": GCN(self.graph, 64, h, c, cfg.dropout),
            }
        )

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    @property
    def num_train(self) -> int:
        return len(self.train_idx)

    def _nfe(self, model: Any) -> dict[str, float]:
        return {
            "nfe_grand": float(model["grand"].last_stats["num_fevals"]),
            "nfe_gde": float(model["gde"].gde.last_stats["num_fevals"]),
        }

    def step(self, model: Any, index: torch.Tensor) -> StepOutput:
        nodes = self.train_idx[index.to(self.device)]
        ce = nn.functional.cross_entropy
        losses = {k: ce(model[k](self.x)[nodes], self.y[nodes], reduction="none")
                  for k in self.MODELS}  # fmt: skip
        nfe = self._nfe(model)
        return StepOutput(
            sum(losses.values()),  # type: ignore[arg-type]
            {f"ce_{k}": v for k, v in losses.items()},
            {"nfe": nfe["nfe_grand"] + nfe["nfe_gde"], **nfe},
        )

    def evaluate(self, model: Any) -> dict[str, Any]:
        cfg, d = self.config, self.data
        test, val = d.test_mask.to(self.device), d.val_mask.to(self.device)
        metrics: dict[str, Any] = {}
        with torch.no_grad():
            for key in self.MODELS:
                pred = model[key](self.x).argmax(-1)
                metrics[f"{key}_test_accuracy"] = float((pred[test] == self.y[test]).float().mean())
                if cfg.num_val:
                    metrics[f"{key}_val_accuracy"] = float(
                        (pred[val] == self.y[val]).float().mean()
                    )
            metrics.update({f"test_{k}": v for k, v in self._nfe(model).items()})
            fd = FDGNN(64, cfg.fdgnn_units, 2, seed=cfg.seed)
            z = fd.embed(self.x, self.graph)
            fd.fit(z[self.train_idx], self.y[self.train_idx])
            pred = fd.readout(z).argmax(-1)  # type: ignore[misc]
            metrics["fdgnn_test_accuracy"] = float((pred[test] == self.y[test]).float().mean())
        metrics["num_nodes"], metrics["num_edges"] = self.graph.num_nodes, self.graph.num_edges
        metrics["num_labelled"] = len(self.train_idx)
        metrics["parameters"] = {
            k: sum(p.numel() for p in model[k].parameters()) for k in self.MODELS
        }
        return metrics

    #: The largest accuracy deficit against the GCN that still counts as "matches".
    MATCH = 0.01

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        gcn = metrics["gcn_test_accuracy"]

        def verdict(acc: float, who: str) -> str:
            diff = acc - gcn
            if diff >= -cls.MATCH:
                return (
                    f"yes (criterion: at most {cls.MATCH:.0%} below the GCN): {who} is "
                    f"{diff:+.1%} against the GCN, one seed and one split"
                )
            return f"no: {who} is {-diff:.1%} below the GCN (criterion {cls.MATCH:.0%})"

        return [
            Headline(
                "test accuracy, GRAND vs GCN (10 labels per class)",
                f"{metrics['grand_test_accuracy']:.1%} vs {gcn:.1%}",
                "GRAND matches or beats GCN on citation graphs with few labels "
                "(Chamberlain et al. 2021, Table 2)",
                verdict(metrics["grand_test_accuracy"], "GRAND"),
            ),
            Headline(
                "test accuracy, GDE vs GCN (10 labels per class)",
                f"{metrics['gde_test_accuracy']:.1%} vs {gcn:.1%}",
                "a GCN-based graph neural ODE matches or beats the GCN on citation graphs "
                "(Poli et al. 2020, Table 1)",
                verdict(metrics["gde_test_accuracy"], "the GDE"),
            ),
        ]

    def figure(self, model: Any, metrics: dict[str, Any]) -> Any:
        from .report import new_figure

        ev = metrics["eval"]
        fig = new_figure(11, 4.2)
        ax_acc, ax_ce = fig.subplots(1, 2)
        names = [*self.MODELS, "fdgnn"]
        accs = [ev[f"{k}_test_accuracy"] for k in names]
        ax_acc.bar(names, accs, color=["tab:blue", "tab:orange", "tab:gray", "tab:green"])
        for i, a in enumerate(accs):
            ax_acc.text(i, a + 0.01, f"{a:.1%}", ha="center", fontsize=9)
        ax_acc.set(ylim=(0, 1.08), ylabel="test accuracy", title="test accuracy (10 labels/class)")
        hist = read_jsonl(self.config.out / "metrics.jsonl")
        if hist:
            steps = [r["step"] for r in hist]
            for key in self.MODELS:
                ax_ce.plot(steps, [r[f"ce_{key}"] for r in hist], lw=1, label=key)
            ax_ce.legend()
            ax_ce.set_yscale("log")
        ax_ce.set(xlabel="step", ylabel="cross-entropy", title="training cross-entropy")
        fig.suptitle("torchnde: GRAND and GDE vs GCN on a kNN graph of 8x8 digits")
        return fig
