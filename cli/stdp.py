"""``annsnn zoo train stdp_mnist --snn --rule stdp``: unsupervised STDP training
(:mod:`annsnn.zoo.stdp`); parses nothing itself, formats progress and results."""
from __future__ import annotations

from pathlib import Path

from annsnn.errors import UsageError

__all__ = ["STDP_ARCH", "train_stdp_command"]

STDP_ARCH = "stdp_mnist"


def train_stdp_command(arch: str, data: str, data_root, download: bool, epochs: int, batch_size: int | None, seed: int, samples: int | None,
                       steps: int | None, neurons: int, assign_samples: int, test_samples: int | None, target: Path, progress, out, err) -> None:
    """Train, save atomically (weights only), print one line per epoch."""
    import torch

    from annsnn.files import atomic_path
    from annsnn.zoo.stdp import StdpConfig, StdpEvent, stdp_checkpoint, train_stdp

    if arch != STDP_ARCH:
        raise UsageError(f"--rule stdp trains the Diehl & Cook network '{STDP_ARCH}', not {arch!r}")
    base = StdpConfig()
    presentation = base.presentation_ms if steps is None else steps * base.dt_ms
    config = StdpConfig(neurons=neurons, dataset=data, epochs=epochs, train_samples=base.train_samples if samples is None else samples, assign_samples=assign_samples, test_samples=test_samples,
                        batch_size=base.batch_size if batch_size is None else batch_size, presentation_ms=presentation, seed=seed, data_root=data_root, download=download)
    with progress() as bar:
        task = bar.add_task(f"STDP, {neurons} neurons, T={config.steps}", total=None, status="")

        def on_event(event: StdpEvent) -> None:
            status = f"epoch {event.epoch}/{epochs}, {event.spikes_per_image:.1f} spikes/image"
            if event.epoch_done:
                status += f", test {100 * event.test_top1:.2f}% ({event.epoch_time_s:.0f} s)"
                err.print(f"epoch {event.epoch}: {status}")
            bar.update(task, completed=event.images, total=event.total_images, status=status)
            tenth = max(1, event.total_images // 10)
            if not err.is_terminal and not event.epoch_done and event.images // tenth != (event.images - config.batch_size) // tenth:
                err.print(f"{event.images}/{event.total_images} images: {status}")  # a log file sees no bar

        result = train_stdp(config, on_event)
    with atomic_path(target) as tmp:
        torch.save(stdp_checkpoint(config, result), str(tmp))
    for row in result.history:
        out.print(f"epoch {row['epoch']}: {row['train_images']} training images, {row['epoch_time_s']:.1f} s wall ({row['epoch_cpu_s']:.1f} s CPU), "
                  f"{row['spikes_per_image']:.1f} spikes/image, test {100 * row['test_top1']:.2f}% on {row['test_images']} images")
    out.print(f"wrote {target} (test top-1 {100 * result.test_top1:.2f}% at T={config.steps}, {result.train_images} training presentations in "
              f"{result.train_time_s:.1f} s wall, {result.train_cpu_s:.1f} s CPU); analyse it with "
              f"'annsnn energy --model {target} --encoding poisson --T {config.steps}'")
