"""GRPO reinforcement learning after SFT, with verifiable rewards.

``questions`` (what the policy is asked) -> ``rollout`` (sampled by ``cotune.generate``) ->
``rewards`` -> ``trainer`` (advantages, ``loss``, updates of the ``policy``'s LoRA) ->
``run`` (the run folder, on the scaffold SFT uses too); ``health`` warns about a run going
wrong; ``load`` rebuilds a run's policy.
"""
