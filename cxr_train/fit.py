"""The training loop behind ``cxr-train fit``.

Train on ``DATA/train``, choose on ``DATA/val`` (macro-F1), never look at ``test``. Every epoch
appends one JSON line to ``RUN_DIR/log.jsonl`` and writes ``last.pt`` (resumable); the best epoch
so far is ``best.pt``. Seeds fix initialization, batch order and augmentation, so the same
command on the same machine repeats the run. Under ``torchrun`` the same command trains data-
parallel (:mod:`cxr_train.distributed`); rank 0 alone logs, scores val and writes the files.
"""

from __future__ import annotations

import contextlib
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_infer.card import describe_weighting
from cxr_infer.metrics import classification_metrics
from cxr_infer.preprocess import PreprocessSpec
from cxr_infer.sources import sources_for
from cxr_train.augment import Augment, build_pipeline
from cxr_train.checkpoint import Checkpoint
from cxr_train.data import LabelledSet, discover, load_tensors, split_folders
from cxr_train.calibrate import calibrate_file
from cxr_train.distributed import World, joined
from cxr_train.evaluate import dataset_name, predict_probs
from cxr_train.models import get_model_spec


@dataclass
class FitConfig:
    """Every option of ``cxr-train fit``; stored in the checkpoint's ``args``."""

    data: str
    model: str
    epochs: int
    out: str
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    augment: list[str] = field(default_factory=list)
    balanced_sampling: bool = False
    class_weights: bool = True
    balance: str = "class"
    source_power: float = 0.5
    sources: str | None = None
    mixup: float = 0.0
    intensity: str = "percentile"
    pretrained: bool = False
    seed: int = 0
    patience: int = 10
    resume: str | None = None
    limit_per_class: int | None = None
    threads: int | None = None
    image_size: int | None = None
    precision: str = "auto"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def inverse_frequency_weights(counts: list[int]) -> list[float]:
    """Class weights ``N / (K * n_k)``: inverse frequencies scaled so a balanced set gets all 1."""
    if min(counts) == 0:
        raise ValueError(f"a class has no training images (counts {counts}); cannot weight it")
    total, k = sum(counts), len(counts)
    return [total / (k * n) for n in counts]


def group_masses(groups: dict[tuple[str, str], int], power: float) -> dict[tuple[str, str], float]:
    """Share of the training signal per (class, source): every class 1/K, split between its
    sources in proportion to ``n ** power``.

    ``power`` 1 keeps the sources' natural shares (plain class balance), 0 gives every source of
    a class the same share (a 9-image source would then weigh as much as a 400-image one, and be
    memorised), 0.5 sits between: the large source no longer dominates its class.
    """
    classes = sorted({c for c, _ in groups})
    masses = {}
    for name in classes:
        members = {key: n for key, n in groups.items() if key[0] == name}
        scale = sum(n**power for n in members.values())
        masses.update({key: n**power / scale / len(classes) for key, n in members.items()})
    return masses


def sample_weights(train: LabelledSet, balance: str, power: float) -> tuple[np.ndarray, dict[str, Any]]:
    """One weight per training image (mean 1) and a description of them for the checkpoint.

    ``class``: the inverse class frequency ``N / (K * n_k)``; ``class-source``: each (class,
    source) group gets :func:`group_masses`' share, so no single source dominates a class.
    """
    labels = np.asarray(train.labels)
    if balance == "class":
        per_class = inverse_frequency_weights(train.counts())
        return np.asarray(per_class, dtype=np.float64)[labels], {"balance": "class", "class_weights": per_class}
    if balance != "class-source":
        raise ValueError(f"unknown balance {balance!r} (class or class-source)")
    if train.sources is None:
        raise ValueError("--balance class-source needs each image's source: a MANIFEST.csv beside the data or --sources CSV")
    if min(train.counts()) == 0:
        raise ValueError(f"a class has no training images (counts {train.counts()}); cannot weight it")
    groups = train.groups()
    masses = group_masses(groups, power)
    per_image = {key: masses[key] / n * len(train) for key, n in groups.items()}  # a group's mass, spread over its images
    keys = [(train.classes[label], source) for label, source in zip(train.labels, train.sources)]
    weights = np.asarray([per_image[key] for key in keys], dtype=np.float64)
    table = [{"class": c, "source": s, "n": n, "weight": round(per_image[(c, s)], 4)} for (c, s), n in groups.items()]
    return weights, {"balance": "class-source", "source_power": power, "groups": table}


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast only where the hardware does bf16 natively.

    On an AVX2-only CPU (this team's machine) autocast to bf16 is emulated and measured 7x
    *slower* than fp32 for SimpleCNN, so ``auto`` enables it on CUDA and on CPUs with AVX-512
    BF16 / AMX only.
    """
    if precision in ("bf16", "fp32"):
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")


class Progress:
    """A one-line stderr progress bar with running loss and throughput."""

    def __init__(self, total: int, label: str, log_every: float = 0.1, enabled: bool = True):
        self.total, self.label, self.start, self.enabled = total, label, time.perf_counter(), enabled
        self.interactive = sys.stderr.isatty()
        self.log_every, self.next_log = log_every, log_every  # non-tty (log file): a line per 10 %

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        bar = "#" * int(24 * done / self.total)
        line = f"{self.label} [{bar:<24}] {done}/{self.total} loss {loss:.4f} {rate:.1f} img/s"
        if self.interactive:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif done >= self.next_log * self.total:
            print(line, file=sys.stderr, flush=True)
            self.next_log = done / self.total + self.log_every

    def close(self) -> None:
        if self.enabled and self.interactive:
            print(file=sys.stderr, flush=True)


@dataclass
class Trainer:
    """Model, optimizer and schedule of one run, plus the state that ``--resume`` restores."""

    config: FitConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    bf16: bool
    loss_weights: torch.Tensor | None  # one per training image (None: plain mean)
    sample_weights: torch.Tensor | None
    augment: Augment
    generator: torch.Generator  # batch order (CPU, where the cached tensors live)
    aug_generator: torch.Generator  # augmentation draws (on the training device)
    epoch: int = 0
    best_f1: float = -1.0
    stale: int = 0
    seconds: float = 0.0  # training wall time so far, carried across --resume
    world: World = World()
    network: nn.Module | None = None  # the model as the training step calls it (DDP under torchrun)

    def __post_init__(self) -> None:
        if self.network is None:  # (not `or`: an nn.Sequential is falsy when empty)
            self.network = self.model

    def batches(self, n: int) -> list[torch.Tensor]:
        """This epoch's global index batches: a seeded permutation, or class-balanced draws with
        replacement; the same on every process, each of which trains on its share.

        A trailing batch that would leave a process fewer than two images is dropped (BatchNorm
        cannot train on one).
        """
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, n, replacement=True, generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator)
        chunks = list(order.split(self.config.batch_size))
        return chunks if len(chunks[-1]) >= 2 * self.world.size else chunks[:-1]

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One pass over the training tensors; returns (mean loss, images per second)."""
        self.model.train()
        progress = Progress(x.shape[0], f"epoch {self.epoch + 1}/{self.config.epochs}", enabled=self.world.is_main)
        start, seen, total_loss = time.perf_counter(), 0, 0.0
        for index in self.batches(x.shape[0]):
            share = index[self.world.span(len(index))]
            images = self.augment(x[share].to(self.device), self.aug_generator)
            partner, lam = self.mix_partner(len(index))
            if partner is not None:
                partner = self.world.local_partner(partner, len(index))
                images = lam * images + (1 - lam) * images[partner]
            if self.bf16:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.network(images)
            loss = self.loss(logits.float(), share, y, partner, lam, total=self.weight_sum(index))
            self.optimizer.zero_grad(set_to_none=True)
            (loss * self.world.size).backward()  # DDP averages the processes' gradients; their losses add up
            self.optimizer.step()
            self.scheduler.step()
            seen += len(index)
            total_loss += self.world.total(loss) * len(index)
            progress.update(seen, total_loss / seen)
        progress.close()
        return total_loss / max(seen, 1), seen / (time.perf_counter() - start)

    def mix_partner(self, n: int) -> tuple[torch.Tensor | None, float]:
        """Mixup: each image is blended with a random other of the batch (most often of another
        source), so no source's look alone can carry a label. ``None`` when mixup is off."""
        if self.config.mixup <= 0:
            return None, 1.0
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))  # resumable: all draws from one generator
        lam = float(np.random.default_rng(seed).beta(self.config.mixup, self.config.mixup))
        return torch.randperm(n, generator=self.generator).to(self.device), max(lam, 1 - lam)

    def loss(self, logits: torch.Tensor, index: torch.Tensor, y: torch.Tensor, partner: torch.Tensor | None,
             lam: float, total: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy weighted per image (class or class-source balance), normalised by the
        batch's weight sum as ``F.cross_entropy(weight=...)`` does; mixup mixes both parts.

        ``total`` is the whole batch's weight sum when these images are one process's share of
        it (:meth:`weight_sum`): the shares' losses then add up to the one-process loss.
        """
        target = y[index].to(self.device)
        weights = (self.loss_weights[index] if self.loss_weights is not None else torch.ones(len(index))).to(self.device)
        losses = F.cross_entropy(logits, target, reduction="none")
        if partner is not None:
            losses = lam * losses + (1 - lam) * F.cross_entropy(logits, target[partner], reduction="none")
            weights = lam * weights + (1 - lam) * weights[partner]
        return (losses * weights).sum() / (weights.sum() if total is None else total)

    def weight_sum(self, index: torch.Tensor) -> torch.Tensor:
        """The loss weight of a whole batch (mixup keeps it: partners are a permutation)."""
        if self.loss_weights is None:
            return torch.tensor(float(len(index)), device=self.device)
        return self.loss_weights[index].sum().to(self.device)

    def training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "aug_generator": self.aug_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_f1": self.best_f1,
            "stale": self.stale,
            "seconds": self.seconds,
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.training
        if not state:
            raise ValueError("checkpoint has no training state (resume from last.pt, not best.pt)")
        self.model.load_state_dict(checkpoint.state_dict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.aug_generator.set_state(state["aug_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.best_f1, self.stale = checkpoint.epoch, state["best_f1"], state["stale"]
        self.seconds = state["seconds"]

    def own_draws(self) -> None:
        """Processes other than rank 0 augment and drop out with seeds of their own
        (:meth:`World.own_seed`); rank 0 keeps the one-process draws."""
        if self.world.rank:
            seed = self.world.own_seed(self.config.seed, self.epoch)
            torch.manual_seed(seed)
            self.aug_generator.manual_seed(seed + 1)


def make_optimizer(config: FitConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r} (adamw or sgd)")


def make_scheduler(config: FitConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule over the whole run: cosine decay, or one-cycle (warm-up then anneal)."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=config.lr * 0.01)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=0.2)
    raise ValueError(f"unknown schedule {config.schedule!r} (cosine or onecycle)")


def load_splits(config: FitConfig) -> tuple[LabelledSet, LabelledSet]:
    """The train and val sets of ``config.data`` (val labelled in train's class order)."""
    splits = split_folders(config.data)
    missing = {"train", "val"} - set(splits)
    if missing:
        raise FileNotFoundError(f"{config.data}: missing split folder(s) {sorted(missing)} (expected train/ and val/)")
    table = sources_for(config.data, config.sources)
    train = discover(splits["train"]).with_sources(table)
    val = discover(splits["val"], classes=train.classes).with_sources(table)
    if config.limit_per_class:
        train = train.limit_per_class(config.limit_per_class, config.seed)
        val = val.limit_per_class(config.limit_per_class, config.seed)
    return train, val


def build_trainer(config: FitConfig, train: LabelledSet, weights: np.ndarray, device: torch.device,
                  world: World = World()) -> Trainer:
    """Model, per-image loss weights or sampler, optimizer and schedule for one run."""
    if config.balanced_sampling and config.class_weights:
        raise ValueError("--balanced-sampling and class-weighted loss correct the same imbalance twice; "
                         "add --no-class-weights to sample balanced batches")
    if config.mixup < 0:
        raise ValueError(f"--mixup must be >= 0 (0: off), got {config.mixup}")
    if config.batch_size < 2 * world.size:
        raise ValueError(f"--batch-size {config.batch_size} is the global batch: {world.size} processes need at least {2 * world.size}")
    model = world.prepare(get_model_spec(config.model).factory(len(train.classes), config.pretrained).to(device))
    bf16 = use_bf16(device, config.precision)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    steps = len(train) // config.batch_size + (len(train) % config.batch_size > 1)
    return Trainer(
        config=config,
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer, steps),
        device=device,
        bf16=bf16,
        loss_weights=torch.tensor(weights, dtype=torch.float32) if config.class_weights else None,
        sample_weights=torch.tensor(weights) if config.balanced_sampling else None,
        augment=build_pipeline(config.augment),
        generator=torch.Generator().manual_seed(config.seed),
        aug_generator=torch.Generator(device).manual_seed(config.seed + 1),
        world=world,
        network=world.wrap(model),
    )


def provenance(config: FitConfig, command: str, train: LabelledSet, val: LabelledSet, spec: PreprocessSpec,
               weighting: dict[str, Any], device: torch.device, bf16: bool, processes: int = 1) -> dict[str, Any]:
    """The checkpoint fields that stay fixed for a whole run (what, on which data, how)."""
    return {
        "model": config.model,
        "classes": train.classes,
        "preprocess": spec,
        "target_layer": get_model_spec(config.model).target_layer,
        "class_weights": weighting.get("class_weights") if config.class_weights else None,
        "trained_on": {
            "datasets": [dataset_name(train.root)],
            "validation": dataset_name(val.root),
            "file_list_sha256": train.file_list_sha256(),
            "counts": dict(zip(train.classes, train.counts())),
            "sources": [{"class": c, "source": s, "n": n} for (c, s), n in train.groups().items()],
            "weighting": weighting,
        },
        "args": {**asdict(config), "command": command, "device": device_description(device), "bf16": bf16,
                 "processes": processes},
    }


def snapshot(trainer: Trainer, fixed: dict[str, Any], val_name: str, val_report: dict, with_state: bool) -> Checkpoint:
    """The model as it is now; ``with_state`` adds what ``--resume`` needs (``last.pt`` only)."""
    return Checkpoint(
        **{**fixed, "args": {**fixed["args"], "train_seconds": round(trainer.seconds, 1)}},
        state_dict={k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()},
        metrics={val_name: val_report},
        epoch=trainer.epoch,
        training=trainer.training_state() if with_state else {},
    )


def run_epoch(trainer: Trainer, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
              val_set: LabelledSet) -> dict[str, Any] | None:
    """Train one epoch, score val (with its per-source audit), update best/stale; returns the
    ``log.jsonl`` entry. Under torchrun rank 0 alone scores val and gets the entry (the others
    ``None``), and every process takes its best/stale, so all stop early together."""
    started = time.perf_counter()
    train_loss, rate = trainer.train_epoch(*train)
    trainer.epoch += 1
    report, improved = None, False
    if trainer.world.is_main:
        probs = predict_probs(trainer.model, val[0], trainer.device)
        report = classification_metrics(val[1].numpy(), probs, val_set.classes, val_set.sources)
        improved = report["macro_f1"] > trainer.best_f1
        trainer.best_f1, trainer.stale = (report["macro_f1"], 0) if improved else (trainer.best_f1, trainer.stale + 1)
    best_f1, stale = trainer.world.from_main(trainer.best_f1, trainer.stale)
    trainer.best_f1, trainer.stale = best_f1, int(stale)
    seconds = time.perf_counter() - started
    trainer.seconds += seconds
    if report is None:
        return None
    return {"epoch": trainer.epoch, "train_loss": train_loss, "lr": trainer.scheduler.get_last_lr()[0],
            "img_per_s": rate, "seconds": seconds, "best": improved, "val": report}


def fit(config: FitConfig, command: str = "") -> Path | None:
    """Run the training (data-parallel when started by torchrun); returns the path of ``best.pt``
    (``None`` on the processes other than rank 0, which write nothing)."""
    with joined() as world:
        return fit_in(world, config, command)


def fit_in(world: World, config: FitConfig, command: str) -> Path | None:
    """The training as one of ``world``'s processes (all of it for a world of one)."""
    say = print if world.is_main else lambda *args, **kwargs: None
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = world.device()
    spec = PreprocessSpec(size=config.image_size or get_model_spec(config.model).input_size, intensity=config.intensity)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = load_splits(config)
    weights, balance = sample_weights(train, config.balance, config.source_power)
    weighting = {**balance, "applied_as": weighting_mode(config)}
    trainer = build_trainer(config, train, weights, device, world)
    say(f"classes {train.classes}, train counts {train.counts()}, val counts {val.counts()}\n"
        f"{describe_weighting(weighting)}\n"
        f"device {device}, bf16 autocast {trainer.bf16}, threads {torch.get_num_threads()}, image size {spec.size}"
        f"{f', {world.size} processes' if world.size > 1 else ''}", file=sys.stderr)
    tensors = world.node_first(lambda: [load_tensors(s, spec, out / "cache", threads=config.threads or 1) for s in (train, val)])
    if config.resume:
        trainer.restore(Checkpoint.load(config.resume))
        say(f"resumed from {config.resume} after epoch {trainer.epoch}", file=sys.stderr)
    trainer.own_draws()
    fixed = provenance(config, command, train, val, spec, weighting, device, trainer.bf16, world.size)
    with (out / "log.jsonl").open("a") if world.is_main else contextlib.nullcontext() as log:
        while trainer.epoch < config.epochs and (config.patience <= 0 or trainer.stale < config.patience):
            entry = run_epoch(trainer, tensors[0], tensors[1], val)
            if entry is None:
                continue
            if entry["best"]:
                snapshot(trainer, fixed, dataset_name(val.root), entry["val"], with_state=False).save(out / "best.pt")
            snapshot(trainer, fixed, dataset_name(val.root), entry["val"], with_state=True).save(out / "last.pt")
            log.write(json.dumps(entry) + "\n")
            log.flush()
            recall = {c: round(v["recall"], 3) for c, v in entry["val"]["per_class"].items()}
            print(f"epoch {entry['epoch']}: loss {entry['train_loss']:.4f}, val macro-F1 {entry['val']['macro_f1']:.4f} "
                  f"recall {recall}, {entry['img_per_s']:.1f} img/s, {entry['seconds']:.0f} s"
                  f"{' *best*' if entry['best'] else ''}", file=sys.stderr)
    if trainer.stale >= config.patience > 0:
        say(f"early stop: no val macro-F1 gain for {config.patience} epochs", file=sys.stderr)
    if not world.is_main:
        return None
    if (out / "best.pt").exists():
        calibrate_file(out / "best.pt", val, tensors[1])
    return out / "best.pt"


def weighting_mode(config: FitConfig) -> str:
    """How the balance weights act: on the loss, on the sampler, or not at all."""
    if config.balanced_sampling:
        return "sampling"
    return "loss" if config.class_weights else "none (--no-class-weights)"


def device_description(device: torch.device) -> str:
    """Hardware line for model cards: GPU name, or CPU model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
