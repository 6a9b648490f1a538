"""Batched KV-cache generation for Tunix Gemma models: greedy or sampled, with stop strings.

Why cotune's own loop: Tunix 0.1.7's ``Sampler`` decodes with an off-by-one (degenerate
text on correct weights), ignores temperature without top_p and knows no stop strings.

Layout (proved token-for-token against a no-cache full-forward loop in
``tests/test_generate.py``):

* prompts are **left-padded** to a bucketed length ``P``; each row has its own positions
  (``0..len-1`` for its real tokens) and a key-validity row that hides its padding;
* the cache has ``S = P + N`` slots (``N`` = bucketed ``max_new_tokens``) and one shared
  write index: slot ``P + t`` holds every row's ``t``-th generated token, so a slot
  distance equals a position distance and a sliding window computed in slots is right for
  every row;
* prefill computes logits only for the last position (the vocabulary-wide output
  projection is the costliest matmul); decode is a ``jax.lax.while_loop`` over steps, run
  in chunks so the host can check stop strings and stream tokens, exiting early once every
  row ended;
* shapes are bucketed (batch and new-token lengths to powers of two, prompt lengths to
  finer steps, :func:`bucket_len`) so repeated calls reuse compiled code;
  :func:`compile_counts` counts traces.

The package, top to bottom (each module imports only those below it; the import contracts
in ``pyproject.toml`` check it):

=================  ==========================================================================
``api``            :func:`generate`, :func:`generate_detailed`, :func:`encode_prompts`
``host``           one batch on the host: buckets, the chunked loop, stop strings, streaming,
                   the calculator's forced tokens
``caches``         compiled functions and prepared weights kept between calls
``gemma3``         cotune's Gemma 3 decoder (Tunix's math on weights prepared once)
``tunix_layers``   the decoder over Tunix's own layers, for the models ``gemma3`` does not cover
``kv_cache``       the Gemma 3 decoder's cache layouts and in-place slot writes
``carry``          the state both decoders carry through their decode loop
``sampling``       the next token per row: greedy argmax, temperature / top-k / top-p
=================  ==========================================================================
"""

from cotune.generate.api import encode_prompts, generate, generate_detailed
from cotune.generate.caches import compile_counts
from cotune.generate.host import FinishReason, Generation, bucket, bucket_len
from cotune.generate.tunix_layers import hidden_states, init_cache, project
from cotune.lora import without_lora

__all__ = [
    "FinishReason",
    "Generation",
    "bucket",
    "bucket_len",
    "compile_counts",
    "encode_prompts",
    "generate",
    "generate_detailed",
    "hidden_states",
    "init_cache",
    "project",
    "without_lora",
]
