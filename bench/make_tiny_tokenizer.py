"""Rebuild ``src/cotune/assets/tiny_tokenizer.model`` (run once; the file is committed).

A small BPE SentencePiece model with Gemma's id layout (pad 0, eos 1, bos 2, unk 3),
byte fallback, split digits and the chat control pieces, so tiny test models exercise
exactly the code paths the real 262k-piece tokenizer does.
"""

import io
import random
from pathlib import Path

import sentencepiece as spm

from cotune.format import INSTRUCTIONS, render_completion

rng = random.Random(0)
lines = list(INSTRUCTIONS.values())
words = "the a of and is to in what how many much total each price cost sells after discount original per hour km miles apples books students average ratio share left change pays remainder equals".split()
for _ in range(3000):
    a, b = rng.randint(0, 999), rng.randint(1, 99)
    q = f"Question: What is {a} + {b}? " + " ".join(rng.choice(words) for _ in range(6))
    lines.append(q)
    lines.append(render_completion(f"{a} + {b} = {a + b}. {a} * {b} = {a * b}.", str(a + b)))
    lines.append(render_completion(f"{a} - {b} = {a - b}.", str(a - b), "plain"))
buf = io.BytesIO()
spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_writer=buf,
    vocab_size=512,
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    control_symbols=["<start_of_turn>", "<end_of_turn>"],
    add_dummy_prefix=False,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    character_coverage=1.0,
    num_threads=1,
    minloglevel=2,
)
out = Path(__file__).resolve().parents[1] / "src/cotune/assets/tiny_tokenizer.model"
out.write_bytes(buf.getvalue())
print(f"wrote {out} ({len(buf.getvalue())} bytes)")
