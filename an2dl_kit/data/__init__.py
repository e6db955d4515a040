"""Competition data: loading and validation (io), discovery, cleaning, splitting, synthetic files, inspect.

Everything here is numpy-only, so the CLI can import it without TensorFlow.
"""

from an2dl_kit.data.clean import CleaningReport, clean_cells, clean_mars
from an2dl_kit.data.discover import Inputs, find_inputs, input_root
from an2dl_kit.data.io import (
    CellsData,
    MarsData,
    load_cells_test,
    load_cells_train,
    load_labels,
    load_mars,
    load_mars_test,
)
from an2dl_kit.data.split import balanced_class_weights, mars_strata, stratified_split

__all__ = [
    "CellsData",
    "CleaningReport",
    "Inputs",
    "MarsData",
    "balanced_class_weights",
    "clean_cells",
    "clean_mars",
    "find_inputs",
    "input_root",
    "load_cells_test",
    "load_cells_train",
    "load_labels",
    "load_mars",
    "load_mars_test",
    "mars_strata",
    "stratified_split",
]
