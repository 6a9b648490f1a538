"""Supervised fine-tuning (LoRA or full) of Tunix Gemma models, and the run scaffold RL
shares with it.

``cotune.train.sft.train(cfg, out_dir, ...)`` runs a recipe; ``cotune.load(run_dir)``
(:func:`cotune.runs.resolve`, through :func:`cotune.train.load.load_run`) rebuilds its
model. The modules, by concern:

===================  ===================================================================
``sft``              the recipe: :func:`~cotune.train.sft.train`, the steps of a session
``plan``             records from the config, tokenized, laid out in fixed-shape steps
``batches``          records -> token ids, loss mask, packing, the fixed-shape plan
``step``             the trained/frozen split, optimizer and schedule, the jitted step
``loss``             hidden states -> gathered trained positions -> cross-entropy
``forward``          bf16 projections with LoRA inside their product (custom VJPs)
``mesh``             the (fsdp, tp) device mesh and shardings
``resume``           what a resumed run must match: settings and the batches trained
``validation``       answer accuracy during training and the ``best/`` checkpoint
``load``             an SFT run folder -> base model + trained weights
``run_folder``       run scaffold (SFT and RL): what a run folder holds, its guard
``checkpoint``       run scaffold: params + optimizer + meta per step, ``best/``
``checkpoint_integrity``  run scaffold: manifests, verified restore, fallback, quarantine
``metrics``          run scaffold: ``metrics.jsonl`` and TensorBoard
``plots``            run scaffold: the run's curve (loss or reward, held-out accuracy)
``errors``           failures phrased for the user
===================  ===================================================================
"""
