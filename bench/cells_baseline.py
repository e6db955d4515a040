"""The plain baseline of `bench.cells_robustness`: what a user would write by hand for the cells task.

Four 3x3 conv + BatchNorm + max-pool blocks at 96 px, Adam, no augmentation, the best validation epoch kept,
trained for the same budget as the kit.
"""

from __future__ import annotations

import time
from pathlib import Path

from an2dl_kit.task import CELLS


def baseline_model():
    """The plain baseline a user would write by hand: four 3x3 conv + BN + max-pool blocks (32-256) at 96 px,
    global average pooling, dropout, softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(CELLS.image_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.3)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Dense(CELLS.num_classes, activation="softmax")(x), name="baseline_cnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def stop_after(budget_s: float):
    """A Keras callback that stops training after the batch at which `budget_s` seconds have passed."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() - self.start >= budget_s:
                self.model.stop_training = True

    return StopAfter()


def train_baseline(root: Path, budget_s: float, seed: int, out: Path):
    """The baseline as a careful user writes it: the cleaned training set without augmentation, a stratified
    validation split of the kit's size, `ModelCheckpoint` keeping the best validation epoch (last-epoch weights
    of a constant-rate Adam swung from 0.54 to 0.89 clean between seeds), trained until the budget is spent;
    returns (model, wall seconds, CPU-seconds)."""
    import keras

    from an2dl_kit.data.clean import clean_cells
    from an2dl_kit.data.io import load_cells_train
    from an2dl_kit.data.split import stratified_split
    from an2dl_kit.tasks import resolve_config

    data, _ = clean_cells(load_cells_train(root / CELLS.name / CELLS.train_file))
    val_fraction = resolve_config(CELLS.name, "local").data.val_fraction
    train, val = stratified_split(data.labels.reshape(-1), val_fraction, seed)
    images, labels = data.images.astype("float32"), data.labels
    keras.utils.set_random_seed(seed)
    model = baseline_model()
    best = out / "baseline_best.keras"
    best.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True)
    started, cpu_started = time.monotonic(), time.process_time()
    model.fit(images[train], labels[train], validation_data=(images[val], labels[val]), batch_size=32,
              epochs=1000, verbose=0, shuffle=True, callbacks=[checkpoint, stop_after(budget_s)])
    seconds = time.monotonic() - started, time.process_time() - cpu_started
    return keras.saving.load_model(best), *seconds
