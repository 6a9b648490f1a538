"""Hypothesis profiles, and the fixtures the train, rl, eval and export tests share.

Hypothesis profiles: the same code always gets the same verdict under ``make test``.

* ``ci`` (default, ``make test``): derandomized, so every run tries the same examples (the
  counts each test sets); no example database, so a failure found on one machine is not
  silently replayed only there; no deadline, since the 2 shared cores make timings noisy.
* ``thorough`` (``make test-all``, or ``HYPOTHESIS_PROFILE=thorough`` /
  ``--hypothesis-profile=thorough``): randomized search with ``THOROUGH_SCALE`` times each
  test's example count, failures kept in the local ``.hypothesis/`` database so a re-run
  replays them first. Pin whatever it finds with ``@example`` so ``ci`` checks it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, settings

from cotune.config import RunConfig, load_config

THOROUGH_SCALE = 5

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# --hypothesis-profile (handled by Hypothesis' pytest plugin after this file loads) wins.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Per-test settings that a profile alone cannot impose.

    A test's own ``@settings(...)`` overrides the profile for every value it names, so:
    the ``too_slow`` health check (a wall-clock limit, which load on the 2 shared cores can
    trip) is suppressed for every test, and under ``thorough`` every test's example count is
    scaled (tests without ``@settings`` start from the profile's 100). Hypothesis keeps a
    test's settings in ``_hypothesis_internal_use_settings`` (its own ``@seed`` rewrites that
    attribute the same way); should a release rename it, this fails loudly rather than
    silently keeping the old settings.
    """
    thorough = settings.get_current_profile_name() == "thorough"
    done: set[int] = set()
    for item in items:
        fn = getattr(item, "obj", None)
        if not getattr(fn, "is_hypothesis_test", False) or id(fn) in done:
            continue
        done.add(id(fn))  # parametrized tests share one function object
        own = fn._hypothesis_internal_use_settings
        extra = {"max_examples": own.max_examples * THOROUGH_SCALE} if thorough else {}
        fn._hypothesis_internal_use_settings = settings(
            own,
            derandomize=not thorough,
            suppress_health_check=[*own.suppress_health_check, HealthCheck.too_slow],
            **extra,
        )


# --------------------------------------------------------------------------- shared fixtures
# Tiny configs, records, LoRA weights, a reference decoder, the weights cache and a loss
# poisoner. Each helper is a plain function behind a fixture, so a test's subprocess child
# (tests/test_reliability_kill.py, tests/test_train_mesh.py) can import it too.

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"


def sum_records(n: int = 48) -> list[dict]:
    """``n`` canonical addition records the tiny model can learn in a few dozen steps."""
    out = []
    for i in range(n):
        a, b = 3 + i, 7 + 2 * i
        out.append(
            {
                "id": f"t{i}",
                "task": "add",
                "question": f"What is {a} + {b}?",
                "reasoning": f"{a} + {b} = {a + b}.",
                "answer": str(a + b),
                "source": "test",
                "difficulty": 1,
            }
        )
    return out


def tiny_config(*over: str) -> RunConfig:
    """``configs/tiny.yaml`` with ``--set``-style overrides."""
    return load_config(TINY, list(over))


def lora_arrays(model: Any) -> list[np.ndarray]:
    """A model's LoRA weights as host arrays, in a fixed order (to compare two models)."""
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model.module, nnx.LoRAParam))]


def greedy_without_cache(model: Any, prompts: list[list[int]], n: int) -> list[list[int]]:
    """The obvious decoder: ``n`` greedy tokens per prompt, one full causal forward through
    the module's own ``__call__`` per token (the call Qwix intercepts, so LoRA applies), no
    cache, prompts right-padded. Slow and plainly right: what cotune's decoding must equal.
    """
    b, t = len(prompts), max(map(len, prompts)) + n
    tokens = np.full((b, t), model.tokenizer.pad_id, np.int32)
    for r, x in enumerate(prompts):
        tokens[r, : len(x)] = x
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))

    @nnx.jit
    def fwd(module, tok):
        return module(tok, positions, None, mask)[0].argmax(-1)

    lens = np.array([len(x) for x in prompts])
    for step in range(n):
        nxt = np.asarray(fwd(model.module, jnp.asarray(tokens)))
        tokens[np.arange(b), lens + step] = nxt[np.arange(b), lens + step - 1]
    return [tokens[r, lens[r] : lens[r] + n].tolist() for r in range(b)]


@pytest.fixture(scope="session")
def records() -> Callable[..., list[dict]]:
    return sum_records


@pytest.fixture(scope="session")
def cfg() -> Callable[..., RunConfig]:
    return tiny_config


@pytest.fixture(scope="session")
def lora() -> Callable[[Any], list[np.ndarray]]:
    return lora_arrays


@pytest.fixture(scope="session")
def reference_greedy() -> Callable[..., list[list[int]]]:
    return greedy_without_cache


@pytest.fixture
def model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Converted-weights cache (GGUF loads, exports) in the session's temp folder, not
    the user's ~/.cache."""
    path = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(path))
    return path


@pytest.fixture
def poison_loss(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, float], None]:
    """``poison_loss(n, value)``: the n-th SFT step of the test reports ``value`` as its loss
    (the weights are updated as usual), to test what a non-finite loss does to a run."""
    from cotune.train import step as step_module

    real = step_module.make_train_step

    def poison(n: int, value: float) -> None:
        def poisoned(*args: Any, **kwargs: Any) -> Any:
            step = real(*args, **kwargs)
            calls = {"n": 0}

            def wrapped(tr: Any, opt: Any, fr: Any, batch: Any) -> Any:
                calls["n"] += 1
                out = step(tr, opt, fr, batch)
                return (*out[:2], jnp.float32(value) if calls["n"] == n else out[2], out[3])

            return wrapped

        monkeypatch.setattr(step_module, "make_train_step", poisoned)

    return poison
