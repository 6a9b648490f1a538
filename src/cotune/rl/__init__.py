"""GRPO reinforcement learning after SFT: verifiable rewards (:mod:`cotune.rl.rewards`)
and the training loop (:mod:`cotune.rl.grpo`)."""
