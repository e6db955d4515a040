"""What each challenge is: one `TaskInfo` per task, read by every module instead of its own constants.

Adding a third task starts here (its name, classes, image shape and files), then a module in
`an2dl_kit/tasks/` with its hooks and profiles (see `tasks/runner.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from an2dl_kit.registry import Registry


@dataclass(frozen=True)
class TaskInfo:
    """One challenge.

    Args:
        name: the task's name on the command line and in file paths.
        class_names: every class, in label order.
        ignored_class: a label the leaderboard metric ignores (Mars background), or None.
        image_shape: one input image as stored in the competition files.
        label_shape: one label as the leaderboard scores it: () for a class, (H, W) for a mask.
        train_file: the training file's name.
        test_file: the test file's name (Mars keeps its test set inside `train_file`).
        score: the headline metric's key in the task's score dicts (what the TTA gain and comparisons use).
        monitor: the Keras log key that picks the best epoch.
        competition: the leaderboard's Kaggle competition slug ("" where the challenge was not on Kaggle).
    """

    name: str
    class_names: tuple[str, ...]
    ignored_class: int | None
    image_shape: tuple[int, ...]
    label_shape: tuple[int, ...]
    train_file: str
    test_file: str
    score: str
    monitor: str
    competition: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def scored_classes(self) -> tuple[int, ...]:
        """The labels the leaderboard metric averages over."""
        return tuple(k for k in range(self.num_classes) if k != self.ignored_class)


CELLS = TaskInfo(
    name="cells",
    class_names=("basophil", "eosinophil", "erythroblast", "immature granulocyte", "lymphocyte", "monocyte",
                 "neutrophil", "platelet"),
    ignored_class=None,
    image_shape=(96, 96, 3),
    label_shape=(),
    train_file="training_set.npz",
    test_file="test_set.npz",
    score="accuracy",
    monitor="val_accuracy",
    competition="",
)
MARS = TaskInfo(
    name="mars",
    class_names=("background", "soil", "bedrock", "sand", "big rock"),
    ignored_class=0,
    image_shape=(64, 128),
    label_shape=(64, 128),
    train_file="mars_for_students.npz",
    test_file="mars_for_students.npz",
    score="miou",
    monitor="val_miou",
    competition="an-2-dl-2024-2025-homework-2",
)
TASKS: Registry[TaskInfo] = Registry("task", {CELLS.name: CELLS, MARS.name: MARS})
LABELS_FILE = "test_labels.npz"  # known test labels: synthetic data and the shared stand-ins only
BIG_ROCK = MARS.class_names.index("big rock")
