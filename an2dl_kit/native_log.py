"""Keep TensorFlow's C++ start-up log out of the kit's output, unless asked to be verbose.

TensorFlow writes its native log lines (oneDNN notes, "could not find cuda drivers", CPU feature
hints, dataset attribute warnings) straight to file descriptor 2, before and regardless of
TF_CPP_MIN_LOG_LEVEL. `quiet_native_log` puts a pipe in front of descriptor 2 and forwards every line that
is not a native log line, so Python's warnings, tracebacks and the kit's own errors still reach the terminal,
in order, and child processes (the bundled kernel of `run-local`) are filtered the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# absl's line prefix ("I0000 00:00:1796030238.207275   19425 port.cc:153] ...", TensorFlow 2.21), TensorFlow's
# own ("2026-11-30 09:54:16.868056: I tensorflow/core/util/port.cc:153] ...", 2.20 and Kaggle's image), absl's
# preamble, and the continuation line of the CPU-feature note.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .*rebuild TensorFlow)"
)
JOIN_TIMEOUT_S = 5.0


def is_native_log_line(line: bytes) -> bool:
    return NATIVE_LINE.match(line) is not None


@contextlib.contextmanager
def quiet_native_log() -> Iterator[None]:
    """Filter native log lines out of descriptor 2 for the duration of the block."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not is_native_log_line(line):
                    os.write(original, line)

    pump = threading.Thread(target=forward, name="native-log-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end in this process: the pump sees its end
        pump.join(JOIN_TIMEOUT_S)
        os.close(original)
