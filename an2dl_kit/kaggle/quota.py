"""Kaggle's weekly accelerator quota: `an2dl quota`, and the check `an2dl push` makes before pushing.

The kaggle 2.2.x client has the call (`KaggleApi.quota_view`, behind `kaggle quota`): it sends
`GetAcceleratorQuotaStatistics` and gets the hours used, reserved by running sessions and allowed this week,
per accelerator, with the time the window refreshes. So no scraping and no guess: the kit asks the same
endpoint through the same client, and the test stand-in serves it.

A push's estimate is an upper bound, read from the configuration being pushed: the run's training budget
(`run.budget_s`, after `--set` overrides), within Kaggle's 12-hour session limit; a run without a budget may
use the whole session. Training stops at the budget and the predictions that follow take minutes, so the bound
is rarely far off for the kaggle profiles (10 h); `--set budget_s=...` lowers it for a short experiment.
TensorFlow-free.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from an2dl_kit.errors import KitError

SESSION_LIMIT_H = 12.0  # Kaggle stops a session after 12 hours


def estimate_hours(task: str, profile: str, overrides, accelerator: str) -> tuple[float, str]:
    """(accelerator hours the push may use, "GPU" | "TPU" | ""): "" and 0 for a CPU kernel, which uses none."""
    from an2dl_kit.tasks import resolve_config

    shape = accelerator.lower()
    kind = "" if shape in ("none", "cpu") else "TPU" if shape.startswith("tpu") else "GPU"
    if not kind:
        return 0.0, ""
    budget_s = resolve_config(task, profile, overrides).run.budget_s
    return min(budget_s / 3600 if budget_s else SESSION_LIMIT_H, SESSION_LIMIT_H), kind


def hours_left(reply, kind: str) -> float | None:
    """Hours of `kind` left this week (allowed - used - reserved by running sessions); None when not reported."""
    quota = reply.gpu_quota if kind == "GPU" else reply.tpu_quota
    if quota is None or quota.total_time_allowed is None:
        return None
    spent = sum(((t.total_seconds() if t else 0.0) for t in (quota.time_used, quota.time_reserved)), 0.0)
    return max(0.0, quota.total_time_allowed.total_seconds() - spent) / 3600


def refresh_text(reply, now: datetime | None = None) -> str:
    """`2025-01-04 00:00 UTC (in 2 d 5 h)`; the client returns UTC times without a time zone."""
    when = reply.quota_refresh_time
    if when is None:
        return "unknown"
    when = when if when.utcoffset() is not None else when.replace(tzinfo=timezone.utc)
    hours = max(0, int((when - (now or datetime.now(timezone.utc))).total_seconds() // 3600))
    return f"{when:%Y-%m-%d %H:%M} UTC (in {hours // 24} d {hours % 24} h)"


def quota_lines(reply) -> list[str]:
    """One line per accelerator the reply reports, then the refresh time."""
    lines = []
    for kind in ("GPU", "TPU"):
        quota = reply.gpu_quota if kind == "GPU" else reply.tpu_quota
        left = hours_left(reply, kind)
        if left is None:
            continue
        used, reserved = (t.total_seconds() / 3600 if t else 0.0 for t in (quota.time_used, quota.time_reserved))
        lines.append(f"{kind}: {used:.1f} h used, {reserved:.1f} h reserved by running sessions, {left:.1f} h left "
                     f"of {quota.total_time_allowed.total_seconds() / 3600:.1f} h this week")
    return [*lines, f"refreshes {refresh_text(reply)}"]


def check_push(session, estimate: float, kind: str, force: bool, count: int = 1) -> None:
    """Print the estimate beside the hours left; refuse (before SaveKernel) when it exceeds them, unless forced.

    `count` kernels of `estimate` hours each are pushed together (the folds of `push-folds`): all of them are
    counted before the first is pushed, and refused together. With `force`, a failed quota request is a warning
    too: the point of forcing is to push regardless.
    """
    estimate = estimate * count
    what, this, budget = (("the run", "this run", "its budget") if count == 1 else
                          (f"the {count} folds", f"these {count} folds", "their budgets"))
    if not kind:
        print("quota: a CPU kernel uses no accelerator hours")
        return
    try:
        reply = session.quota()
    except KitError as error:
        if not force:
            raise KitError(f"{error}; pass --force (make ... FORCE=1) to push without the quota check") from None
        print(f"an2dl: warning: quota unknown ({error}); pushing anyway (--force)", file=sys.stderr)
        return
    left = hours_left(reply, kind)
    shown = "unknown" if left is None else f"{left:.1f}"
    print(f"quota: {this} may use up to {estimate:.1f} {kind} hours ({budget}); {shown} h left this week, "
          f"refreshes {refresh_text(reply)}")
    if left is not None and estimate > left and not force:
        raise KitError(f"push: {what} may use {estimate:.1f} {kind} hours but {left:.1f} are left this week; "
                       f"lower {budget} (--set budget_s=SECONDS) or pass --force (make ... FORCE=1)")


def quota_cli(args) -> int:
    """`an2dl quota`: GPU and TPU hours used and left this week, and when they refresh."""
    from an2dl_kit.kaggle.session import KaggleSession

    for line in quota_lines(KaggleSession.connect().quota()):
        print(line)
    return 0
