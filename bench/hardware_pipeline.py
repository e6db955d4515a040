"""Input-pipeline overhead: training throughput with the real input pipeline vs preloaded tensors.

For each task, the `local` profile's model is built and compiled the way the task does it and fed two ways:
the real pipeline (`pipeline.Batches` with the task's augmentation and the profile's worker threads, streamed
as training streams it) and tensors prepared beforehand (the same augmented batches, materialised once, served
by a cached, prefetched `tf.data` pipeline). Both feeds train the same model in ROUNDS alternating fits of two
echo periods (`echo` epochs each, one without echo); the second period is timed, so the pipeline is measured
in its steady state (its workers already building the epoch's first batches while the previous one ends) over
a whole period (the epoch that draws the costly augmentation stage and those that reuse it), and a change in
the machine's load hits both feeds alike; each feed's best round counts (other jobs only ever slow an epoch
down). Throughput is wall-clock images per second. The ratio pipeline / preloaded is what the augmentation
costs the training loop; the target is >= 0.9. The note adds the same ratio in process CPU time, which other
jobs do not disturb: it charges every augmentation cycle to the pipeline even when the cycle was spare, so it
is a lower bound of the wall-clock ratio on a machine whose cores TensorFlow keeps busy. On two CPU cores the
augmentation threads compete with TensorFlow's compute for the same cores, which a GPU machine's spare CPU
cores would not.

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
# (6-batch epochs made the pipeline look 0.55x, mostly start-up). Mars, ~10x slower per image on a CPU: 120
# batches of tiles, which the profile's half-pass epochs make ~65-batch epochs (real ones hold ~186); with
# ~22-batch epochs the ratio moved between 0.84 and 1.15 from one run to the next.
STEPS = 67
MARS_STEPS = 120
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


def _period_seconds(model, data, steps: int | None, echo: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per epoch over the second of two echo periods of training on `data`: a
    whole period, its first epoch drawing the costly augmentation stage and the others reusing it."""
    import keras

    starts, seconds = [], []
    clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: starts.append(_clock()),
                                           on_epoch_end=lambda epoch, logs: seconds.append(_since(starts[-1])))
    model.fit(data, steps_per_epoch=steps, epochs=2 * echo, shuffle=False, verbose=0, callbacks=[clock])
    timed = np.asarray(seconds[echo:])
    return float(timed[:, 0].mean()), float(timed[:, 1].mean())


def overhead_row(task: str, model, batches, profile_note: str) -> Row:
    prepared = _materialise(batches)
    images = sum(len(batch[0]) for batch in prepared)
    preloaded_data, stream = _preloaded(prepared), batches.dataset()
    wall = dict.fromkeys(("preloaded", "pipeline"), float("inf"))
    cpu = dict(wall)
    for round_ in range(ROUNDS):
        progress(f"pipeline: {task} round {round_ + 1} of {ROUNDS}")
        # Each round's stream starts at epochs it has not drawn yet, as a run's next periods would.
        batches.set_epoch((round_ + 1) * 2 * batches.echo)
        for name, data, steps in (("preloaded", preloaded_data, None), ("pipeline", stream, batches.num_batches)):
            seconds = _period_seconds(model, data, steps, batches.echo)
            wall[name], cpu[name] = min(wall[name], seconds[0]), min(cpu[name], seconds[1])
    real, preloaded = images / wall["pipeline"], images / wall["preloaded"]
    ratio = real / preloaded
    return Row(PART, f"{task} input pipeline / preloaded ({profile_note})", f"{ratio:.2f}", "ratio",
               f"{fmt(real)} vs {fmt(preloaded)} img/s, best of {ROUNDS} alternating echo periods of epochs of "
               f"{images} images; {target_note(ratio, TARGET)}; CPU-time ratio "
               f"{cpu['preloaded'] / cpu['pipeline']:.2f}")


def cells_row() -> Row:
    from an2dl_kit.data.synth import synth_cells
    from an2dl_kit.models.cells import build_classifier
    from an2dl_kit.runtime import setup_runtime
    from an2dl_kit.tasks import resolve_config
    from an2dl_kit.tasks.cells import compile_classifier, training_batches

    config = resolve_config(CELLS.name, "local")
    m, t, a, workers = config.model, config.training, config.augmentation, config.run.workers
    data = synth_cells(STEPS * t.batch_size, seed=SEED)
    batches = training_batches(data.images, data.labels, config, t.batch_size)

    runtime = setup_runtime(SEED)
    model, _ = build_classifier(m.backbone, m.weights, image_size=m.image_size, head_units=m.head_units)
    compile_classifier(model, config, runtime)
    note = f"{m.backbone}, batch {t.batch_size}, {a.augment} echoed {a.echo}x, {workers} workers"
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
