"""Training a DVN the paper's way: minimise the summed cross-entropy of every level of every
task (docs/method.md), SGD with Nesterov momentum, weight decay, warm-up then cosine learning rate,
a fixed seed, a progress bar; then evaluate every (task, level) and write the checkpoint."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import save
from model_store.data import BUILTIN_TASKS, TaskData, builtin_task, load_task
from model_store.evaluate import evaluate
from model_store.manifest import Manifest
from model_store.model import DVN
from model_store.presets import TrainConfig


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tasks(config: TrainConfig) -> list[TaskData]:
    """Load every task the config names (builtin names or paths under ``data_dir``)."""
    found = []
    for source in config.tasks:
        if source == "digits":  # a fixed data set: n_train/n_test size the generated ones
            found.append(
                builtin_task(
                    source, seed=config.seed, size=config.input_size, color_mode=config.color_mode
                )
            )
        elif source in BUILTIN_TASKS:
            found.append(
                builtin_task(
                    source,
                    seed=config.seed,
                    n_train=config.n_train,
                    n_test=config.n_test,
                    size=config.input_size,
                    color_mode=config.color_mode,
                )
            )
        else:
            path = Path(source).expanduser()
            if not path.is_absolute():
                path = Path(config.data_dir).expanduser() / path
            found.append(load_task(str(path), seed=config.seed))
    return found


def augment(x: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Random per-example shifts of up to 1/8 of the side (zero padded), plus horizontal
    flips for ``shift-flip``."""
    if mode == "none":
        return x
    b, c, h, w = x.shape  # (B, C, H, W)
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[bi, ci, rows, cols]
    if mode == "shift-flip":
        flip = torch.rand(b, generator=generator, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def _batches(
    data: TaskData, batch_size: int, device: torch.device, rng: np.random.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled batches of one task's training split, reshuffled every pass."""
    x = torch.from_numpy(data.x_train).to(device)
    y = torch.from_numpy(data.y_train).to(device)
    n = len(y)
    while True:
        order = torch.from_numpy(rng.permutation(n)).to(device)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]


def epoch_steps(tasks: Sequence[TaskData], batch_size: int) -> int:
    """Steps of an epoch: one pass over the largest task's training split."""
    return max(math.ceil(len(d.y_train) / batch_size) for d in tasks)


def level_weights(config: TrainConfig, num_levels: int) -> list[float]:
    """The loss weight of each level (level 1 first): the config's, or all 1.

    Raises:
        ValueError: the config gives a different number of weights than there are levels.
    """
    if config.level_weights is None:
        return [1.0] * num_levels
    if len(config.level_weights) != num_levels:
        raise ValueError(
            f"level_weights has {len(config.level_weights)} values for a model of "
            f"{num_levels} levels; give one per level, level 1 first"
        )
    return list(config.level_weights)


def task_loss(
    logits: dict[int, Tensor], target: Tensor, config: TrainConfig, weights: Sequence[float]
) -> Tensor:
    """One task's loss over the levels in ``logits`` (level -> (B, classes) logits).

    The largest level learns cross-entropy. Every other level learns
    ``(1 - distill) * CE + distill * T^2 * KL(p_top || p_level)`` with ``p = softmax(z / T)``
    and the top level's logits detached (in-place distillation: the small levels follow
    the top one, whose gradient is its own cross-entropy alone). Each level's term is
    scaled by ``weights[level - 1]``.
    """
    top = max(logits)
    temperature = config.distill_temperature
    soft_top = F.softmax(logits[top].detach() / temperature, dim=1)  # (B, classes)
    total = torch.zeros((), device=target.device)
    for level, z in logits.items():
        loss = F.cross_entropy(z, target)
        if level != top and config.distill > 0:
            kd = F.kl_div(F.log_softmax(z / temperature, dim=1), soft_top, reduction="batchmean")
            loss = (1 - config.distill) * loss + config.distill * temperature**2 * kd
        total = total + weights[level - 1] * loss
    return total


def objective(config: TrainConfig) -> str:
    """The training objective in words, for the manifest."""
    text = "sum over tasks and levels of cross-entropy (docs/method.md)"
    if config.distill > 0:
        text += (
            f"; levels below the top: {1 - config.distill:g} x cross-entropy + "
            f"{config.distill:g} x T^2 KL from the top level's detached predictions "
            f"(in-place distillation, T = {config.distill_temperature:g})"
        )
    if config.level_weights is not None:
        text += f"; level weights {config.level_weights}"
    return text


@dataclass(frozen=True)
class TrainResult:
    manifest: Manifest
    path: Path
    seconds: float


def fit(
    model: DVN,
    tasks: Sequence[TaskData],
    config: TrainConfig,
    device: torch.device,
    levels: Sequence[int] | None = None,
    desc: str = "train",
    progress: bool = True,
    steps_per_epoch: int | None = None,
) -> None:
    """Train ``model`` in place on the summed loss (:func:`task_loss`) of ``levels`` (all by
    default) of every task. An epoch is ``steps_per_epoch`` steps (by default one pass over
    the largest task's training split; a step draws a batch of every task).

    Raises:
        ValueError: ``config.level_weights`` does not match the model's levels.
        FloatingPointError: the loss stops being finite.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    levels = sorted(levels or range(1, model.config.num_levels + 1), reverse=True)  # top first
    weights = level_weights(config, model.config.num_levels)
    model.to(device).train()
    streams = [_batches(d, config.batch_size, device, rng) for d in tasks]
    if steps_per_epoch is None:
        steps_per_epoch = epoch_steps(tasks, config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _name, p in model.named_parameters():
        (no_decay if p.dim() == 1 else decay).append(p)  # no weight decay on norms and biases
    opt = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
    )

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    running = None
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, dynamic_ncols=True)
    for step in range(total):
        loss = torch.zeros((), device=device)
        for t, stream in enumerate(streams):
            xb, yb = next(stream)
            xb = augment(xb, config.augment, gen)
            logits = {level: model(xb, t, level) for level in levels}
            loss = loss + task_loss(logits, yb, config, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training diverged at step {step} (loss {value}); lower the learning rate "
                f"(now {config.lr})"
            )
        running = value if running is None else 0.95 * running + 0.05 * value
        bar.set_postfix(
            loss=f"{running:.3f}", epoch=f"{step // steps_per_epoch + 1}/{config.epochs}"
        )
        bar.update()
    bar.close()
    model.eval()


def train(
    config: TrainConfig, out_dir: str | Path, device: str = "auto", progress: bool = True
) -> TrainResult:
    """Train the DVN a config describes and write its checkpoint to ``out_dir``."""
    started = time.perf_counter()
    dev = pick_device(device)
    tasks = load_tasks(config)
    dvn_config = DVNConfig.create(
        get_architecture(config.architecture),
        [d.spec for d in tasks],
        unit_orders=config.unit_orders,
        arch_name=config.architecture,
    )
    torch.manual_seed(config.seed)
    model = DVN(dvn_config)
    fit(model, tasks, config, dev, progress=progress)
    accuracy = evaluate(model, tasks, dev)
    seconds = time.perf_counter() - started
    training = {
        "config": config.model_dump(mode="json"),
        "data": {d.spec.name: d.to_dict() for d in tasks},
        "epochs": config.epochs,
        "seed": config.seed,
        "device": str(dev),
        "duration_s": round(seconds, 1),
        "objective": objective(config),
    }
    model.cpu()
    manifest = save(
        model,
        out_dir,
        name=config.name,
        version=config.version,
        accuracy=accuracy,
        training=training,
    )
    return TrainResult(manifest=manifest, path=Path(out_dir), seconds=seconds)
