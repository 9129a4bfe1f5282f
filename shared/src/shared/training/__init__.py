"""Training plumbing shared by the package trainers: config, checkpoints, EMA, metrics, faults, prompts, plots, setup.

A trainer reads top to bottom (see each module for details)::

    cfg, _ = parse_config(RunConfig)                       # validated before anything is built (ConfigError)
    prompts = load_prompt_file(cfg.prompt_file)            # PromptFileError names file and line
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    ckpt = latest_checkpoint(ckpt_dir) if cfg.resume else None
    state = load_checkpoint(ckpt) if ckpt else None        # verified now (CheckpointError), applied below

    accelerator = setup_accelerator(mixed_precision=cfg.mixed_precision, seed=cfg.seed)
    model, optimizer, scheduler = build(cfg)               # package specific
    ema = EMA(trainable_params, cfg.ema_decay, cfg.ema_every)
    guard = FaultGuard(cfg.max_consecutive_faults, on_abort=lambda: save(step))
    start = 0
    if state:
        model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"]); ema.load_state_dict(state["ema"])
        guard.load_state_dict(state["faults"]); start = state["step"]
        restore_rng_state(state["rng"])                    # last, right before the loop
    logger = MetricsLogger(cfg.run_dir, resume_step=start if state else None, enabled=accelerator.is_main_process)
    for step in progress(range(start + 1, cfg.max_steps + 1), initial=start):
        rollout → kept = guard.check_rewards(rewards) → advantages → loss
        guard.check_loss(loss); accelerator.backward(loss)
        if guard.step(optimizer, params, max_grad_norm=..., clip_grad_norm=accelerator.clip_grad_norm_,
                      scheduler=scheduler):
            ema.update()
        logger.log({...metrics, **guard.metrics()}, step)  # log step s, then save step s
        if step % cfg.save_every == 0: save(step)          # save_checkpoint(ckpt_dir, step, state_dict)
    save_image_grid(images, run_dir / "samples.png", captions=prompts); plot_curves(run_dir, ["reward_mean"], ...)
"""

from shared.training.accelerate_setup import MIXED_PRECISION, progress, set_seed, setup_accelerator
from shared.training.checkpoint import (
    capture_rng_state,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from shared.training.config import (
    Config,
    FieldError,
    RunFolderConfig,
    add_train_command,
    build_arg_parser,
    config_field,
    config_from_args,
    get_preset,
    list_presets,
    load_config,
    parse_config,
    register_preset,
    require,
    require_in,
    require_int,
    require_non_negative,
    require_path_exists,
    require_positive,
    require_range,
    save_config,
    to_dict,
    validate_config,
)
from shared.training.distributed import any_process, average_gradients
from shared.training.ema import EMA
from shared.training.faults import FaultGuard, SanitizedRewards, sanitize_rewards
from shared.training.metrics import METRICS_FILE, MeanTracker, MetricsLogger, read_metrics
from shared.training.plots import plot_curves, save_image_grid, to_pil_images
from shared.training.prompts import load_prompt_file, load_prompts

__all__ = [
    "EMA",
    "METRICS_FILE",
    "MIXED_PRECISION",
    "Config",
    "FaultGuard",
    "FieldError",
    "RunFolderConfig",
    "MeanTracker",
    "MetricsLogger",
    "SanitizedRewards",
    "add_train_command",
    "any_process",
    "average_gradients",
    "build_arg_parser",
    "capture_rng_state",
    "checkpoint_step",
    "config_field",
    "config_from_args",
    "get_preset",
    "latest_checkpoint",
    "list_checkpoints",
    "list_presets",
    "load_checkpoint",
    "load_config",
    "load_prompt_file",
    "load_prompts",
    "parse_config",
    "plot_curves",
    "progress",
    "read_metrics",
    "register_preset",
    "require",
    "require_in",
    "require_int",
    "require_non_negative",
    "require_path_exists",
    "require_positive",
    "require_range",
    "restore_rng_state",
    "sanitize_rewards",
    "save_checkpoint",
    "save_config",
    "save_image_grid",
    "set_seed",
    "setup_accelerator",
    "to_dict",
    "to_pil_images",
    "validate_config",
    "verify_checkpoint",
]
