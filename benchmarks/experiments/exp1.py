"""exp-1: train real models on real data once per variation and seed, and measure.

Two tasks (`tasks`): all-MiniLM-L6-v2 fine-tuned on the Rotten Tomatoes sentences, and a small
ViT trained from scratch on the digits images. Per run: the loss at every step, the validation
accuracy at `val_points` points (the curve), the final model's test accuracy and F1 (fixed-step
rule: the model after the last step is the one evaluated, no early stopping), step times and
throughput, the cosine similarity of the first step's gradient with the baseline's (same seed,
same batch), and, after training, one tracked step: peak memory, bytes saved for backward, stored
mask bytes, and the saved bytes dropout adds.

Every variation of a seed starts from the same weights, sees the same batches in the same order
and draws dropout from the same seed; the baseline runs first, the others in an order rotated
per seed. Speed is also measured apart, interleaved: `timing_rounds` rounds, each switching the
model through every variation (rotated order) for one warm-up and `timing_steps` timed steps,
so a change in the machine's load hits every variation alike. Each run and each timing is a
JSON file of its own when a `RunStore` is given: a restarted run redoes only what is missing.

Example:
    >>> result = run_exp1(Exp1Settings.quick())
    >>> run = Exp1Run.from_dict(result["tasks"]["text"]["runs"][0])   # `records`: a run's JSON form
    >>> run.variation, run.test["accuracy"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from statistics import median
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.kit.memory import saved_bytes
from benchmarks.kit.probes import dropout_saved_bytes, step_memory, timed_step
from benchmarks.kit.training import evaluate, flat_grad
from bittensor_core.errors import PackedBoolValueError

from .machine import machine_info
from .records import Exp1Run
from .resume import RunStore
from .stats import cosine
from .tasks import Task, TaskSpec, TextSource, image_task, text_task
from .variations import BOOL_REFERENCE, Variation, applied, parse_variations

__all__ = ["Exp1Settings", "run_exp1"]

DEFAULT_VARIATIONS = (
    "packed-1bit-lazy",
    "packed-1bit-cached",
    "packed-4bit",
    "seeded-0bit",
    "packed-1bit-fast",
)
TASKS = ("text", "image")


@dataclass
class Exp1Settings:
    """What exp-1 runs; the defaults are the `standard()` profile.

    `quick()`: minutes on 2 CPU cores, 10 steps, chance-level accuracy (a smoke run; baseline
    attention ``eager``, as in the earlier quick results).
    `standard()`: about half an hour on 2 CPU cores, real accuracy: 2,400 / 500 / 1,000 sentences
    (train / val / test), seq 64, batch 32, one epoch (75 steps); the ViT 20 epochs on 1,297 / 200 / 300
    digits; 3 seeds; baseline attention ``sdpa``, the model's stock default. `full()`: every
    training sentence, 3 epochs, 5 seeds. `steps`, when set, replaces the epoch count of both tasks.
    """

    model: str = "all-MiniLM-L6-v2"
    dataset: str = "rotten-tomatoes-vader"
    seq_len: int = 64
    batch_size: int = 32
    epochs: float = 1.0
    steps: int | None = None
    warmup: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    train_limit: int | None = 2400
    val_limit: int | None = 500
    test_limit: int | None = 1000
    held_out: float = 0.15
    lr: float = 5e-5
    eval_batch: int = 128
    val_points: int = 3
    tasks: tuple[str, ...] = ("text", "image")
    image_epochs: float = 20.0
    image_batch: int = 64
    image_lr: float = 2e-3
    timing_rounds: int = 3
    timing_steps: int = 4
    variations: tuple[str, ...] = DEFAULT_VARIATIONS
    baseline_attn: str = "sdpa"
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise PackedBoolValueError(f"unknown exp-1 task(s) {unknown}; choose from {list(TASKS)}.")

    def task_spec(self, task: str) -> TaskSpec:
        """How `task` is trained: the image task has its own batch size, epochs and learning rate."""
        image = task == "image"
        return TaskSpec(
            batch_size=self.image_batch if image else self.batch_size,
            epochs=self.image_epochs if image else self.epochs,
            steps=self.steps,
            lr=self.image_lr if image else self.lr,
            val_points=self.val_points,
            warmup=self.warmup,
            eval_batch=self.eval_batch,
            baseline_attn=self.baseline_attn,
            device=self.device,
        )

    def text_source(self) -> TextSource:
        """The text task's model, data and split."""
        return TextSource(**{f.name: getattr(self, f.name) for f in fields(TextSource)})

    def task(self, name: str) -> Task:
        """Task `name` ("text" or "image"), its model and data loaded."""
        spec = self.task_spec(name)
        return text_task(spec, self.text_source()) if name == "text" else image_task(spec)

    @classmethod
    def quick(cls, **overrides: Any) -> Exp1Settings:
        base = dict(
            batch_size=16,
            steps=10,
            warmup=2,
            seeds=(0, 1),
            train_limit=16 * 10,
            val_limit=256,
            test_limit=256,
            held_out=0.1,
            lr=2e-4,
            val_points=2,
            timing_rounds=3,
            timing_steps=3,
            baseline_attn="eager",
        )
        return cls(**(base | overrides))

    @classmethod
    def standard(cls, **overrides: Any) -> Exp1Settings:
        return cls(**overrides)

    @classmethod
    def full(cls, **overrides: Any) -> Exp1Settings:
        base = dict(
            train_limit=None,
            epochs=3.0,
            seeds=(0, 1, 2, 3, 4),
            image_epochs=30.0,
            timing_rounds=5,
            timing_steps=5,
        )
        return cls(**(base | overrides))


def _first_grad(task: Task, seed: int) -> torch.Tensor:
    """The baseline's first-step gradient of `seed` (when its run was read from disk)."""
    task.start(seed)
    task.model.train()
    torch.manual_seed(seed)
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed))
    task.model(**task.train.batch(order[: task.spec.batch_size], task.spec.device)).loss.backward()
    grad = flat_grad(task.model)
    task.model.zero_grad(set_to_none=True)
    return grad


def _one_run(
    task: Task,
    variation: Variation,
    seed: int,
    baseline_grad: dict[int, torch.Tensor],
    bar: tqdm,
) -> Exp1Run:
    """Train `task` from seed's start with `variation`; evaluate; measure one step's memory."""
    model, device = task.model, task.spec.device
    task.start(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.spec.lr)
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed))
    losses, times, val_curve, box = [], [], [], {}
    with applied(model, variation) as patched:
        torch.manual_seed(seed)  # the dropout stream; evaluation (eval mode) draws nothing from it
        for step in range(task.steps):
            index = order[
                torch.arange(step * task.spec.batch_size, (step + 1) * task.spec.batch_size) % len(task.train)
            ]
            batch = task.train.batch(index, device)
            hook = (lambda: box.setdefault("grad", flat_grad(model))) if step == 0 else None
            loss, seconds = timed_step(model, optimizer, batch, device, on_grad=hook)
            losses.append(loss)
            times.append(seconds)
            if (step + 1) % task.eval_every == 0 or step + 1 == task.steps:
                val_curve.append(
                    [step + 1, evaluate(model, task.val, task.spec.eval_batch, device)["accuracy"]]
                )
            bar.update(1)
        test = evaluate(model, task.test, task.spec.eval_batch, device)
        memory = step_memory(model, optimizer, batch, device)
        dropout_bytes = dropout_saved_bytes(model, batch)
        bar.update(1)
    grad = box["grad"]
    if variation.is_baseline:
        baseline_grad[seed] = grad
    elif seed not in baseline_grad:
        baseline_grad[seed] = _first_grad(task, seed)
    reference = baseline_grad[seed]
    timed = times[task.spec.warmup :] or times
    return Exp1Run(
        variation=variation.name,
        seed=seed,
        patched=patched,
        losses=losses,
        step_times_s=times,
        median_step_s=median(timed),
        throughput_samples_s=task.spec.batch_size / median(timed),
        val_curve=val_curve,
        val={"accuracy": val_curve[-1][1]},
        test=test,
        memory=memory,
        dropout_saved_bytes=dropout_bytes,
        grad_cosine=cosine(grad, reference),
        grad_identical=torch.equal(grad, reference),
    )


def _interleaved_times(
    task: Task,
    variations: list[Variation],
    rounds: int,
    steps: int,
    bar: tqdm,
) -> dict[str, list[float]]:
    """Step seconds per variation, measured round-robin on one model and one batch."""
    model, device = task.model, task.spec.device
    task.start(0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.spec.lr)
    batch = task.train.batch(range(task.spec.batch_size), device)
    times: dict[str, list[float]] = {v.name: [] for v in variations}
    torch.manual_seed(0)
    for r in range(rounds):
        shift = r % len(variations)
        for variation in variations[shift:] + variations[:shift]:
            bar.set_postfix_str(f"{task.name}: timing round {r + 1} {variation.name}")
            with applied(model, variation):
                timed_step(model, optimizer, batch, device)  # first step after switching: not timed
                for _ in range(steps):
                    times[variation.name].append(timed_step(model, optimizer, batch, device)[1])
                    bar.update(1)
    return times


def _mask_elements(task: Task) -> int:
    """Mask elements per step: the bytes of every mask stored at 8 bits (one byte each)."""
    batch = task.train.batch(range(task.spec.batch_size), task.spec.device)
    task.model.train()  # from_pretrained returns eval mode: with every run read from disk nothing set it
    with applied(task.model, BOOL_REFERENCE):
        _, census = saved_bytes(lambda: task.model(**batch).loss)
    return census.mask_bytes


def _run_task(
    s: Exp1Settings, task: Task, variations: list[Variation], store: RunStore, bar: tqdm
) -> dict[str, Any]:
    runs, baseline_grad = [], {}
    for i, seed in enumerate(s.seeds):
        others = variations[1:]
        shift = i % len(others) if others else 0
        for variation in [variations[0], *others[shift:], *others[:shift]]:
            bar.set_postfix_str(f"{task.name}: seed {seed} {variation.name}")
            before = len(store.computed)
            runs.append(
                store.get(
                    f"exp-1/{task.name}/{variation.name}-seed{seed}",
                    task.config,
                    lambda v=variation, k=seed: _one_run(task, v, k, baseline_grad, bar).as_dict(),
                )
            )
            if len(store.computed) == before:
                bar.update(task.steps + 1)  # read from disk
    timing_config = task.config | {
        "variations": [v.name for v in variations],
        "rounds": s.timing_rounds,
        "timing_steps": s.timing_steps,
    }
    before = len(store.computed)
    timing = store.get(
        f"exp-1/{task.name}/timing",
        timing_config,
        lambda: _interleaved_times(task, variations, s.timing_rounds, s.timing_steps, bar),
    )
    if len(store.computed) == before:
        bar.update(len(variations) * s.timing_rounds * s.timing_steps)
    bar.set_postfix_str(f"{task.name}: mask census")
    return {
        "task": task.name,
        "model": type(task.model).__name__,
        "config": task.config,
        "batch_size": task.spec.batch_size,
        "steps": task.steps,
        "train_size": len(task.train),
        "val_size": len(task.val),
        "test_size": len(task.test),
        "mask_elements_per_step": _mask_elements(task),
        "runs": runs,
        "interleaved_step_s": timing,
    }


def run_exp1(s: Exp1Settings, *, progress: bool = True, store: RunStore | None = None) -> dict[str, Any]:
    """Run every task x variation x seed, then each task's interleaved timing; return settings,
    machine and per task its runs, interleaved step times and mask element count. Runs found in
    `store` with the same settings are read instead of run."""
    store = store or RunStore(None)
    variations = parse_variations(list(s.variations))
    bar = tqdm(total=0, desc="exp-1", unit="step", disable=not progress)
    results = {}
    for name in s.tasks:
        bar.set_postfix_str(f"{name}: loading model and data")
        task = s.task(name)
        bar.total += len(variations) * (len(s.seeds) * (task.steps + 1) + s.timing_rounds * s.timing_steps)
        results[name] = _run_task(s, task, variations, store, bar)
    bar.close()
    return {
        "experiment": "exp-1",
        "settings": asdict(s),
        "machine": machine_info(s.device),
        "tasks": results,
    }
