"""gpu-check: train each task's `kaggle` profile for a few steps on synthetic data, on whatever machine this is.

Prints, per task and phase: step time, images per second, peak memory (accelerator memory on a GPU, the
process's peak RSS on a CPU) and the projected hours of the phase's configured epochs at that rate, beside
`bench.hardware_estimate`'s T4 x2 estimate for the same phase (its GPU, all-reduce and overhead parts; the
augmentation bound and TTA are left out of both). The networks are full size with random weights: the
weights' values do not change the step time, and no download can stall the check.

- On a GPU: the profile's batch, `GPU_STEPS` timed steps, the fraction of the accelerator's peak FLOP/s
  reached (training FLOPs per image, counted as `an2dl_kit.models.flops` does, x images/s / peak x GPUs), and
  the fine-tuning step again with determinism on, to show what `deterministic=on` costs.
- On a CPU: the CPU split into two logical devices, so that the full-size `kaggle` graph runs as on T4 x2
  (MirroredStrategy; float32 there), with `CPU_BATCH` images per replica and `CPU_STEPS` timed steps: a
  CI-sized check that the graph builds, compiles and trains, not a speed figure.

Run: `make gpu-check` or `python -m bench.gpu_check`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import subprocess
import sys
import time

from bench.common import Row, fmt, main, parse_rows, progress

PART = "gpu-check"
GPU_STEPS, CPU_STEPS = 10, 2
CPU_BATCH = 2  # per replica
CPU_REPLICAS = 2
RUN_VAR = "AN2DL_GPU_CHECK_RUN"  # "task:deterministic:phases" in a child process (`run_in_child`)
# Dense fp16 tensor-core peaks (NVIDIA data sheets), by a word of the driver's device name.
PEAK_FLOPS = {"T4": 65e12, "L4": 121e12, "A100": 312e12, "H100": 989e12, "H200": 989e12, "V100": 125e12}


def split_cpu() -> bool:
    """Two logical CPUs when there is no GPU (must run before TensorFlow sets up its devices)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return False
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * CPU_REPLICAS)
    return True


def task_config(task: str, on_cpu: bool, deterministic: str):
    from an2dl_kit import config as cfg
    from an2dl_kit.tasks import resolve_config

    overrides = {"deterministic": deterministic, **({"batch_size": CPU_BATCH} if on_cpu else {})}
    config = resolve_config(task, "kaggle", overrides)
    return cfg.derive(config, weights="none") if "weights" in cfg.field_names(config) else config


def time_phase(plan, phase, runtime, steps: int) -> dict:
    """Compile `phase`, train one warm-up step (tracing, XLA), then time `steps` steps of prepared batches."""
    import tensorflow as tf

    batches = [plan.train[0]] * (steps + 1)  # one prepared batch: the accelerator's step, not augmentation
    with runtime.scope():
        phase.compile(plan.model)
    gpus = [d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices("GPU")]
    for gpu in gpus:
        tf.config.experimental.reset_memory_stats(gpu)
    plan.model.train_on_batch(*batches[0])
    started = time.perf_counter()
    for batch in batches[1:]:
        plan.model.train_on_batch(*batch)
    step = (time.perf_counter() - started) / steps
    peak = (sum(tf.config.experimental.get_memory_info(g)["peak"] for g in gpus) if gpus
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"step": step, "images_s": len(batches[0][0]) / step, "peak": peak}


def phase_images(task: str, config) -> int:
    """Training images per epoch of the full data (`bench.hardware_estimate`'s course sizes)."""
    from an2dl_kit.config import flat_fields
    from bench import hardware_estimate as he

    fields = flat_fields(config)
    if task == "cells":
        return round(he.CELLS_IMAGES * (1 - fields["val_fraction"])) * fields["repeats"]
    tiles = round(he.MARS_TILES * (1 - fields["val_fraction"]))
    rocks = round(he.MARS_BIG_ROCK_TILES * tiles / he.MARS_TILES)
    return (tiles + rocks * (fields["oversample_big_rock"] - 1)) * fields["repeats"]


def estimate_hours(task: str, phase, config, images: int, flops: float, trainable: int) -> float:
    """`hardware_estimate`'s T4 x2 epoch (GPU, all-reduce, overhead; no augmentation bound) x the epochs, at
    the profile's own batch (not the CPU check's)."""
    from an2dl_kit.tasks import resolve_config
    from bench import hardware_estimate as he

    batch = resolve_config(task, "kaggle").training.batch_size

    passes = 1 if phase.name == "head" else 3
    val = round(images / config.augmentation.repeats * config.data.val_fraction / (1 - config.data.val_fraction))
    parts = he.epoch_seconds(he.Phase(phase.name, phase.epochs, images, passes * flops, val, flops, trainable,
                                      he.GPUS * batch, math.inf))
    return phase.epochs * (parts["gpu"] + parts["allreduce"] + parts["overhead"]) / 3600


def task_rows(task: str, on_cpu: bool, deterministic: str = "auto", phases: tuple[str, ...] = ()) -> list[Row]:
    """Rows for each phase of `task`'s kaggle profile (only `phases` when given)."""
    import keras

    from an2dl_kit import runtime as rt
    from an2dl_kit.kaggle.preflight import synthetic_data
    from an2dl_kit.models.flops import forward_flops
    from an2dl_kit.tasks.runner import hooks_for
    from bench.hardware_estimate import trainable_count

    hooks, config = hooks_for(task), task_config(task, on_cpu, deterministic)
    runtime = rt.setup_runtime(0, config.run.precision, config.run.deterministic)
    steps = CPU_STEPS if on_cpu else GPU_STEPS
    plan = hooks.plan(config, runtime, synthetic_data(hooks, runtime.global_batch(config.training.batch_size)))
    if task == "cells":  # random weights make the plan from-scratch: time the pretrained phases instead
        from an2dl_kit.tasks.cells import phases as cells_phases

        plan = dataclasses.replace(plan, phases=cells_phases(config, runtime, pretrained=True))
    progress(f"gpu-check: {task} FLOPs")
    flops = forward_flops(plan.model, plan.model.input_shape[1:])
    out = []
    for phase in plan.phases:
        if phases and phase.name not in phases:
            continue
        progress(f"gpu-check: {task} {phase.name}, {steps} steps ({runtime.describe()})")
        measured = time_phase(plan, phase, runtime, steps)
        images = phase_images(task, config)
        hours = phase.epochs * images / measured["images_s"] / 3600
        estimate = estimate_hours(task, phase, config, images, flops, trainable_count(plan.model))
        note = (f"{fmt(measured['images_s'])} img/s; peak {'GPU' if runtime.kind == 'gpu' else 'RSS'} "
                f"{fmt(measured['peak'] / 2**30)} GiB; {phase.epochs} epochs x {images:,} img: {fmt(hours)} h here, "
                f"estimate {fmt(estimate)} h on T4 x2; {runtime.describe()}")
        if runtime.kind == "gpu":
            note += f"; {peak_fraction(runtime, phase, flops, measured['images_s'])}"
        out.append(Row(PART, f"{task} kaggle {phase.name} step, global batch {len(plan.train[0][0])}",
                       fmt(measured["step"] * 1e3), "ms", note))
    keras.backend.clear_session()
    return out


def peak_fraction(runtime, phase, flops: float, images_s: float) -> str:
    """Model FLOPs x images/s / (peak x GPUs); training is 3x forward, a frozen backbone 1x."""
    name = next((word for word in PEAK_FLOPS if any(word in d for d in runtime.devices)), None)
    if name is None:
        return "peak FLOP/s of this GPU unknown"
    passes = 1 if phase.name == "head" else 3
    fraction = passes * flops * images_s / (PEAK_FLOPS[name] * runtime.replicas)
    return f"{fraction:.1%} of {runtime.replicas} x {name} fp16 peak ({PEAK_FLOPS[name] / 1e12:g} TFLOP/s)"


def run_in_child(task: str, deterministic: str, phases: tuple[str, ...] = ()) -> list[Row]:
    """`task_rows` in a fresh process: two MirroredStrategy models in one process clash in their collective
    instance keys, and TensorFlow's device split can only be made once per process."""
    env = {**os.environ, RUN_VAR: f"{task}:{deterministic}:{','.join(phases)}"}
    result = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--rows"], env=env, stdout=subprocess.PIPE,
                            text=True, check=False)
    if result.returncode:
        raise SystemExit(f"gpu-check: {task} (deterministic {deterministic}) failed, exit {result.returncode}")
    return parse_rows(result.stdout)


def rows() -> list[Row]:
    if os.environ.get(RUN_VAR):  # a child: one task, one setting
        task, deterministic, phases = os.environ[RUN_VAR].split(":")
        on_cpu = split_cpu()
        return task_rows(task, on_cpu, deterministic, tuple(p for p in phases.split(",") if p))
    import tensorflow as tf

    started = time.monotonic()
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    out = run_in_child("cells", "auto") + run_in_child("mars", "auto")
    if on_gpu:  # what determinism costs: the heaviest phase of each task again, deterministic
        out += [Row(PART, "deterministic=on: " + r.item, r.value, r.unit, r.note)
                for r in run_in_child("cells", "on", ("finetune",)) + run_in_child("mars", "on")]
    out.append(Row(PART, "gpu-check wall time", fmt(time.monotonic() - started), "s",
                   "GPU: the profiles' batches" if on_gpu else "CPU: 2 logical devices, CI-sized batches"))
    return out


if __name__ == "__main__":
    raise SystemExit(main(rows))
