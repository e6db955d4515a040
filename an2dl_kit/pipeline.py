"""In-memory batches for `model.fit`, augmented on the fly by worker threads.

Each batch draws its randomness from a generator seeded with (seed, epoch, batch index). That makes a
seeded run reproducible whichever worker builds which batch, and it gives every batch and every epoch its
own augmentations: the known trap of multi-worker loaders, workers that copy one random state and repeat
each other's augmentations, cannot happen here.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

# A batch transform: (x, y, rng) -> (x, y) or (x, y, sample_weight).
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple]


class Batches(keras.utils.PyDataset):
    """Batches of (x, y[, sample_weight]) from arrays, reshuffled every epoch.

    Args:
        x, y: arrays with the same first dimension.
        batch_size: samples per batch (the global batch under a distribution strategy).
        transform: optional batch transform `(x, y, rng) -> (x, y[, sample_weight])`.
        seed: base seed of the shuffling and of every batch's generator.
        shuffle: reshuffle the samples every epoch.
        workers: threads that build batches ahead of the model; 1 builds them in the training thread.
        repeats: each epoch holds `repeats` copies of every sample, each augmented independently
            (the reference solution's "union of augmented copies").
        min_batch: a last batch with fewer samples is dropped (the order changes every epoch, so no sample
            is lost for good). Pass the replica count: under MirroredStrategy a replica given no sample
            fails the gradient all-reduce.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        transform: Transform | None = None,
        seed: int = 0,
        shuffle: bool = True,
        workers: int = 1,
        repeats: int = 1,
        min_batch: int = 1,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(2 * workers, 4))
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        if len(x) == 0:
            raise ValueError("no samples to batch")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.transform = transform
        self.seed = seed
        self.shuffle = shuffle
        self.repeats = repeats
        self.min_batch = min_batch
        self.epoch = 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        order = np.tile(np.arange(len(self.x)), self.repeats)
        if self.shuffle:
            # The third entry keeps shuffling and augmentation streams apart.
            np.random.default_rng([self.seed, self.epoch, 2**31]).shuffle(order)
        return order

    @property
    def num_batches(self) -> int:
        full, remainder = divmod(len(self._order), self.batch_size)
        return full + (remainder >= self.min_batch)

    def batch_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int):
        ids = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        x, y = self.x[ids], self.y[ids]
        if self.transform is None:
            return x, y
        return self.transform(x, y, self.batch_rng(index))

    def set_epoch(self, epoch: int) -> None:
        """Make the next batches those of `epoch` (a run resumed at epoch k replays epoch k, not epoch 0)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._order = self._epoch_order()

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
