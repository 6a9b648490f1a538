"""Signs that a GRPO run is going wrong, as numbers per step and warnings for the user
(docs/rl.md): broken answers, rambling, groups that teach nothing, reward hacking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cotune import format as fmt
from cotune.rl.rollout import Rollout


@dataclass
class History:
    """Every step's record and every held-out evaluation of a run (kept in checkpoints)."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def rollout_health(ro: Rollout, schema: str, g: int) -> dict[str, float]:
    """Shares of completions with empty / duplicated answers, truncation, collapsed groups."""
    n = max(len(ro.texts), 1)
    problems = [fmt.parse_completion(t, schema, strict=True).problems for t in ro.texts]  # type: ignore[arg-type]
    empty = sum(any(p == "empty answer" for p in ps) for ps in problems)
    dup = sum(any(p.startswith("duplicated") and "nswer" in p for p in ps) for ps in problems)
    groups = [ro.texts[i : i + g] for i in range(0, len(ro.texts), g)]
    same = sum(len(set(gr)) == 1 for gr in groups)
    return {
        "empty_answer_frac": empty / n,
        "duplicated_answer_frac": dup / n,
        "truncated_frac": sum(ro.truncated) / n,
        "identical_group_frac": same / max(len(groups), 1),
    }


def check_warnings(
    history: History, rec: dict[str, Any] | None, new_eval: dict | None
) -> list[str]:
    """Human-readable warnings for the latest step / eval (see docs/rl.md)."""
    out = []
    if rec:
        if rec.get("empty_answer_frac", 0) > 0:
            out.append(f"{rec['empty_answer_frac']:.0%} of rollouts have an EMPTY <answer>")
        if rec.get("duplicated_answer_frac", 0) > 0:
            out.append(f"{rec['duplicated_answer_frac']:.0%} of rollouts have SEVERAL answer tags")
        if rec.get("truncated_frac", 0) > 0:
            out.append(
                f"{rec['truncated_frac']:.0%} of rollouts hit max_new_tokens before closing the "
                "answer (rambling, or rl.max_new_tokens too small)"
            )
        if rec.get("identical_group_frac", 0) >= 1.0:
            out.append(
                "every group's completions are identical: zero advantage, no learning signal"
            )
    if new_eval and len(history.evals) >= 2:
        prev, cur = history.evals[-2], history.evals[-1]
        r_prev = [s["reward_mean"] for s in history.steps if s["step"] <= prev["step"]][-5:]
        r_cur = [s["reward_mean"] for s in history.steps if prev["step"] < s["step"] <= cur["step"]]
        if (
            r_prev
            and r_cur
            and np.mean(r_cur) > np.mean(r_prev)
            and (cur["eval_accuracy"] < prev["eval_accuracy"])
        ):
            out.append(
                f"mean reward ROSE ({np.mean(r_prev):.3f} -> {np.mean(r_cur):.3f}) while held-out "
                f"accuracy FELL ({prev['eval_accuracy']:.1%} -> {cur['eval_accuracy']:.1%}): "
                "possible reward hacking"
            )
    return out
