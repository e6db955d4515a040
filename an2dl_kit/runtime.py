"""The hardware a run finds, and how the run uses it.

`setup_runtime` picks the distribution strategy and the precision policy from what TensorFlow sees:
TPU -> TPUStrategy with mixed_bfloat16; two or more GPUs -> MirroredStrategy; one GPU -> the default
strategy; GPUs of compute capability >= 7 (Kaggle's T4) -> mixed_float16; CPU -> float32. Models,
optimizers and metrics must be created inside `runtime.scope()`. `execution_rule` then decides op determinism
and XLA from the device kind, the replica count and the run's `deterministic` setting, and the tasks compile
with `Runtime.jit_compile`.

Batch and learning-rate rule: the profile's batch size is per replica, so the global batch grows with the
replica count; the learning rate is scaled by sqrt(replicas), the square-root rule for Adam-family optimizers
(Malladi et al., 2022), which keeps the update noise of the one-replica schedule.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# The run setting `deterministic`: "auto" is on for a CPU, off for accelerators (see `execution_rule`).
DETERMINISM = ("auto", "on", "off")
# Tensor cores (Volta and later: V100, T4, A100...) make float16 matmuls/convs fast from capability 7.0.
MIXED_FLOAT16_MIN_CAPABILITY = 7.0
_START = time.monotonic()


def log(message: str) -> None:
    """Print a progress line with the time since the process started, flushed at once."""
    elapsed = time.monotonic() - _START
    print(f"[an2dl {elapsed:7.1f}s] {message}", flush=True)


@dataclass(frozen=True)
class Runtime:
    """What a run trains on: the strategy, its replica count and the precision policy."""

    strategy: Any
    kind: str
    replicas: int
    precision: str
    devices: tuple[str, ...] = ()
    deterministic: bool = False
    jit_compile: bool = False

    def scope(self):
        return self.strategy.scope()

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def scaled_lr(self, base_lr: float) -> float:
        return base_lr * math.sqrt(self.replicas)

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": type(self.strategy).__name__,
            "kind": self.kind,
            "replicas": self.replicas,
            "precision": self.precision,
            "devices": list(self.devices),
            "deterministic": self.deterministic,
            "jit_compile": self.jit_compile,
        }

    def describe(self) -> str:
        devices = ", ".join(self.devices) or "CPU"
        return (f"{type(self.strategy).__name__} on {self.kind} x{self.replicas} ({devices}); "
                f"precision {self.precision}; deterministic {'on' if self.deterministic else 'off'}; "
                f"XLA {'on' if self.jit_compile else 'off'}")


@dataclass(frozen=True)
class Execution:
    """How a run executes on its devices: what `execution_rule` decides."""

    op_determinism: bool
    jit_compile: bool
    precision: str


def execution_rule(kind: str, replicas: int, deterministic: str = "auto", capability: float = 0.0,
                   precision: str = "auto") -> Execution:
    """Op determinism, XLA and the precision policy for `replicas` devices of `kind` ("cpu", "gpu", "tpu").

    - Determinism on -> TensorFlow op determinism and no XLA: Keras silently drops XLA under op determinism
      anyway, and forcing it makes TensorFlow refuse MaxPool gradients on a GPU (REFERENCE.md, Kaggle).
    - One GPU without determinism -> XLA, explicitly (not Keras' "auto", whose answer depends on global state).
    - Several replicas (MirroredStrategy) -> no XLA: the strategy runs the step without it.
    - CPU -> no XLA: compiling the full networks costs minutes there and buys nothing.
    - TPU -> no Keras XLA flag: TPUStrategy compiles the step itself (and the kit refuses TPU shapes).

    `deterministic` is "on", "off" or "auto": on for a CPU, where determinism costs little and tests and
    local runs must repeat exactly, off for accelerators, where deterministic kernels are slower and would
    cost a single GPU its XLA. A tri-state keeps one default for every profile and still lets the same
    `kaggle` profile be deterministic when it runs on a CPU (the gpu-check, CI).
    """
    if deterministic not in DETERMINISM:
        raise ValueError(f"deterministic must be one of {DETERMINISM}, got {deterministic!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    determinism = deterministic == "on" or (deterministic == "auto" and kind == "cpu")
    jit = kind == "gpu" and replicas == 1 and not determinism
    chosen = choose_precision(kind, capability) if precision == "auto" else precision
    return Execution(op_determinism=determinism, jit_compile=jit, precision=chosen)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, Keras and TensorFlow (op determinism is `set_op_determinism`'s, by the rule)."""
    import keras

    keras.utils.set_random_seed(seed)


def set_op_determinism(enabled: bool) -> None:
    """Turn TensorFlow op determinism on or off for this process. Off must be possible too: one process may
    run both (the gpu-check times a step each way; tests run CPU and GPU-shaped configurations)."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the public API only has `enable`

    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def _find_tpu():
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None
    return resolver


def _gpu_names_and_capability(gpus) -> tuple[list[str], float]:
    import tensorflow as tf

    names, capabilities = [], []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
        major, minor = details.get("compute_capability", (0, 0))
        capabilities.append(major + minor / 10)
    return names, min(capabilities, default=0.0)


def choose_precision(kind: str, capability: float = 0.0) -> str:
    """The automatic policy: mixed_bfloat16 on TPU, mixed_float16 on GPUs of compute capability >= 7,
    float32 otherwise (CPU, and GPUs without tensor cores such as the P100, capability 6.0)."""
    if kind == "tpu":
        return "mixed_bfloat16"
    if kind == "gpu" and capability >= MIXED_FLOAT16_MIN_CAPABILITY:
        return "mixed_float16"
    return "float32"


def setup_runtime(seed: int | None = None, precision: str = "auto", deterministic: str = "auto") -> Runtime:
    """Seed everything, choose the strategy for this machine, and apply `execution_rule`: op determinism, the
    XLA choice (`Runtime.jit_compile`) and the Keras precision policy."""
    import keras
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if seed is not None:
        set_seed(seed)

    tpu = _find_tpu() if os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0") else None
    gpus = tf.config.list_physical_devices("GPU")
    capability = 0.0
    if tpu is not None:
        strategy, kind, devices = tf.distribute.TPUStrategy(tpu), "tpu", ()
    elif gpus:
        for gpu in gpus:
            with contextlib.suppress(RuntimeError):  # must happen before the GPUs are initialised
                tf.config.experimental.set_memory_growth(gpu, True)
        names, capability = _gpu_names_and_capability(gpus)
        strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        kind, devices = "gpu", tuple(names)
    else:
        logical_cpus = tf.config.list_logical_devices("CPU")
        # Several logical CPUs only exist when a test splits the CPU to exercise mirroring.
        strategy = (tf.distribute.MirroredStrategy([d.name for d in logical_cpus])
                    if len(logical_cpus) > 1 else tf.distribute.get_strategy())
        kind, devices = "cpu", ()

    replicas = strategy.num_replicas_in_sync
    rule = execution_rule(kind, replicas, deterministic, capability, precision)
    set_op_determinism(rule.op_determinism)
    keras.mixed_precision.set_global_policy(rule.precision)
    return Runtime(strategy=strategy, kind=kind, replicas=replicas, precision=rule.precision, devices=devices,
                   deterministic=rule.op_determinism, jit_compile=rule.jit_compile)


# The libraries a run depends on, by the name they are imported as.
LIBRARIES = ("numpy", "tensorflow", "keras", "albumentations", "pandas", "matplotlib")


@dataclass(frozen=True)
class Library:
    """An import name and the installed distributions that provide it, as sorted (distribution, version) pairs:
    one in a sound environment, none when it is missing, several in a broken one (`tensorflow` and
    `tensorflow-cpu` both installed over the same files)."""

    module: str
    providers: tuple[tuple[str, str], ...]

    @property
    def version(self) -> str | None:
        """The installed version; None when missing, or when several distributions claim the module's files
        and no single version can be trusted."""
        return self.providers[0][1] if len(self.providers) == 1 else None

    def describe(self) -> str:
        """`2.20.0 (tensorflow-cpu)`, the distribution named when it is not the module's own name; `2.0.2`;
        `not installed`; or `broken (tensorflow 2.20.0 and tensorflow-cpu 2.19.0 both provide it)`."""
        if len(self.providers) > 1:
            return f"broken ({self.claimants()})"
        if not self.providers:
            return "not installed"
        name, version = self.providers[0]
        return version if _canonical(name) == _canonical(self.module) else f"{version} ({name})"

    def claimants(self) -> str:
        """`tensorflow 2.20.0 and tensorflow-cpu 2.19.0 both provide it`: every distribution of a broken one."""
        named = [f"{name} {version}" for name, version in self.providers]
        return (f"{', '.join(named[:-1])} and {named[-1]} "
                f"{'both' if len(named) == 2 else 'all'} provide it")


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Tensorflow_CPU` -> `tensorflow-cpu`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_libraries(modules: tuple[str, ...] = LIBRARIES) -> dict[str, Library]:
    """What provides each import name, read from the installed metadata without importing anything.

    By module, not by distribution name (`packages_distributions`): `import tensorflow` works whichever of
    `tensorflow`, `tensorflow-cpu`, `tensorflow-intel` or `tf-nightly` installed it. One distribution seen
    twice on sys.path counts once (Python imports the first; `version` reads that one).
    """
    table = importlib.metadata.packages_distributions()
    found = {}
    for module in modules:
        names = sorted({_canonical(name) for name in table.get(module, ()) if name})
        found[module] = Library(module, tuple((name, importlib.metadata.version(name)) for name in names))
    return found


def library_versions() -> dict[str, str]:
    """Versions of Python, the platform and every library a run depends on (`Library.describe`)."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    versions.update((module, library.describe()) for module, library in find_libraries().items())
    return versions
