"""The training loop's progress display: one bar per run, against what actually ends the run.

- A run bounded by steps shows steps done out of ``total_steps(cfg)``.
- A time-budgeted run (``run.max_minutes``) shows seconds of training out of the budget, with the
  step count as a postfix: the step total of such a run is only an upper bound (e.g. 100,000),
  and a bar against it would read "0% … 43:36:50 remaining" while the run ends in minutes.
- A run that is already finished (its last checkpoint is at the final step) shows no bar, only
  one line saying it was loaded from its checkpoint.

In a notebook the bar is tqdm's widget (``tqdm.auto``); in a terminal, text.
"""
from __future__ import annotations

import time

__all__ = ["Progress"]


class Progress:
    """Progress of one training run; ``update(step)`` after each optimizer step."""

    def __init__(self, desc: str, step: int, n_steps: int, max_minutes: float | None,
                 t_done: float, enabled: bool = True):
        self.desc, self.n_steps, self.enabled = desc, n_steps, enabled
        self.budget_s = None if max_minutes is None else 60.0 * max_minutes
        self.t0 = time.perf_counter() - t_done              # t_done: seconds trained before a resume
        self.bar = None
        self.cached = step >= n_steps or (self.budget_s is not None and t_done >= self.budget_s)
        if not enabled:
            return
        if self.cached:
            print(f"{desc}: finished run loaded from cache (step {step:,})", flush=True)
            return
        from tqdm.auto import tqdm
        if self.budget_s is None:
            self.bar = tqdm(total=n_steps, initial=step, desc=desc, dynamic_ncols=True)
        else:
            self.bar = tqdm(total=round(self.budget_s), initial=min(round(t_done), round(self.budget_s)),
                            desc=f"{desc} ({max_minutes:g} min budget)", unit="s", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
            self.bar.set_postfix(step=f"{step:,}")

    def update(self, step: int) -> None:
        """One optimizer step is done (the run is now at `step`)."""
        if self.bar is None:
            return
        if self.budget_s is None:
            self.bar.update(1)
        else:
            elapsed = round(min(time.perf_counter() - self.t0, self.budget_s))
            self.bar.set_postfix(step=f"{step:,}", refresh=False)
            if elapsed > self.bar.n:                        # tqdm rate-limits the redraws
                self.bar.update(elapsed - self.bar.n)

    def set_postfix(self, step: int, **values) -> None:
        """Show the latest logged values (loss, images/s) next to the bar."""
        if self.bar is None:
            return
        if self.budget_s is not None:
            values = {"step": f"{step:,}", **values}
        self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            if self.budget_s is not None:                   # the final elapsed time, drawn once
                self.bar.n = round(min(time.perf_counter() - self.t0, self.budget_s))
                self.bar.refresh()
            self.bar.close()
