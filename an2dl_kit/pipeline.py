"""In-memory batches for `model.fit`, augmented ahead of the model by worker threads.

Each batch draws its randomness from a generator seeded with (seed, epoch, batch index). That makes a
seeded run reproducible whichever worker builds which batch, and it gives every batch and every epoch its
own augmentations: the known trap of multi-worker loaders, workers that copy one random state and repeat
each other's augmentations, cannot happen here.

Training reads `Batches.dataset()`: one endless `tf.data` stream of epoch after epoch, which `model.fit`
slices with `steps_per_epoch=num_batches`. The workers keep `ahead` batches in flight across epoch ends, so
the first batches of an epoch are built while the last ones train and while validation runs. Keras' own
`PyDataset` loader restarts its workers at every epoch and has nothing ready when an epoch begins; on two
cores it fed the cells model at 0.75-0.82x the rate of preloaded tensors (`bench.hardware_pipeline`).

A two-stage augmentation can echo its costly stage (data echoing, Choi et al. 2019): a transform that has a
`prepare` attribute (a per-sample stage, `(x, rng) -> x'`, applied before it) has those draws kept for `echo`
epochs, while the transform itself (cheap geometry, labels, batch mixing) runs fresh on every batch. The
stage travels with its transform, so a two-stage transform can never be fed without its first stage.
The draws of an echo period are made batch by batch in the batches of its first epoch, each seeded by
(seed, period, batch index); a later epoch, a worker that gets there first or a run resumed mid-period
computes the same ones, so they never depend on timing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from threading import Lock

import numpy as np

# A batch transform: (x, y, rng) -> (x, y) or (x, y, sample_weight); it may carry a `prepare` stage.
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple]
# A per-sample stage over a batch of samples: (x, rng) -> x.
Prepare = Callable[[np.ndarray, np.random.Generator], np.ndarray]
# The fourth seed entry of the prepared draws, apart from the batches' (seed, epoch, index).
PREPARE_STREAM = 2**30
# Batches built ahead of the model: enough to cover an epoch's end (validation, checkpoints) on a CPU.
AHEAD = 16


class Batches:
    """Batches of (x, y[, sample_weight]) from arrays, reshuffled every epoch.

    Args:
        x, y: arrays with the same first dimension.
        batch_size: samples per batch (the global batch under a distribution strategy).
        transform: optional batch transform `(x, y, rng) -> (x, y[, sample_weight])`; its `prepare`
            attribute, when it has one and it is not None, is its per-sample first stage `(x, rng) -> x'`.
        echo: epochs each sample's `prepare` draw serves (1: a new draw every epoch).
        seed: base seed of the shuffling and of every batch's generator.
        shuffle: reshuffle the samples every epoch.
        workers: threads that build batches ahead of the model.
        repeats: each epoch holds `repeats` copies of every sample, each augmented independently
            (the reference solution's "union of augmented copies").
        min_batch: a last batch with fewer samples is dropped (the order changes every epoch, so no sample
            is lost for good). Pass the replica count: under MirroredStrategy a replica given no sample
            fails the gradient all-reduce.
        ahead: batches the workers keep built or in progress ahead of the model (at most an epoch's).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        transform: Transform | None = None,
        echo: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        workers: int = 1,
        repeats: int = 1,
        min_batch: int = 1,
        ahead: int = AHEAD,
    ):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        if len(x) == 0:
            raise ValueError("no samples to batch")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.transform = transform
        self.prepare: Prepare | None = getattr(transform, "prepare", None)
        self.echo = max(int(echo), 1)
        self._prepared: dict[tuple[int, int], np.ndarray] = {}  # (echo period, block) -> prepared samples
        self._prepared_lock = Lock()
        self.seed = seed
        self.shuffle = shuffle
        self.workers = max(int(workers), 1)
        self.repeats = repeats
        self.min_batch = min_batch
        self.epoch = 0
        # Every epoch has as many samples (subclasses keep to that), so this count holds for all of them.
        full, remainder = divmod(len(self.epoch_order(0)), batch_size)
        self.num_batches = full + (remainder >= min_batch)
        self.ahead = max(min(int(ahead), self.num_batches), 1)  # never more than an epoch ahead

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The positions of `epoch` in training order (the same count for every epoch). Position p is copy
        p // len(x) of sample p % len(x)."""
        order = np.arange(len(self.x) * self.repeats)
        if self.shuffle:
            # The third entry keeps shuffling and augmentation streams apart.
            np.random.default_rng([self.seed, epoch, 2**31]).shuffle(order)
        return order

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None) -> tuple:
        """Batch `index` of `epoch` (`order`: that epoch's `epoch_order`, when the caller has it)."""
        order = self.epoch_order(epoch) if order is None else order
        positions = order[index * self.batch_size:(index + 1) * self.batch_size]
        samples = positions % len(self.x)
        period, into_period = divmod(epoch, self.echo)
        if self.prepare is None:
            x = self.x[samples]
        elif into_period == 0:  # a period's first epoch: its batches are the period's blocks
            x = self._block(period, index, order)
        else:
            x = self._echoed(period, positions)
        y = self.y[samples]
        if self.transform is None:
            return x, y
        return self.transform(x, y, np.random.default_rng([self.seed, epoch, index]))

    def _echoed(self, period: int, positions: np.ndarray) -> np.ndarray:
        """The `prepare` draws of `positions` in a later epoch of an echo period, gathered from the period's
        blocks (two workers that need a block at once both compute it, with the same result)."""
        fresh_order = self.epoch_order(period * self.echo)
        rank = np.empty_like(fresh_order)
        rank[fresh_order] = np.arange(len(fresh_order))
        blocks, rows = np.divmod(rank[positions], self.batch_size)
        prepared = {int(b): self._block(period, int(b), fresh_order) for b in np.unique(blocks)}
        return np.stack([prepared[b][r] for b, r in zip(blocks.tolist(), rows.tolist(), strict=True)])

    def _block(self, period: int, block: int, fresh_order: np.ndarray) -> np.ndarray:
        """Block b of a period: batch b of the period's first epoch, prepared in one call and, with `echo` > 1,
        kept for the period's other epochs."""
        with self._prepared_lock:
            kept = self._prepared.get((period, block))
        if kept is not None:
            return kept
        ids = fresh_order[block * self.batch_size:(block + 1) * self.batch_size] % len(self.x)
        kept = self.prepare(self.x[ids], np.random.default_rng([self.seed, period, block, PREPARE_STREAM]))
        if self.echo > 1:
            with self._prepared_lock:
                # Older periods go: the stream only ever reads the current period and the next.
                for key in [key for key in self._prepared if key[0] < period - 1]:
                    del self._prepared[key]
                self._prepared[(period, block)] = kept
        return kept

    def __getitem__(self, index: int) -> tuple:
        """Batch `index` of the current epoch (`set_epoch`)."""
        return self.batch(self.epoch, index)

    def set_epoch(self, epoch: int) -> None:
        """The epoch that indexing returns and that the next `dataset()` stream starts at (a run resumed at
        epoch k replays epoch k, not epoch 0)."""
        self.epoch = epoch

    def stream(self) -> Iterator[tuple]:
        """Every batch of epoch `self.epoch`, then of the epochs after it, without end; `workers` threads build
        them `ahead` batches in advance."""
        jobs = self._jobs(self.epoch)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="batches")
        pending = deque(pool.submit(self.batch, *next(jobs)) for _ in range(self.ahead))
        try:
            while True:
                batch = pending.popleft().result()
                pending.append(pool.submit(self.batch, *next(jobs)))
                yield batch
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _jobs(self, epoch: int) -> Iterator[tuple[int, int, np.ndarray]]:
        while True:
            order = self.epoch_order(epoch)
            for index in range(self.num_batches):
                yield epoch, index, order
            epoch += 1

    def dataset(self):
        """`stream()` as an endless `tf.data.Dataset`; fit it with `steps_per_epoch=self.num_batches`."""
        import tensorflow as tf

        probe = self.batch(self.epoch, 0)
        signature = tuple(tf.TensorSpec((None, *np.shape(part)[1:]), tf.as_dtype(np.asarray(part).dtype))
                          for part in probe)
        return tf.data.Dataset.from_generator(self.stream, output_signature=signature).prefetch(2)
