"""Mask-GRPO (arXiv 2510.13418): GRPO for masked generative text-to-image models.

Spec card: ``shared/papers/mask_grpo.md`` beside the repository. The paper's math lives in small modules:
``schedules`` (mask schedules, choice temperatures), ``sampler`` (the recording unmasking sampler), ``logprobs``
(the three transition log-probabilities), ``replay`` (states and log-probs from a stored trajectory),
``filtering`` (the vanishing-sample filter). Models sit behind the ``policy.MaskedPolicy`` protocol.
"""
