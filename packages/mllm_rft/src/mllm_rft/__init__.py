"""RL fine-tuning of vision-language models with verifiable rewards (the GRPO family), offline-first."""
