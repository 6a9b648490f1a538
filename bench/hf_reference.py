"""The Hugging Face reference side of the benchmarks: transformers + PEFT on PyTorch (CPU).

Set up the way its users run it: padded batches, labels -100 on prompt and padding (the
completion-only loss TRL users configure), the loss through the model's own LM head, bf16
weights (oneDNN uses AMX on this CPU, its fastest configuration here), PEFT LoRA rank 16 on
all seven projections, torch AdamW. It loads the same weights cotune uses, from the
safetensors folder cotune's writer produces.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def load_hf(folder: Path, dtype: str = "bfloat16"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(folder), torch_dtype=getattr(torch, dtype), attn_implementation="eager"
    )
    model.config.use_cache = False
    return model


def lora_wrap(model, rank: int = 16, alpha: float = 32.0):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def padded_batches(
    examples: list[tuple[list[int], list[int]]], batch: int, pad_id: int, max_len: int
):
    """Examples (prompt ids, completion ids incl. end token) -> padded (ids, attn, labels)."""
    out = []
    for i in range(0, len(examples) - batch + 1, batch):
        chunk = examples[i : i + batch]
        width = min(max_len, max(len(p) + len(c) for p, c in chunk))
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        attn = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        for r, (p, c) in enumerate(chunk):
            seq = (p + c)[:width]
            ids[r, : len(seq)] = torch.tensor(seq)
            attn[r, : len(seq)] = 1
            lab = ([-100] * len(p) + c)[:width]
            labels[r, : len(seq)] = torch.tensor(lab)
        out.append((ids, attn, labels))
    return out


def train_steps(model, batches, steps: int, lr: float = 2e-4) -> dict:
    """Time `steps` LoRA steps after one warm-up step; counts real and trained tokens."""
    torch.manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()

    def step(b):
        ids, attn, labels = b
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step(batches[0])
    real = trained = 0
    t0 = time.perf_counter()
    losses = []
    for i in range(steps):
        b = batches[(i + 1) % len(batches)]
        losses.append(step(b))
        real += int(b[1].sum())
        # Shifted labels: each non -100 label after the first position is one trained token.
        trained += int((b[2][:, 1:] != -100).sum())
    dt = time.perf_counter() - t0
    return {
        "s_per_step": dt / steps,
        "real_tokens_per_s": real / dt,
        "trained_tokens_per_s": trained / dt,
        "loss_last": losses[-1],
        "steps": steps,
    }


def greedy_left_padded(
    model, prompts: list[list[int]], n_new: int, pad_id: int
) -> tuple[float, list[list[int]]]:
    """HF ``generate``, greedy, on a left-padded batch with exactly ``n_new`` new tokens per
    row (end tokens suppressed): (seconds, the new token ids of each row)."""
    b, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        attn[r, width - len(p) :] = 1
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=attn,
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
            pad_token_id=pad_id,
        )
        dt = time.perf_counter() - t0
    return dt, out[:, width:].tolist()
