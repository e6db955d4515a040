from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from an2dl_kit.augment.common import SeededCompose
from an2dl_kit.pipeline import Batches


def noisy(x, y, rng):
    return x + rng.normal(size=x.shape).astype("float32"), y


def make(seed=0, **kwargs):
    x = np.arange(20, dtype="float32").reshape(10, 2)
    y = np.arange(10)
    return Batches(x, y, batch_size=4, transform=noisy, seed=seed, **kwargs)


def test_batch_count_and_last_partial_batch():
    batches = make()
    assert batches.num_batches == 3
    assert len(batches[2][0]) == 2


def test_same_seed_same_batches_and_other_seed_differs():
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.allclose(a[0][0], c[0][0])


def test_every_sample_once_per_epoch_and_reshuffled():
    batches = make()
    first = np.concatenate([batches[i][1] for i in range(batches.num_batches)])
    batches.set_epoch(1)
    second = np.concatenate([batches[i][1] for i in range(batches.num_batches)])
    assert sorted(first) == list(range(10)) == sorted(second)
    assert not np.array_equal(first, second)


def test_repeats_gives_independently_augmented_copies():
    batches = Batches(np.zeros((3, 2), "float32"), np.arange(3), batch_size=6, transform=noisy, repeats=2)
    x, y = batches[0]
    assert sorted(y) == [0, 0, 1, 1, 2, 2]
    first, second = x[y == 0]
    assert not np.allclose(first, second)


def test_threads_build_the_same_batches_as_one_thread():
    sequential = make(seed=3)
    expected = [sequential[i][0] for i in range(3)]
    threaded = make(seed=3)
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda i: threaded[i][0], [2, 0, 1]))
    for index, batch in zip([2, 0, 1], got, strict=True):
        np.testing.assert_array_equal(batch, expected[index])


def test_batches_of_one_epoch_get_different_augmentations():
    x = np.zeros((8, 2), "float32")
    batches = Batches(x, np.zeros(8), batch_size=4, transform=noisy, shuffle=False)
    assert not np.allclose(batches[0][0], batches[1][0])


def test_stream_runs_epoch_after_epoch_from_the_set_epoch_ahead_of_the_model():
    batches = make(seed=4, workers=3, ahead=5)
    batches.set_epoch(2)
    stream = batches.stream()
    got = [next(stream) for _ in range(2 * batches.num_batches)]
    stream.close()
    expected = [batches.batch(epoch, index) for epoch in (2, 3) for index in range(batches.num_batches)]
    for (x, y), (want_x, want_y) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)
    assert sorted(np.concatenate([y for _, y in got[3:]])) == list(range(10))  # epoch 3 whole, after epoch 2


def test_a_failing_transform_fails_the_stream_with_its_message():
    def broken(x, y, rng):
        raise ValueError("image 3 has 4 channels")

    stream = Batches(np.zeros((8, 2)), np.zeros(8), batch_size=4, transform=broken, workers=2).stream()
    with pytest.raises(ValueError, match="image 3 has 4 channels"):
        next(stream)


def test_dataset_feeds_fit_the_stream_in_epochs_of_num_batches():
    import keras

    seen = []

    def record(x, y, rng):
        seen.append(y.copy())
        return x, y

    x, y = np.arange(10, dtype="float32")[:, None], np.arange(10, dtype="float32")
    batches = Batches(x, y, batch_size=4, transform=record, seed=5, ahead=1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(batches.dataset(), steps_per_epoch=batches.num_batches, epochs=2, shuffle=False,
                        verbose=0)
    assert len(history.history["loss"]) == 2
    first_two_epochs = [batches.batch(epoch, i)[1] for epoch in (0, 1) for i in range(3)]
    # The probe batch for the signature, then the stream: epoch 0 and epoch 1 in order (and a few built ahead).
    for got, want in zip(seen[1:7], first_two_epochs, strict=True):
        np.testing.assert_array_equal(got, want)


class FirstStageOnly:
    """A transform that leaves its batches as they are and carries a per-sample first stage (`prepare`)."""

    def __init__(self, prepare):
        self.prepare = prepare

    def __call__(self, x, y, rng):
        return x, y


def jitter(x, rng):
    return x + rng.normal(size=x.shape).astype("float32")


def prepared_values(batches, epoch):
    """{sample id: its value after `prepare`} over one epoch (the batch stage keeps it: y is the sample id)."""
    pairs = [batches.batch(epoch, i) for i in range(batches.num_batches)]
    return {int(label): float(value[0]) for x, y in pairs for value, label in zip(x, y, strict=True)}


def test_echo_keeps_each_prepared_draw_for_its_period_whoever_asks_first():
    def make_echoing():
        return Batches(np.arange(10, dtype="float32")[:, None], np.arange(10), batch_size=4,
                       transform=FirstStageOnly(jitter), echo=2, seed=6, workers=2)

    batches = make_echoing()
    epochs = [prepared_values(batches, epoch) for epoch in range(3)]
    assert epochs[0] == epochs[1]  # epochs 0 and 1 share a period: the same draw per sample
    assert all(epochs[2][k] != epochs[0][k] for k in range(10))  # a new period, new draws
    later_first = make_echoing()
    assert prepared_values(later_first, 1) == epochs[1]  # a run resumed at epoch 1 sees the same draws
    fresh = Batches(np.arange(10, dtype="float32")[:, None], np.arange(10), batch_size=4,
                    transform=FirstStageOnly(jitter), seed=6)
    assert prepared_values(fresh, 0) != prepared_values(fresh, 1)  # echo 1: a new draw every epoch


def test_copies_of_a_sample_get_their_own_prepared_draws():
    batches = Batches(np.zeros((3, 1), "float32"), np.arange(3), batch_size=6, repeats=2, echo=2,
                      transform=FirstStageOnly(jitter))
    x, y = batches[0]
    assert sorted(y) == [0, 0, 1, 1, 2, 2]
    first, second = x[y == 0]
    assert not np.allclose(first, second)


def test_mismatched_lengths_refused():
    with pytest.raises(ValueError, match="differ in length: 3 != 2"):
        Batches(np.zeros((3, 1)), np.zeros(2), batch_size=2)


def test_seeded_compose_is_reproducible_and_thread_local():
    import albumentations as A

    def factory():
        return A.Compose([A.HorizontalFlip(p=0.5), A.GaussNoise(p=1.0)], strict=True)

    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    a = SeededCompose(factory).images(images, np.random.default_rng(5))
    b = SeededCompose(factory).images(images, np.random.default_rng(5))
    c = SeededCompose(factory).images(images, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    masks = np.arange(6 * 64).reshape(6, 8, 8).astype(np.uint8)
    flip = SeededCompose(lambda: A.Compose([A.HorizontalFlip(p=1.0)], strict=True))
    out_images, out_masks = flip.pairs(images, masks, np.random.default_rng(0))
    np.testing.assert_array_equal(out_masks, masks[:, :, ::-1])
    np.testing.assert_array_equal(out_images, images[:, :, ::-1])


def test_last_batch_smaller_than_min_batch_is_dropped():
    x, y = np.zeros((9, 1), "float32"), np.arange(9)
    assert Batches(x, y, batch_size=4, min_batch=2).num_batches == 2
    assert Batches(x, y, batch_size=4, min_batch=1).num_batches == 3
    assert Batches(x, y, batch_size=3, min_batch=2).num_batches == 3
