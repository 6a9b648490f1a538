"""``cotune export --check``: does the written file generate what the model in memory
generates? Both are decoded greedily in float32 on fixed prompts, the file loaded back
through cotune's own loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotune.generate import generate
from cotune.model import load, load_gguf

# Fixed questions for --check: short, varied, answerable by a reasoning-tuned small model.
CHECK_QUESTIONS: tuple[str, ...] = (
    "What is 12 + 7?",
    "What is 45 - 18?",
    "What is 6 * 7?",
    "What is 144 / 12?",
    "What is 23 * 4?",
    "What is 305 + 497?",
    "What is 1000 - 365?",
    "What is 15% of 80?",
    "Tom has 5 apples and buys 3 more. How many apples does he have?",
    "A book costs $12. How much do 4 books cost?",
    "What is 9 squared?",
    "What is half of 250?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "What is 7 + 8 + 9?",
    "Sara had 20 stickers and gave away 8. How many are left?",
    "What is 3 * 11 - 4?",
    "How many minutes are in 2.5 hours?",
    "What is 81 / 9 + 5?",
    "A box holds 6 eggs. How many eggs are in 7 boxes?",
    "What is 2 to the power of 10?",
)


# Plain-text openings for base (not instruction-tuned) models, which answer every chat
# question alike (the pretrained 270M echoes the instruction), so agreement there says little.
CHECK_TEXTS: tuple[str, ...] = (
    "The capital of France is Paris. The capital of Germany is",
    "12 + 7 = 19\n25 + 13 = 38\n41 + 16 =",
    "Question: What is 12 * 4?\nAnswer:",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "def fibonacci(n):\n",
    "Water boils at 100 degrees Celsius, which is",
    "The largest planet in our solar system is",
    "To make a cup of tea, first",
    "In 1969, Neil Armstrong",
    "The quick brown fox",
    "Photosynthesis is the process by which",
    "A triangle has three sides. A square has",
    "My favourite book is",
    "The train left the station at 9 am and arrived at",
    "import numpy as np\nx = np.array([1, 2, 3])\n",
    "There are seven days in a week:",
    "The opposite of hot is",
    "Dear Sir or Madam,\n\nI am writing to",
    "If a shirt costs $20 and is on sale for 25% off, the sale price is",
)


def check_export(
    reference: Any,
    exported: str | Path,
    n: int = 20,
    max_new_tokens: int = 48,
    raw: bool = False,
) -> dict[str, Any]:
    """Greedy agreement between ``reference`` (merged, in memory) and the file it was
    exported to, loaded back through cotune's own loaders, on ``n`` fixed prompts: reasoning
    questions in cotune's chat prompt, or (``raw=True``, for base models) text openings.

    Returns ``{"agree": k, "total": n, "distinct": d, "mismatches": [(prompt, ref, got)]}``;
    ``distinct`` counts different reference outputs (agreement on one repeated string
    proves less).
    """
    pool = CHECK_TEXTS if raw else CHECK_QUESTIONS
    qs = list(pool[: max(1, min(n, len(pool)))])
    # float32 decode on both sides: the check measures what the file kept, not bf16 rounding
    kw = {"max_new_tokens": max_new_tokens, "raw": raw, "compute_dtype": "float32"}
    ref = generate(reference, qs, **kw)
    p = Path(exported)
    # a reloaded GGUF would otherwise be converted into the shared cache (1 GB for 270M)
    back = load_gguf(p, use_cache=False) if p.suffix == ".gguf" else load(str(p))
    got = generate(back, qs, **kw)
    bad = [(q, a, b) for q, a, b in zip(qs, ref, got, strict=True) if a != b]
    return {
        "agree": len(qs) - len(bad),
        "total": len(qs),
        "distinct": len(set(ref)),
        "mismatches": bad,
    }
