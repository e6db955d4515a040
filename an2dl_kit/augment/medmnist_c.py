"""MedMNIST-C's BloodMNIST corruptions (Di Salvo, Doerrich & Ledig, 2024; the `medmnistc` package).

The published robustness benchmark of the MedMNIST collection: for BloodMNIST, eleven corruptions (pixelate,
JPEG compression, defocus and motion blur, brightness and contrast up and down, saturation, stain deposits,
bubbles), each at five severities, taken from the package's own registry (`CORRUPTIONS_DS["bloodmnist"]`) so
that its parameters are the published ones. Two uses in the kit:
- `corrupt`: one image at one severity, as the published test sets are made (`medmnistc.DatasetManager`):
  on 224 px images, the size the severities are written for (bubble radii, ink stamps and blur radii are
  pixel counts), so a 96 px image is enlarged to 224 px (bicubic), corrupted and reduced back (area).
  `bench.medmnist_c` builds the benchmark's test copy with it.
- `MedMNISTCorruption`: the package's own training augmentation (`medmnistc.augmentation.AugMedMNISTC`: one of
  the eleven corruptions or none, uniformly, at an intensity drawn between its mildest and strongest
  severity), as the `medmnistc` augmentation of `registries.CELLS_AUGMENTATIONS`. It corrupts the images at
  the size the model is fed (96 px), as a user of the package applies it: bubbles, inks and blurs are then
  about twice as large relative to the cell as in the 224 px test copy, so the benchmark's copy is not the
  training distribution itself (though the same family: score this lever on the kit's own copy too).

The package draws its randomness from Python's and NumPy's global generators. Every call here seeds both from
the kit's own generator under a lock and puts their previous states back, so a seeded run repeats exactly
whichever loader thread gets there first, and nothing else in the process sees its draws. The lock makes
the corruptions run one at a time: about 1.8 ms of CPU per 96 px training image with the batched geometry
(against 0.4 ms for `robust`; motion blur through ImageMagick is most of it).

Not on Kaggle's image: the package, and ImageMagick's MagickWand library that its motion blur needs through
`wand` (`make medmnistc` installs both here; a kernel cannot install them, so preflight stops a profile that
needs them). `missing()` says what is absent. The package imports torchvision at module level for two
corruptions BloodMNIST does not use (Gaussian blur, gamma correction); where torchvision is absent (it brings
gigabytes of CUDA libraries with it from the package index), `blood_corruptions` imports it with a stand-in
module whose functions raise if called.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import sys
import threading
import types
from contextlib import contextmanager

import albumentations as A
import cv2
import numpy as np

PUBLISHED_SIDE = 224
SEVERITIES = 5
_GLOBAL_RANDOM = threading.Lock()


def missing() -> str | None:
    """What is missing to run the corruptions (None: nothing), as one line naming the fix."""
    if importlib.util.find_spec("medmnistc") is None:
        return "the medmnistc package is not installed (make medmnistc)"
    try:
        import wand.api  # noqa: F401  (loads the MagickWand library)
    except ImportError as error:  # wand itself, or the library it binds
        return f"ImageMagick's MagickWand is not usable ({str(error).splitlines()[0]}; make medmnistc)"
    return None


@contextmanager
def _torchvision_stand_in():
    """A placeholder `torchvision.transforms.functional` for the duration of the import, where torchvision is
    absent; calling any of its functions raises."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return

    def unavailable(name):
        raise RuntimeError(f"torchvision.transforms.functional.{name}: torchvision is not installed")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.__getattr__ = unavailable
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    package = types.ModuleType("torchvision")
    package.transforms = transforms
    names = {"torchvision": package, "torchvision.transforms": transforms,
             "torchvision.transforms.functional": functional}
    sys.modules.update(names)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


@functools.cache
def blood_corruptions() -> dict:
    """name -> corruption object of the package's BloodMNIST registry, in its order (eleven)."""
    from an2dl_kit.errors import KitError

    problem = missing()
    if problem:
        raise KitError(f"MedMNIST-C corruptions: {problem}")
    with _torchvision_stand_in():
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    return dict(CORRUPTIONS_DS["bloodmnist"])


@contextmanager
def _seeded_globals(seed: int):
    """Python's and NumPy's global generators seeded with `seed` for the block (one block at a time), then
    put back as they were."""
    with _GLOBAL_RANDOM:
        python_state, numpy_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _as_rgb(result, shape) -> np.ndarray:
    return np.asarray(result, dtype=np.uint8).reshape(shape)


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """`image` (H, W, 3) uint8 with corruption `name` at `severity` 1..5, as the published 224 px test sets:
    enlarged to 224 px, corrupted, reduced back to the image's size; the same seed gives the same image."""
    from PIL import Image

    height, width = image.shape[:2]
    large = cv2.resize(image, (PUBLISHED_SIDE, PUBLISHED_SIDE), interpolation=cv2.INTER_CUBIC)
    with _seeded_globals(seed):
        result = blood_corruptions()[name].apply(Image.fromarray(large), severity - 1)
    return cv2.resize(_as_rgb(result, large.shape), (width, height), interpolation=cv2.INTER_AREA)


def augment(image: np.ndarray, seed: int) -> np.ndarray:
    """The package's training augmentation (`AugMedMNISTC` over the BloodMNIST corruptions) of one image at
    its own size; the same seed gives the same image."""
    from medmnistc.augmentation import AugMedMNISTC
    from PIL import Image

    augmentation = AugMedMNISTC(blood_corruptions())
    with _seeded_globals(seed):
        return _as_rgb(augmentation(Image.fromarray(np.ascontiguousarray(image))), image.shape)


class MedMNISTCorruption(A.ImageOnlyTransform):
    """The package's own training augmentation (module docstring) as an albumentations transform, seeded by
    the pipeline's generator.

    Args:
        p: probability of applying the transform (the package leaves one image in twelve unchanged anyway).
    """

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def get_params_dependent_on_data(self, params, data) -> dict:
        return {"seed": int(self.random_generator.integers(2**31 - 1))}

    def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
        return augment(img, seed)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


def medmnistc_pipeline():
    """The `medmnistc` augmentation: the package's own (`MedMNISTCorruption`), between the kit's batched
    geometry (`augment.cells.BATCH_GEOMETRY`)."""
    blood_corruptions()  # a missing package is a one-line KitError here, before any batch is built
    return A.Compose([MedMNISTCorruption(p=1.0)], strict=True)
