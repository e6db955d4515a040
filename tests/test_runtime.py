"""setup_runtime: strategy, replicas and precision for the hardware found, and the batch/LR rule.

The GPU and TPU branches run against faked devices (monkeypatched TensorFlow device queries and strategy
classes): what is tested is the choice `setup_runtime` makes, not the hardware. Real mirroring over two
logical CPU devices is in test_hardware.py.
"""

import math
import re

import keras
import pytest
import tensorflow as tf

from an2dl_kit import runtime
from an2dl_kit.runtime import Runtime, library_versions, log, setup_runtime

T4 = {"device_name": "Tesla T4", "compute_capability": (7, 5)}
P100 = {"device_name": "Tesla P100-PCIE-16GB", "compute_capability": (6, 0)}


@pytest.fixture(autouse=True)
def float32_policy_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


class FakeStrategy:
    """Stands in for a multi-device strategy; records how it was made."""

    replicas = 1

    def __init__(self, *args, **kwargs):
        self.args = args
        self.num_replicas_in_sync = self.replicas


class MirroredStrategy(FakeStrategy):
    replicas = 2


class TPUStrategy(FakeStrategy):
    replicas = 8


@pytest.fixture
def fake_gpus(monkeypatch):
    """Make TensorFlow report the given GPUs (a list of device-detail dicts)."""

    def install(details):
        gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(len(details))]
        real_list = tf.config.list_physical_devices
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: gpus if kind == "GPU" else real_list(kind))
        monkeypatch.setattr(tf.config.experimental, "get_device_details",
                            lambda gpu: details[gpus.index(gpu)])
        monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda gpu, on: None)
        monkeypatch.setattr(tf.distribute, "MirroredStrategy", MirroredStrategy)

    return install


def test_plain_cpu_gets_the_default_strategy_in_float32():
    rt = setup_runtime(seed=0)
    assert rt.kind == "cpu"
    assert rt.replicas == 1
    assert rt.precision == "float32"
    assert rt.strategy is tf.distribute.get_strategy()
    assert keras.mixed_precision.global_policy().name == "float32"
    assert rt.as_dict() == {"strategy": "_DefaultDistributionStrategy", "kind": "cpu", "replicas": 1,
                            "precision": "float32", "devices": [], "deterministic": True, "jit_compile": False}


def test_models_built_in_scope_live_on_the_strategy():
    rt = setup_runtime()
    with rt.scope():
        assert tf.distribute.get_strategy() is rt.strategy
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
    assert layer.kernel.shape == (3, 2)


def test_seed_makes_keras_initialisation_repeat():
    setup_runtime(seed=3)
    first = keras.layers.Dense(4, kernel_initializer="glorot_uniform")
    first.build((None, 5))
    setup_runtime(seed=3)
    second = keras.layers.Dense(4, kernel_initializer="glorot_uniform")
    second.build((None, 5))
    assert (first.kernel.numpy() == second.kernel.numpy()).all()


def test_t4_gpu_gets_mixed_float16(fake_gpus):
    fake_gpus([T4])
    rt = setup_runtime()
    assert (rt.kind, rt.replicas, rt.precision) == ("gpu", 1, "mixed_float16")
    assert rt.devices == ("Tesla T4",)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"


def test_two_t4s_get_mirrored_strategy_and_mixed_float16(fake_gpus):
    fake_gpus([T4, T4])
    rt = setup_runtime()
    assert isinstance(rt.strategy, MirroredStrategy)
    assert (rt.kind, rt.replicas, rt.precision) == ("gpu", 2, "mixed_float16")
    assert rt.as_dict()["strategy"] == "MirroredStrategy"
    assert "x2" in rt.describe()


def test_gpu_below_capability_7_stays_float32(fake_gpus):
    fake_gpus([P100])
    assert setup_runtime().precision == "float32"


def test_mixed_gpus_follow_the_weakest(fake_gpus):
    fake_gpus([T4, P100])
    assert setup_runtime().precision == "float32"


def test_tpu_gets_tpu_strategy_and_bfloat16(monkeypatch):
    monkeypatch.setenv("TPU_NAME", "local")
    monkeypatch.setattr(runtime, "_find_tpu", lambda: "resolver")
    monkeypatch.setattr(tf.distribute, "TPUStrategy", TPUStrategy)
    rt = setup_runtime()
    assert isinstance(rt.strategy, TPUStrategy) and rt.strategy.args == ("resolver",)
    assert (rt.kind, rt.replicas, rt.precision) == ("tpu", 8, "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_tpu_name_without_a_reachable_tpu_falls_back(monkeypatch):
    monkeypatch.setenv("TPU_NAME", "nowhere")
    monkeypatch.setattr(runtime, "_find_tpu", lambda: None)
    assert setup_runtime().kind == "cpu"


def test_explicit_precision_overrides_the_choice(fake_gpus):
    fake_gpus([T4])
    assert setup_runtime(precision="float32").precision == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="float8"):
        setup_runtime(precision="float8")


@pytest.mark.parametrize(("kind", "capability", "expected"), [
    ("cpu", 0.0, "float32"),
    ("gpu", 6.0, "float32"),      # P100: no tensor cores
    ("gpu", 7.0, "mixed_float16"),  # V100
    ("gpu", 7.5, "mixed_float16"),  # T4
    ("gpu", 8.0, "mixed_float16"),  # A100
    ("tpu", 0.0, "mixed_bfloat16"),
])
def test_choose_precision_rule(kind, capability, expected):
    choose = getattr(runtime, "choose_precision", None)
    if choose is None:
        pytest.skip("runtime.choose_precision not in runtime.py yet (requested from the lead)")
    assert choose(kind, capability) == expected


# (kind, replicas, deterministic) -> (op determinism, jit_compile): every combination.
RULE_TABLE = [
    ("cpu", 1, "auto", True, False), ("cpu", 1, "on", True, False), ("cpu", 1, "off", False, False),
    ("cpu", 2, "auto", True, False), ("cpu", 2, "on", True, False), ("cpu", 2, "off", False, False),
    ("gpu", 1, "auto", False, True), ("gpu", 1, "on", True, False), ("gpu", 1, "off", False, True),
    ("gpu", 2, "auto", False, False), ("gpu", 2, "on", True, False), ("gpu", 2, "off", False, False),
    ("tpu", 8, "auto", False, False), ("tpu", 8, "on", True, False), ("tpu", 8, "off", False, False),
]


@pytest.mark.parametrize(("kind", "replicas", "deterministic", "op_determinism", "jit"), RULE_TABLE)
def test_execution_rule_table(kind, replicas, deterministic, op_determinism, jit):
    capability = 7.5 if kind == "gpu" else 0.0
    rule = runtime.execution_rule(kind, replicas, deterministic, capability)
    assert (rule.op_determinism, rule.jit_compile) == (op_determinism, jit)
    assert rule.jit_compile is jit  # explicit booleans, never Keras' "auto"
    assert rule.precision == runtime.choose_precision(kind, capability)
    assert not (rule.op_determinism and rule.jit_compile)


def test_execution_rule_refuses_unknown_settings():
    with pytest.raises(ValueError, match="maybe"):
        runtime.execution_rule("gpu", 1, "maybe")
    assert runtime.execution_rule("gpu", 1, "off", 7.5, precision="float32").precision == "float32"


@pytest.mark.parametrize(("gpus", "deterministic", "op_determinism", "jit"), [
    ([T4], "auto", False, True), ([T4], "on", True, False), ([T4, T4], "off", False, False),
])
def test_setup_runtime_applies_the_rule(fake_gpus, gpus, deterministic, op_determinism, jit):
    from tensorflow.python.framework.config import is_op_determinism_enabled

    fake_gpus(gpus)
    rt = setup_runtime(seed=0, deterministic=deterministic)
    assert (rt.deterministic, rt.jit_compile) == (op_determinism, jit)
    assert is_op_determinism_enabled() is op_determinism
    assert f"XLA {'on' if jit else 'off'}" in rt.describe()


def test_seed_alone_no_longer_forces_op_determinism(fake_gpus):
    from tensorflow.python.framework.config import is_op_determinism_enabled

    fake_gpus([T4])
    setup_runtime(seed=1)
    assert not is_op_determinism_enabled()
    setup_runtime(seed=1, deterministic="auto")  # a CPU would turn it on; a GPU does not
    assert not is_op_determinism_enabled()


@pytest.mark.parametrize("replicas", [1, 2, 8])
def test_global_batch_and_sqrt_learning_rate_rule(replicas):
    rt = Runtime(strategy=None, kind="gpu", replicas=replicas, precision="float32")
    assert rt.global_batch(64) == 64 * replicas
    assert rt.scaled_lr(1e-4) == pytest.approx(1e-4 * math.sqrt(replicas))


def test_mixed_float16_keeps_outputs_float32_and_scales_the_loss(fake_gpus):
    fake_gpus([T4])
    setup_runtime()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.Dense(2, activation="softmax", dtype="float32")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert model.layers[0].compute_dtype == "float16"
    assert model(tf.zeros((1, 4))).dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_library_versions_name_every_dependency():
    versions = library_versions()
    for package in ("python", "numpy", "tensorflow", "keras", "albumentations"):
        assert versions[package] and versions[package] != "not installed"
    assert versions["tensorflow"] == tf.__version__


def test_log_lines_are_timestamped(capsys):
    log("hello")
    assert re.fullmatch(r"\[an2dl +\d+\.\ds\] hello\n", capsys.readouterr().out)
