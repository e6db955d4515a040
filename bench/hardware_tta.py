"""TTA inference throughput of both tasks with the view sets their `kaggle` profiles use.

Two figures per task:
- end to end: `tta.predict_tta` with the `local` profile's model (random weights; the speed does not
  depend on them) on this CPU, wall clock, against a plain predict of the same model;
- view handling alone: `predict_tta` around a model that answers instantly, so only the NumPy work is
  timed (view transforms, copies, undoing dense views, the running mean), in CPU time on one core. It
  does not shrink on an accelerator, so it bounds TTA throughput on any GPU; the T4 estimate uses it.

Run alone: `python -m bench.hardware_tta`.
"""

from __future__ import annotations

import time

import numpy as np

from an2dl_kit.task import CELLS, MARS
from bench.common import Row, fmt, main, progress, rate

PART = "tta"
IMAGES = {CELLS.name: 64, MARS.name: 32}
NULL_IMAGES = 256
REPEATS = 2
OUTPUT = {CELLS.name: (CELLS.num_classes,), MARS.name: (*MARS.image_shape, MARS.num_classes)}


class InstantModel:
    """Answers `predict` at once with uniform probabilities of the task's output shape."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def predict(self, x, batch_size=None, verbose=0):
        return np.full((len(x), *self.shape), 1.0 / self.shape[-1], np.float32)


def task_inputs(task: str, n: int) -> np.ndarray:
    """Inputs as the task feeds them to its model."""
    from an2dl_kit.data.synth import synth_cells, synth_mars

    if task == CELLS.name:
        return synth_cells(n, seed=0).images.astype(np.float32)
    from an2dl_kit.tasks.mars import HOOKS

    data, _ = synth_mars(n, 1, seed=0)
    return HOOKS.to_inputs(data.images)


def kaggle_config(task: str):
    from an2dl_kit.tasks import resolve_config

    return resolve_config(task, "kaggle")


def tta_predictor(task: str, views: str):
    """`(model, x) -> predictions` as the runner predicts for the submission: cells `predict_tta` with mean
    probabilities; Mars as `runner.evaluate` predicts the test set: the views undone on the maps and averaged
    (`runner.predict_views`, which also yields the plain prediction in the same pass), then both turned into
    labels (arg-max over classes 1-4 and the `kaggle` profile's majority filter, `HOOKS.to_labels`)."""
    from an2dl_kit.inference.tta import predict_tta, resolve_views

    if task == CELLS.name:
        return lambda model, x: predict_tta(model, x, views=views)
    from an2dl_kit.tasks.mars import HOOKS
    from an2dl_kit.tasks.runner import predict_views

    config = kaggle_config(task)
    postprocess = {"majority_filter": config.inference.cleanup}

    def predict(model, x):
        identity, mean = predict_views(model, x, resolve_views(views), dense=True,
                                       batch_size=config.training.batch_size)
        HOOKS.to_labels(identity, config, postprocess)  # the plain labels, scored beside the TTA ones
        return HOOKS.to_labels(mean, config, postprocess)

    return predict


def view_handling_rate(task: str) -> float:
    """Images per CPU-second of TTA's own work for the kaggle view set (no model time)."""
    x = task_inputs(task, NULL_IMAGES)
    model = InstantModel(OUTPUT[task])
    predict = tta_predictor(task, kaggle_config(task).inference.tta)
    return rate(lambda: len(predict(model, x)))


def local_model(task: str):
    from an2dl_kit.models.cells import build_classifier
    from an2dl_kit.runtime import setup_runtime
    from an2dl_kit.tasks import mars, resolve_config

    config = resolve_config(task, "local")
    if task == CELLS.name:
        m = config.model
        model, _ = build_classifier(m.backbone, "none", image_size=m.image_size, head_units=m.head_units)
        return model
    return mars.build_and_compile(config, setup_runtime())[0]


def end_to_end(task: str) -> tuple[float, float]:
    """(TTA images/s, plain images/s), wall clock, local model on this machine."""
    x = task_inputs(task, IMAGES[task])
    model = local_model(task)
    tta, plain = tta_predictor(task, kaggle_config(task).inference.tta), tta_predictor(task, "identity")
    plain(model, x)  # trace once, at the timed batch shape

    def timed(predict) -> float:  # best of REPEATS: other jobs on a shared machine only ever slow it down
        seconds = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            predict(model, x)
            seconds.append(time.perf_counter() - start)
        return len(x) / min(seconds)

    return timed(tta), timed(plain)


def rows() -> list[Row]:
    from an2dl_kit.inference.tta import resolve_views

    out = []
    for task in (CELLS.name, MARS.name):
        views = kaggle_config(task).inference.tta
        count = len(resolve_views(views))
        unit = "img/s" if task == CELLS.name else "tiles/s"
        progress(f"tta: {task} end to end")
        tta_rate, plain_rate = end_to_end(task)
        out.append(Row(PART, f"{task} TTA '{views}' ({count} views), local model, this CPU", fmt(tta_rate), unit,
                       f"plain predict {fmt(plain_rate)} {unit}: TTA costs {plain_rate / tta_rate:.1f}x "
                       f"for {count} views; wall clock, 2 shared cores"))
        progress(f"tta: {task} view handling")
        handling = view_handling_rate(task)
        out.append(Row(PART, f"{task} TTA '{views}' view handling alone", fmt(handling), f"{unit}/core",
                       "NumPy transforms, undo and mean with an instant model: the TTA ceiling on any GPU"))
    return out


if __name__ == "__main__":
    raise SystemExit(main(rows))
