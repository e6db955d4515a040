"""The Codabench submission of the course's first challenge: `submission.zip` = `model.py` + the model.

The platform imports `model.py`, builds `Model()` (no arguments; it loads the saved model from its own
folder) and calls `predict(X)` with X of shape (n, *CELLS.image_shape), 0-255, expecting (n,) integer labels.

`model.py` is self-contained (NumPy and Keras only, no import of this kit): it is written from the sources
of `an2dl_kit.errors`, `an2dl_kit.registry` and `an2dl_kit.tta` (the TTA and the registry its views live
in), copied verbatim less their imports of each other, followed by the `Model` class, so the submission
runs exactly the test-time augmentation the run validated.
"""

from __future__ import annotations

import inspect
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from an2dl_kit import errors, registry, tta
from an2dl_kit.files import atomic_path
from an2dl_kit.task import CELLS

MODEL_PY = "model.py"
MODEL_FILE = "model.keras"
# Copied into model.py in this order: each module's kit imports name only the modules before it.
INLINED = (errors, registry, tta)
FUTURE_IMPORT = "from __future__ import annotations"

HEADER = """\
# Codabench submission written by an2dl-kit. Self-contained: NumPy and Keras 3 only.
# Model() loads {model_file} from this folder; Model().predict(X) maps (n, {shape}) images, 0-255, to
# (n,) integer labels with test-time augmentation over the views in TTA_VIEWS.
# The code below up to "Codabench entry point" is an2dl_kit/errors.py, registry.py and tta.py, copied
# verbatim less their imports of each other.
{future}
"""

ENTRY_POINT = """

# --- Codabench entry point ---------------------------------------------------------------------------------

import os  # noqa: E402

TTA_VIEWS = {views}
MODEL_FILE = {model_file!r}


class Model:
    # Loaded once by the platform, then asked for predictions.

    def __init__(self):
        import keras

        folder = os.path.dirname(os.path.abspath(__file__))
        self.model = keras.saving.load_model(os.path.join(folder, MODEL_FILE), compile=False)

    def predict(self, X):
        images = np.asarray(X, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        # The model expects 0-255; images already scaled to [0, 1] are put back on that scale.
        if images.size and images.max() <= 1.0:
            images = images * 255.0
        probabilities = predict_tta(self.model, images, views=TTA_VIEWS)
        return np.argmax(probabilities, axis=-1).astype(np.int64)
"""


def inlined_source(module) -> str:
    """A module's source without its `__future__` import (model.py states it once, first, as Python requires)
    and its imports of the kit (model.py holds what they name)."""
    lines = inspect.getsource(module).splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith((FUTURE_IMPORT, "from an2dl_kit.")))


def model_source(views: Sequence[str]) -> str:
    """The text of `model.py` for the given TTA views."""
    views = tta.resolve_views(views)
    header = HEADER.format(model_file=MODEL_FILE, shape=", ".join(map(str, CELLS.image_shape)), future=FUTURE_IMPORT)
    return (header + "".join(inlined_source(module) for module in INLINED)
            + ENTRY_POINT.format(views=repr(tuple(views)), model_file=MODEL_FILE))


def write_submission_zip(model_path: str | Path, zip_path: str | Path, views: Sequence[str]) -> Path:
    """Write `zip_path` holding `model.py` and the model at `model_path`, saved without optimizer state
    (a third of the size for Adam-family optimizers)."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    with tempfile.TemporaryDirectory() as folder:
        lean = Path(folder) / MODEL_FILE
        model.save(lean)
        with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MODEL_PY, model_source(views))
            archive.write(lean, MODEL_FILE)
    return Path(zip_path)
