"""Input-pipeline overhead: training throughput with the real input pipeline vs preloaded tensors.

For each task, the `local` profile's model is built and compiled the way the task does it and fed two
ways: the real pipeline (`pipeline.Batches` with the task's augmentation and the profile's worker
threads, streamed as training streams it) and tensors prepared beforehand (the same augmented batches,
materialised once, served by a cached, prefetched `tf.data` pipeline). Both feeds train the same model in
ROUNDS alternating fits of two epochs; the second epoch of each fit is timed, so the pipeline is measured in
its steady state (its workers already building the epoch's first batches while the previous one ends), and
a change in the machine's load hits both feeds alike; each feed's best epoch counts (other jobs only ever
slow an epoch down). Throughput is wall-clock images per second. The ratio pipeline / preloaded is what the
augmentation costs the training loop; the target is >= 0.9. The note adds the same ratio in process CPU
time, which other jobs do not disturb: it charges every augmentation cycle to the pipeline even when the
cycle was spare, so it is a lower bound of the wall-clock ratio on a machine whose cores TensorFlow keeps
busy. On two CPU cores the augmentation threads compete with TensorFlow's compute for the same cores, which
a GPU machine's spare CPU cores would not.

Run alone: `python -m bench.hardware_pipeline`.
"""

from __future__ import annotations

import time

import numpy as np

from an2dl_kit.task import CELLS, MARS
from bench.common import Row, fmt, main, progress, target_note

PART = "pipeline"
TARGET = 0.9
# Timed epochs as long as real ones, so that each epoch's start-up (loader threads, a first batch nobody
# prefetched) weighs what it weighs in training: cells `local` trains 2,160 images in batches of 32 per epoch
# (6-batch epochs made the pipeline look 0.55x, mostly start-up). Mars, ~10x slower per image on a CPU: 40
# batches of tiles, which the profile's half-pass epochs make ~22-batch epochs (real ones hold ~170), so its
# ratio is a lower bound.
STEPS = 67
MARS_STEPS = 40
SEED = 0
ROUNDS = 3


def _materialise(batches) -> list[tuple]:
    """Every batch of one epoch, as the pipeline produces it."""
    return [batches[i] for i in range(batches.num_batches)]


def _preloaded(prepared: list[tuple]):
    import tensorflow as tf

    columns = [np.concatenate([batch[k] for batch in prepared]) for k in range(len(prepared[0]))]
    batch_size = len(prepared[0][0])
    return tf.data.Dataset.from_tensor_slices(tuple(columns)).batch(batch_size).cache().prefetch(
        tf.data.AUTOTUNE)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _second_epoch_seconds(model, feed) -> tuple[float, float]:
    """(wall, process CPU) seconds of the second of two training epochs on `feed` = (data, steps per epoch)."""
    import keras

    starts, seconds = [], []
    clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: starts.append(_clock()),
                                           on_epoch_end=lambda epoch, logs: seconds.append(_since(starts[-1])))
    data, steps = feed
    model.fit(data, steps_per_epoch=steps, epochs=2, shuffle=False, verbose=0, callbacks=[clock])
    return seconds[1]


def overhead_row(task: str, model, batches, profile_note: str) -> Row:
    prepared = _materialise(batches)
    images = sum(len(batch[0]) for batch in prepared)
    feeds = {"preloaded": (_preloaded(prepared), None), "pipeline": (batches.dataset(), batches.num_batches)}
    wall, cpu = dict.fromkeys(feeds, float("inf")), dict.fromkeys(feeds, float("inf"))
    for round_ in range(ROUNDS):
        progress(f"pipeline: {task} round {round_ + 1} of {ROUNDS}")
        for name, feed in feeds.items():
            seconds = _second_epoch_seconds(model, feed)
            wall[name], cpu[name] = min(wall[name], seconds[0]), min(cpu[name], seconds[1])
    real, preloaded = images / wall["pipeline"], images / wall["preloaded"]
    ratio = real / preloaded
    return Row(PART, f"{task} input pipeline / preloaded ({profile_note})", f"{ratio:.2f}", "ratio",
               f"{fmt(real)} vs {fmt(preloaded)} img/s, best of {ROUNDS} alternating second epochs of {images} "
               f"images; {target_note(ratio, TARGET)}; CPU-time ratio {cpu['preloaded'] / cpu['pipeline']:.2f}")


def cells_row() -> Row:
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.data.synth import synth_cells
    from an2dl_kit.models.cells import build_classifier
    from an2dl_kit.pipeline import Batches
    from an2dl_kit.runtime import setup_runtime
    from an2dl_kit.tasks import resolve_config
    from an2dl_kit.tasks.cells import class_weight_vector, compile_classifier

    config = resolve_config(CELLS.name, "local")
    m, t, a, workers = config.model, config.training, config.augmentation, config.run.workers
    data = synth_cells(STEPS * t.batch_size, seed=SEED)
    transform = CellsAugment(a.augment, class_weights=class_weight_vector(data.labels), cutmix_p=a.cutmix_p,
                             mixup_p=a.mixup_p)
    batches = Batches(data.images, data.labels, batch_size=t.batch_size, transform=transform, seed=SEED,
                      workers=workers, repeats=a.repeats)

    runtime = setup_runtime(SEED)
    model, _ = build_classifier(m.backbone, m.weights, image_size=m.image_size, head_units=m.head_units)
    compile_classifier(model, config, runtime)
    note = f"{m.backbone}, batch {t.batch_size}, {a.augment}, {workers} workers"
    return overhead_row(CELLS.name, model, batches, note)


def mars_row() -> Row:
    from an2dl_kit.data.synth import synth_mars
    from an2dl_kit.runtime import setup_runtime
    from an2dl_kit.tasks import mars, resolve_config

    config = resolve_config(MARS.name, "local")
    t, a = config.training, config.augmentation
    data, _ = synth_mars(MARS_STEPS * t.batch_size, 1, seed=SEED)
    batches = mars.training_batches(mars.HOOKS.to_inputs(data.images), data.masks, config, t.batch_size)
    model = mars.build_and_compile(config, setup_runtime(SEED))[0]
    note = (f"U-Net width {config.model.width:g}, batch {t.batch_size}, {a.augment} {a.augment_mode}, "
            f"{config.run.workers} workers")
    return overhead_row(MARS.name, model, batches, note)


def rows() -> list[Row]:
    return [cells_row(), mars_row()]


if __name__ == "__main__":
    raise SystemExit(main(rows))
