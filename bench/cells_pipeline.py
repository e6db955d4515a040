"""Does the cells input pipeline keep up? Training throughput with on-the-fly augmentation vs preloaded.

One process, one model (the `local` profile's), two ways of feeding it:
- preloaded: the images already in memory as float32 tensors with one-hot labels, no augmentation;
- augmented: `pipeline.Batches` with the profile's `CellsAugment` (albumentations per image, class weights,
  CutMix/MixUp where the profile has them) on the profile's loader threads.
Each is warmed up (tracing excluded), then timed in alternating rounds so a change in machine load hits
both alike. Prints images/s of each and the ratio augmented/preloaded (target >= 0.9).

    nice -n 10 python -m bench.cells_pipeline [--profile local] [--rounds 3] [--steps 40] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from an2dl_kit.task import CELLS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 0.9


class _StepTimer:
    """Wall-clock time of the batches after the first of each fit call (the first may wait on the queue
    filling or on tracing)."""

    def __init__(self):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_batch_begin(inner, batch, logs=None):
                if batch == 1:
                    inner.start = time.perf_counter()

            def on_train_end(inner, logs=None):
                self.seconds = time.perf_counter() - inner.start

        self.callback = Timer()
        self.seconds = 0.0


def pool(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Real training images when the shared data is present, else synthetic ones."""
    from an2dl_kit.data.discover import shared_data_root

    root = shared_data_root()
    if root is not None:
        from an2dl_kit.data.io import load_cells_train

        data = load_cells_train(root / CELLS.name / CELLS.train_file)
        return data.images[:n], data.labels[:n]
    from an2dl_kit.data.synth import synth_cells

    data = synth_cells(n, seed=0)
    return data.images, data.labels


def measure(profile_name: str, rounds: int, steps: int, workers: int | None = None) -> dict:
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.models.cells import build_classifier
    from an2dl_kit.pipeline import Batches
    from an2dl_kit.runtime import setup_runtime
    from an2dl_kit.tasks import resolve_config
    from an2dl_kit.tasks.cells import class_weight_vector, compile_classifier, onehot

    config = resolve_config(CELLS.name, profile_name, {"workers": workers})  # None: the profile's
    m, a, workers = config.model, config.augmentation, config.run.workers
    runtime = setup_runtime(seed=0)
    batch = runtime.global_batch(config.training.batch_size)
    # Enough images that no timed fit call runs out of batches (a short epoch would inflate the rate).
    images, labels = pool((steps + 1) * batch)
    weights = class_weight_vector(labels)
    preloaded_x, preloaded_y = images.astype(np.float32), onehot(labels)
    augment = CellsAugment(a.augment, class_weights=weights, cutmix_p=a.cutmix_p, mixup_p=a.mixup_p)
    augmented = Batches(images, labels, batch_size=batch, transform=augment, seed=0, workers=workers)
    with runtime.scope():
        model, _ = build_classifier(m.backbone, "none", image_size=m.image_size, head_units=m.head_units)
        compile_classifier(model, config, runtime)

    def fit_preloaded(n_steps):
        timer = _StepTimer()
        model.fit(preloaded_x, preloaded_y, batch_size=batch, steps_per_epoch=n_steps, epochs=1, verbose=0,
                  callbacks=[timer.callback], shuffle=True)
        return timer.seconds

    def fit_augmented(n_steps):
        timer = _StepTimer()
        model.fit(augmented, steps_per_epoch=n_steps, epochs=1, verbose=0, callbacks=[timer.callback])
        return timer.seconds

    fit_preloaded(3)
    fit_augmented(3)
    seconds = {"preloaded": 0.0, "augmented": 0.0}
    for r in range(rounds):
        for name, fit in (("preloaded", fit_preloaded), ("augmented", fit_augmented)):
            seconds[name] += fit(steps + 1)
            print(f"[bench] round {r + 1}/{rounds} {name}: {seconds[name]:.1f} s so far", file=sys.stderr,
                  flush=True)
    images_timed = rounds * steps * batch
    rates = {name: images_timed / s for name, s in seconds.items()}
    return {"profile": profile_name, "augment": a.augment, "workers": workers, "batch": batch,
            "preloaded": rates["preloaded"], "augmented": rates["augmented"],
            "ratio": rates["augmented"] / rates["preloaded"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round and feeding mode")
    parser.add_argument("--workers", type=int, help="loader threads (default: the profile's)")
    args = parser.parse_args(argv)
    result = measure(args.profile, args.rounds, args.steps, args.workers)
    verdict = "met" if result["ratio"] >= TARGET else "missed"
    print(f"profile {result['profile']}: model fed {result['batch']}-image batches")
    print(f"preloaded tensors:                {result['preloaded']:8.1f} img/s")
    print(f"augmented ({result['augment']}, {result['workers']} workers): {result['augmented']:8.1f} img/s")
    print(f"ratio augmented/preloaded: {result['ratio']:.3f} (target >= {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
