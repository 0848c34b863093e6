"""The training loop every experiment shares: an experiment only says what is specific to it.

An experiment is a :class:`Task` subclass with a ``Config`` dataclass: it builds its data and
model (:meth:`Task.setup`), computes the per-sample objective of a batch of training indices
(:meth:`Task.step`), evaluates the trained model (:meth:`Task.evaluate`), states its headline
numbers beside the paper's (:meth:`Task.headline`) and draws its figure (:meth:`Task.figure`).
:func:`run` does the rest, identically for all of them:

- seeding; epochs of shuffled global batches (a permutation per epoch from ``(seed, epoch)``),
  sharded over the processes under ``torchrun`` and averaged by ``DistributedDataParallel``;
- Adam with a cosine learning-rate decay, then the task's optional second phase
  (:meth:`Task.refine`, e.g. L-BFGS); a progress bar with the loss, the function
  evaluations and the time per step;
- the run folder: ``config.json``, ``metrics.jsonl`` (one line per step), ``checkpoint.pt``
  (atomic, every ``checkpoint_every`` epochs, with all RNG states), ``metrics.json``,
  ``loss.png``, the experiment's figure and ``report.md``; only rank 0 writes;
- resuming from the checkpoint to the same result as an uninterrupted run.
"""

from __future__ import annotations

import abc
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from . import distributed, report
from .checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .config import ExperimentConfig, ODEConfig, describe_config
from .progress import ProgressReporter
from .runfolder import RunFolderError, RunLock, make_run_folder, read_jsonl, remove_stale_tmp

__all__ = ["Headline", "StepOutput", "Task", "TrainingError", "ode_solver_setup", "run"]

CHECKPOINT = "checkpoint.pt"


class TrainingError(RuntimeError):
    """Training diverged (a non-finite loss)."""


class Headline(NamedTuple):
    """A headline number: what it is, this run's value, the paper's claim beside it, and
    whether this run's numbers show the claim.

    ``verdict`` starts with ``yes``, ``partly`` or ``no``, states the criterion and the numbers
    it was decided on (e.g. ``"no: RNODE's likelihood is 0.15 nats worse than FFJORD's"``): a
    report must not claim what its numbers do not show.
    """

    label: str
    value: str
    paper: str
    verdict: str = ""


@dataclass
class StepOutput:
    """What :meth:`Task.step` returns for one (shard of a) batch.

    Attributes:
        loss: the objective per sample, shape ``(batch,)``; the harness minimises its mean
            over the global batch.
        logs: more per-sample values to log (their global-batch means go to ``metrics.jsonl``).
        nfe: function evaluations of this step's forward solves, by name (averaged over the
            processes); ``"nfe"`` is the one shown in the progress bar.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    nfe: dict[str, float] = field(default_factory=dict)


class Task(abc.ABC):
    """One experiment. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: the name after ``torchnde run``.
        title: a one-line title for the report.
        paper: the paper reproduced (authors, year, title).
        Config: the experiment's config dataclass.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device

    @abc.abstractmethod
    def setup(self) -> nn.Module:
        """Load the data and return the untrained model (torch is seeded before)."""

    @property
    @abc.abstractmethod
    def num_train(self) -> int:
        """The number of training examples (indices ``0 .. num_train - 1`` reach :meth:`step`)."""

    @abc.abstractmethod
    def step(self, model: nn.Module, index: torch.Tensor) -> StepOutput:
        """The per-sample objective of the training examples ``index`` (a CPU int64 tensor)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Metrics of the trained model (JSON-ready values)."""

    @classmethod
    @abc.abstractmethod
    def headline(cls, metrics: dict[str, Any]) -> list[Headline]:
        """The headline numbers from :meth:`evaluate`'s metrics, beside the paper's claims."""

    def figure(self, model: nn.Module, metrics: dict[str, Any]) -> Any:
        """The experiment's own figure (a matplotlib ``Figure``, see :func:`report.new_figure`),
        or ``None``."""
        return None

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.config.lr)

    def refine(self, model: nn.Module) -> dict[str, Any]:
        """A second training phase after the Adam epochs (e.g. L-BFGS, as papers that train
        with ADAM then BFGS), run on every process before :meth:`evaluate`; returns JSON-ready
        logs, kept in ``metrics.json`` under ``train.refine``. It is not checkpointed: a resumed
        run redoes it from the last epoch's checkpoint. By default nothing."""
        return {}


def ode_solver_setup(config: ODEConfig) -> tuple[Any, Any, float | None]:
    """``(solver, controller, dt0)`` from an :class:`ODEConfig`: a PID controller (per sample
    if asked) for adaptive methods, ``ConstantStepSize`` with ``step_size`` otherwise."""
    import torchnde

    solver = torchnde.METHODS[config.method]()
    if solver.is_adaptive:
        controller = torchnde.PIDController(
            rtol=config.rtol, atol=config.atol, per_sample=config.per_sample
        )
        return solver, controller, None
    return solver, torchnde.ConstantStepSize(per_sample=config.per_sample), config.step_size


class _StepModule(nn.Module):
    """One training step's forward pass as a module, so DistributedDataParallel sees one
    forward per backward (the vector field itself is called many times per solve)."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._task = task

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
        out = self._task.step(self.model, index)
        self.keys = (list(out.logs), list(out.nfe))
        return out.loss, list(out.logs.values()), list(out.nfe.values())


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training examples in ``epoch``: a function of (seed, epoch) only, so a
    resumed run and every process see the same batches."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def _read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    """The logged steps up to ``upto`` (those after the checkpoint are redone), with a
    warning when some of them are missing: the history would otherwise be silently short."""
    history = [r for r in read_jsonl(path) if r["step"] <= upto]
    if [r["step"] for r in history] != list(range(1, upto + 1)):
        have = "does not exist" if not path.exists() else f"has {len(history)} of them"
        warnings.warn(
            f"the checkpoint is at step {upto} but {str(path)!r} {have}; training continues "
            "from the checkpoint, but the loss history, loss.png and the training summary of "
            "metrics.json cover only the logged steps (metrics.json records how many are "
            "missing).",
            stacklevel=2,
        )
    return history


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def run(
    name: str, config: ExperimentConfig, *, resume: bool = False, say: Any = None
) -> dict[str, Any] | None:
    """Train and evaluate experiment ``name`` with ``config``; write the run folder
    ``config.out``; return the final metrics (``None`` on ranks other than 0).

    Args:
        name: a registered experiment.
        config: its config (see :func:`~torchnde.experiments.config.make_config`).
        resume: continue from ``config.out / "checkpoint.pt"`` (the same config).
        say: where messages go (``print`` by default; nothing when ``config.quiet``).

    Raises:
        CheckpointError: when resuming from a missing, corrupt or foreign checkpoint.
        RunFolderError: ``config.out`` cannot be created or written, another process holds
            it (see :class:`~torchnde.experiments.runfolder.RunLock`), or its
            ``metrics.jsonl`` is corrupt before its last line.
    """
    from . import get_experiment

    task_cls = get_experiment(name).task_cls
    info, device = distributed.setup(config.device)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _Run(task_cls, config, info, torch.device(device), resume, say).execute()
    finally:
        torch.set_num_threads(threads)
        distributed.teardown(info)


class _Run:
    def __init__(
        self,
        task_cls: type[Task],
        config: ExperimentConfig,
        info: distributed.DistInfo,
        device: torch.device,
        resume: bool,
        say: Any,
    ) -> None:
        self.task_cls = task_cls
        self.name = task_cls.name
        self.config = config
        self.info = info
        self.device = device
        self.resume = resume
        quiet = config.quiet or not info.is_main
        self.say = (lambda *a, **k: None) if quiet else (say or print)
        self.out = config.out

    def execute(self) -> dict[str, Any] | None:
        """Open the run folder (rank 0 creates and locks it), train, evaluate, release."""
        info, out = self.info, self.out
        lock, error = None, None
        if info.is_main:
            try:
                make_run_folder(out)
                command = "torchnde resume" if self.resume else f"torchnde run {self.name}"
                lock = RunLock(out, command)
                lock.acquire()
            except RunFolderError as e:
                error = e
        # Every rank learns whether rank 0 got the folder, so none waits for it forever.
        flag = torch.tensor([float(error is not None)], device=self.device)
        failed = distributed.all_reduce_sum(flag, info)
        if error is not None:
            raise error
        if float(failed[0]) > 0:
            raise RunFolderError(f"rank 0 could not open the run folder {str(out)!r}.")
        try:
            if info.is_main:
                remove_stale_tmp(out)
            return self._train()
        finally:
            if lock is not None:
                lock.release()

    def _train(self) -> dict[str, Any] | None:
        cfg, info, out = self.config, self.info, self.out
        ckpt = None
        if self.resume:
            ckpt = load_checkpoint(out / CHECKPOINT, self.name)
        from . import seed_everything

        seed_everything(cfg.seed)
        task = self.task_cls(cfg, self.device)
        model = task.setup().to(self.device)
        optimizer = task.optimizer(model)
        batch = min(cfg.batch_size, task.num_train)
        steps_per_epoch = task.num_train // batch
        total = cfg.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=cfg.lr / 20
        )
        epoch, step = 0, 0
        if ckpt is not None:
            try:
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
            except (RuntimeError, KeyError, ValueError) as e:
                first = str(e).strip().splitlines()[0]
                raise CheckpointError(
                    f"checkpoint {str(out / CHECKPOINT)!r} does not fit this run's model or "
                    f"config ({first})."
                ) from None
            set_rng_state(ckpt["rng"])
            epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        jsonl = out / "metrics.jsonl"
        history = _read_history(jsonl, step) if ckpt is not None and info.is_main else []
        if info.is_main:
            if ckpt is None and (out / CHECKPOINT).exists():
                # A fresh run in a used folder: drop the old run's results, so that nothing
                # (resume, report) mistakes them for this run's.
                self.say(f"{self.name}: overwriting the earlier run in {out}")
                for f in ("metrics.json", CHECKPOINT, "report.md"):
                    (out / f).unlink(missing_ok=True)
            self._write_config(task)
            # Drop the lines of steps after the checkpoint: they are redone.
            report.write_text_atomic(jsonl, "".join(json.dumps(r) + "\n" for r in history))
        if ckpt is not None:
            self.say(f"{self.name}: resuming {out} at epoch {epoch}/{cfg.epochs}, step {step}")
        else:
            self.say(f"{self.name}: {task.title}\n{describe_config(cfg)}")
        world = f", {info.world_size} processes" if info.world_size > 1 else ""
        self.say(
            f"{self.name}: {cfg.epochs} epochs x {steps_per_epoch} steps, global batch {batch}, "
            f"device {self.device}{world}"
        )

        step_module: nn.Module = _StepModule(task, model)
        if info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = DistributedDataParallel(step_module, device_ids=ids)
        inner: Any = step_module.module if info.world_size > 1 else step_module

        quiet = cfg.quiet or not info.is_main
        progress = ProgressReporter(total, self.name, quiet=quiet, initial=step)
        log = open(jsonl, "a") if info.is_main else None
        try:
            model.train()
            while epoch < cfg.epochs:
                perm = _epoch_permutation(task.num_train, cfg.seed, epoch)
                for s in range(steps_per_epoch):
                    start = time.perf_counter()
                    index = distributed.shard(perm[s * batch : (s + 1) * batch], info)
                    loss, logs, nfe = step_module(index)
                    objective = loss.sum() * (info.world_size / batch)
                    optimizer.zero_grad(set_to_none=True)
                    objective.backward()
                    optimizer.step()
                    lr = optimizer.param_groups[0]["lr"]
                    scheduler.step()
                    packed = torch.stack(
                        [loss.detach().sum()]
                        + [v.detach().sum() for v in logs]
                        + [
                            torch.as_tensor(float(v), device=loss.device) / info.world_size
                            for v in nfe
                        ]
                    )
                    sums = distributed.all_reduce_sum(packed, info).tolist()
                    log_keys, nfe_keys = inner.keys
                    step += 1
                    record: dict[str, Any] = {"step": step, "epoch": epoch + 1}
                    record["loss"] = sums[0] / batch
                    for k, v in zip(log_keys, sums[1 : 1 + len(logs)]):
                        record[k] = v / batch
                    for k, v in zip(nfe_keys, sums[1 + len(logs) :]):
                        record[k] = v
                    record["lr"] = lr
                    record["time_s"] = time.perf_counter() - start
                    if not math.isfinite(record["loss"]):
                        raise TrainingError(
                            f"{self.name}: the training loss is {record['loss']} at step {step} "
                            f"(epoch {epoch + 1}); lower `lr` or tighten the solver tolerances. "
                            "The last checkpoint is from the end of epoch "
                            f"{epoch - epoch % cfg.checkpoint_every}."
                        )
                    history.append(record)
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    progress.update(
                        loss=record["loss"], nfe=record.get("nfe", 0.0), s_per_step=record["time_s"]
                    )
                    self._after_step(step)
                epoch += 1
                if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                    self._checkpoint(model, optimizer, scheduler, epoch, step)
        finally:
            progress.close()
            if log is not None:
                log.close()

        start = time.perf_counter()
        refined = task.refine(model)
        refine_s = time.perf_counter() - start
        if not info.is_main:
            distributed.barrier(info)
            return None
        metrics = self._finish(task, model, history, step, refined, refine_s)
        distributed.barrier(info)
        return metrics

    def _after_step(self, step: int) -> None:
        """A hook after every step (tests use it to interrupt a run)."""

    def _write_config(self, task: Task) -> None:
        import torchnde

        report.write_json(
            self.out / "config.json",
            {
                "experiment": self.name,
                "title": task.title,
                "paper": task.paper,
                "config": self.config.to_dict(),
                "world_size": self.info.world_size,
                "versions": {"torchnde": torchnde.__version__, "torch": torch.__version__},
            },
        )

    def _checkpoint(self, model: nn.Module, optimizer: Any, scheduler: Any, epoch: int, step: int):
        if self.info.is_main:
            save_checkpoint(
                self.out / CHECKPOINT,
                {
                    "experiment": self.name,
                    "config": self.config.to_dict(),
                    "epoch": epoch,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": get_rng_state(),
                },
            )
        distributed.barrier(self.info)

    def _finish(
        self,
        task: Task,
        model: nn.Module,
        history: list[dict[str, Any]],
        steps: int,
        refined: dict[str, Any],
        refine_s: float,
    ) -> dict[str, Any]:
        cfg, out = self.config, self.out
        start = time.perf_counter()
        model.eval()
        results = task.evaluate(model)
        eval_time = time.perf_counter() - start
        # By epoch, not by position: a history with missing lines must not pass a later
        # epoch off as the first.
        first = [r for r in history if r["epoch"] == 1]
        last = [r for r in history if r["epoch"] == cfg.epochs]
        train_time = sum(r["time_s"] for r in history)
        metrics: dict[str, Any] = {
            "experiment": self.name,
            "paper": task.paper,
            "headline": [h._asdict() for h in task.headline(results)],
            "eval": results,
            "train": {
                "epochs": cfg.epochs,
                "steps": steps,
                "steps_missing_from_log": steps - len(history),
                "loss_first_epoch": _mean([r["loss"] for r in first]),
                "loss_last_epoch": _mean([r["loss"] for r in last]),
                "nfe_per_step": _mean([r.get("nfe", 0.0) for r in history]),
            },
            "world_size": self.info.world_size,
            "timing": {
                "train_s": train_time,
                "s_per_step": train_time / max(1, len(history)),
                "eval_s": eval_time,
            },
        }
        figures = []
        if cfg.plot:
            figures = self._figures(task, model, metrics, history)
        if refined:
            metrics["train"]["refine"] = refined
            metrics["timing"]["refine_s"] = refine_s
        metrics["timing"]["total_s"] = train_time + refine_s + time.perf_counter() - start
        report.write_json(out / "metrics.json", metrics)
        report.write_report(out)
        for h in metrics["headline"]:
            shown = f"; this run: {h['verdict']}" if h.get("verdict") else ""
            self.say(f"{self.name}: {h['label']}: {h['value']} (paper: {h['paper']}{shown})")
        files = ["config.json", "metrics.jsonl", "metrics.json", CHECKPOINT, *figures, "report.md"]
        self.say(f"{self.name}: wrote {', '.join(files)} to {out}")
        return metrics

    def _figures(
        self, task: Task, model: nn.Module, metrics: dict[str, Any], history: list[dict[str, Any]]
    ) -> list[str]:
        try:
            report.require_matplotlib()
        except ImportError as e:
            self.say(f"{self.name}: {e}; skipping the figures")
            return []
        report.plot_loss(history, self.out / "loss.png", self.name)
        fig = task.figure(model, metrics)
        if fig is None:
            return ["loss.png"]
        fig.savefig(self.out / f"{self.name}.png", dpi=100)
        return ["loss.png", f"{self.name}.png"]
