"""The Codabench submission of the course's first challenge: `submission.zip` = `model.py` + the model.

The platform imports `model.py`, builds `Model()` (no arguments; it loads the saved models from its own
folder) and calls `predict(X)` with X of shape (n, *CELLS.image_shape), 0-255, expecting (n,) integer labels.
An ensemble (several members of one run, or `an2dl ensemble` over runs) is one zip: every member model with
its own TTA views and weight, their weighted mean probabilities arg-maxed.

`model.py` is self-contained (NumPy and Keras only, no import of this kit): it is written from the sources
of `an2dl_kit.errors`, `an2dl_kit.registry`, `an2dl_kit.inference.adapt`, `an2dl_kit.inference.tta` (the TTA,
the BatchNorm adaptation and the registry their names live in) and `an2dl_kit.models.colour` (the one custom
layer a saved classifier can hold), copied verbatim less their imports of each other, followed by the `Model`
class, so the submission runs exactly the test-time augmentation and adaptation the run validated. With
`bn_adapt=set` the statistics are re-estimated on the images of each `predict` call (the whole test set when
the platform passes it at once); with `batch`, on each batch of the run's batch size.
"""

from __future__ import annotations

import inspect
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from an2dl_kit import errors, registry
from an2dl_kit.files import atomic_path
from an2dl_kit.inference import adapt, tta
from an2dl_kit.models import colour
from an2dl_kit.task import CELLS

MODEL_PY = "model.py"
MODEL_FILE = "model.keras"
# Copied into model.py in this order: each module's kit imports name only the modules before it.
INLINED = (errors, registry, adapt, tta, colour)
FUTURE_IMPORT = "from __future__ import annotations"

HEADER = """\
# Codabench submission written by an2dl-kit. Self-contained: NumPy and Keras 3 only.
# Model() loads the models named in MEMBERS from this folder; Model().predict(X) maps (n, {shape}) images,
# 0-255, to (n,) integer labels: each member's probabilities averaged over its TTA views, then the members'
# weighted mean.
# The code below up to "Codabench entry point" is an2dl_kit/errors.py, registry.py, inference/adapt.py,
# inference/tta.py and models/colour.py, copied verbatim less their imports of each other.
{future}
"""

ENTRY_POINT = """

# --- Codabench entry point ---------------------------------------------------------------------------------

import os  # noqa: E402

# (model file, TTA views, weight, BatchNorm adaptation, batch size); the weights sum to one.
MEMBERS = {members}


class Model:
    # Loaded once by the platform, then asked for predictions.

    def __init__(self):
        import keras

        folder = os.path.dirname(os.path.abspath(__file__))
        self.members = [(keras.saving.load_model(os.path.join(folder, name), compile=False), *settings)
                        for name, *settings in MEMBERS]

    def predict(self, X):
        images = np.asarray(X, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        # The model expects 0-255; images already scaled to [0, 1] are put back on that scale.
        if images.size and images.max() <= 1.0:
            images = images * 255.0
        probabilities = sum(weight * predict_tta(model, images, views=views, batch_size=batch_size, adapt=adapt)
                            for model, views, weight, adapt, batch_size in self.members)
        return np.argmax(probabilities, axis=-1).astype(np.int64)
"""


def inlined_source(module) -> str:
    """A module's source without its `__future__` import (model.py states it once, first, as Python requires)
    and its imports of the kit (model.py holds what they name)."""
    lines = inspect.getsource(module).splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith((FUTURE_IMPORT, "from an2dl_kit.")))


@dataclass(frozen=True)
class Member:
    """One model of a submission: its saved file, the TTA views it was validated with, its weight, its
    BatchNorm adaptation (`adapt.ADAPTATIONS`) and the batch size its predictions were made with."""

    model: Path
    views: tuple[str, ...]
    weight: float = 1.0
    adapt: str = "none"
    batch_size: int = 64


def archive_names(count: int) -> list[str]:
    """The models' names inside the zip: `model.keras` alone, `model_<k>.keras` for several."""
    return [MODEL_FILE] if count == 1 else [f"model_{k}.keras" for k in range(count)]


def model_source(members: Sequence[Member]) -> str:
    """The text of `model.py` for the members (weights normalised to sum to one)."""
    total = sum(member.weight for member in members)
    entries = tuple((name, tta.resolve_views(member.views), float(member.weight / total),
                     adapt.ADAPTATIONS.check(member.adapt), int(member.batch_size))
                    for name, member in zip(archive_names(len(members)), members, strict=True))
    header = HEADER.format(shape=", ".join(map(str, CELLS.image_shape)), future=FUTURE_IMPORT)
    return (header + "".join(inlined_source(module) for module in INLINED)
            + ENTRY_POINT.format(members=repr(entries)))


def write_submission_zip(zip_path: str | Path, members: Sequence[Member]) -> Path:
    """Write `zip_path` holding `model.py` and every member's model, saved without optimizer state (a third of
    the size for Adam-family optimizers)."""
    import keras

    source = model_source(members)
    with tempfile.TemporaryDirectory() as folder, atomic_path(zip_path) as tmp, \
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MODEL_PY, source)
        for name, member in zip(archive_names(len(members)), members, strict=True):
            lean = Path(folder) / name
            keras.saving.load_model(member.model, compile=False).save(lean)
            archive.write(lean, name)
            lean.unlink()
    return Path(zip_path)
