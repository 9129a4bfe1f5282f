import json
import math

import pytest
import torch

from shared.errors import ConfigError
from shared.training import load_config, read_metrics

import vqrae.train as vt
from vqrae.cli import main
from vqrae.config import VQRAEConfig
from vqrae.tokens import load_tokens


def test_lr_schedule_hand_values():
    # warm-up 10 steps to 4e-4, then cosine to 1e-4 over the remaining 90
    assert vt.lr_at(5, 0, 100, 4e-4, 1e-4, 10) == pytest.approx(2e-4)
    assert vt.lr_at(10, 0, 100, 4e-4, 1e-4, 10) == pytest.approx(4e-4)
    assert vt.lr_at(55, 0, 100, 4e-4, 1e-4, 10) == pytest.approx(2.5e-4)
    assert vt.lr_at(100, 0, 100, 4e-4, 1e-4, 10) == pytest.approx(1e-4)
    # stage 2 counts from its own start
    assert vt.lr_at(105, 100, 50, 1e-4, 1e-5, 10) == pytest.approx(5e-5)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_stage_one_freezes_the_encoder_and_stage_two_trains_it(make_config, monkeypatch):
    seen = {}
    real_build = vt.build

    def spy(cfg):
        model, teacher = real_build(cfg)
        seen["model"], seen["init"] = model, _snapshot(model)
        seen["codebook"] = model.quantizer.codebook.clone()
        return model, teacher

    monkeypatch.setattr(vt, "build", spy)
    vt.train(make_config("run.evaluate=false", "train.ema_decay=0", steps=(5, 0)))
    m, init = seen["model"], seen["init"]
    now = _snapshot(m)
    enc = [n for n in now if n.startswith("encoder.")]
    assert enc and all(torch.equal(now[n], init[n]) for n in enc)
    assert not torch.equal(now["quantizer.weight"], init["quantizer.weight"])  # the SimVQ map learns
    assert not torch.equal(now["decoder.head.weight"], init["decoder.head.weight"])
    assert torch.equal(m.quantizer.codebook, seen["codebook"])  # the frozen Gaussian codebook does not

    vt.train(make_config("run.evaluate=false", "train.ema_decay=0", "run.resume=false", steps=(2, 3)))
    now2, init2 = _snapshot(seen["model"]), seen["init"]
    changed = [n for n in now2 if n.startswith("encoder.") and ".head." not in n
               and not torch.equal(now2[n], init2[n])]
    assert changed  # stage 2 unfreezes the encoder (the tagger head gets no gradient)


def test_stage_two_logs_the_distillation_term_only_when_on(make_config):
    cfg = make_config("run.evaluate=false", steps=(2, 2))
    vt.train(cfg)
    recs = read_metrics(cfg.run.dir)
    assert [("distill_loss" in r) for r in recs] == [False, False, True, True]
    assert [r["stage"] for r in recs] == [1.0, 1.0, 2.0, 2.0]
    assert recs[0]["encoder_lr"] == 0.0 and recs[3]["encoder_lr"] > 0
    cfg = make_config("run.evaluate=false", "loss.distill_weight=0", "run.resume=false", steps=(2, 2))
    vt.train(cfg)
    assert not any("distill_loss" in r for r in read_metrics(cfg.run.dir))


def test_resume_after_a_kill_continues_with_identical_metrics(make_config, tmp_path, monkeypatch):
    full = make_config("run.evaluate=false", f"run.dir={tmp_path / 'full'}", steps=(6, 4))
    vt.train(full)
    reference = read_metrics(full.run.dir)

    killed = make_config("run.evaluate=false", f"run.dir={tmp_path / 'killed'}", steps=(6, 4))
    real, calls = vt.augment, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # during step 8, after the checkpoint of step 5
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(vt, "augment", dying)
    with pytest.raises(KeyboardInterrupt):
        vt.train(killed)
    monkeypatch.setattr(vt, "augment", real)
    vt.train(killed)
    resumed = read_metrics(killed.run.dir)
    assert [r["step"] for r in resumed] == list(range(1, 11))
    for a, b in zip(reference, resumed, strict=True):
        for k in a:
            if k.startswith("time") or not isinstance(a[k], float):
                continue
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), (a["step"], k)


def test_cli_train_eval_encode_decode(make_config, tmp_path, capsys):
    cfg = make_config()
    sets = [a for k, v in _flat(cfg) for a in ("--set", f"{k}={v}")]
    assert main(["train", *sets]) == 0
    run = cfg.run.dir
    out = capsys.readouterr().out
    assert "PSNR" in out and "mean-image baseline" in out and "utilisation" in out
    summary = json.loads((tmp_path / "run" / "eval.json").read_text())
    for key in ("psnr", "ssim", "mean_image_psnr", "fd_initial_encoder", "utilisation", "perplexity", "dead_codes",
                "probe", "probe_initial"):
        assert key in summary and math.isfinite(summary[key]), key
    assert (tmp_path / "run" / "reconstructions.png").is_file()
    assert main(["eval", run, "--out", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["psnr"] == pytest.approx(summary["psnr"], rel=1e-5)  # eval reloads the same EMA weights

    assert main(["encode", run, "--out", str(tmp_path / "t.npz"), "--images", "6"]) == 0
    dump = load_tokens(tmp_path / "t.npz")
    assert dump["ids"].shape == (6, 4, 4) and dump["codebook_size"] == 32
    assert dump["captions"] is not None and len(dump["captions"]) == 6
    assert main(["decode", run, str(tmp_path / "t.npz"), "--out", str(tmp_path / "d.png")]) == 0
    assert (tmp_path / "d.png").is_file()
    bad = tmp_path / "bad.npz"
    from vqrae.tokens import save_tokens
    save_tokens(bad, torch.zeros(1, 2, 2, dtype=torch.long), codebook_size=32, grid=(2, 2), image_size=8)
    with pytest.raises(SystemExit):
        main(["decode", run, str(bad), "--out", str(tmp_path / "x.png")])
    assert "do not match" in capsys.readouterr().err


def _flat(cfg):
    from shared.training import to_dict

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", ",".join(map(str, v)) if isinstance(v, list) else v
    return list(walk(to_dict(cfg)))


@pytest.mark.parametrize("overrides, field", [
    (["data.source=folder"], "data.path"),
    (["quantizer.kind=rvq"], "quantizer.kind"),
    (["encoder.kind=remote"], "encoder.trust_remote_code"),
    (["quantizer.dead_code_threshold=1"], "quantizer.dead_code_threshold"),
    (["loss.perceptual=timm"], "loss.perceptual_weights"),
    (["train.stage1_steps=0", "train.stage2_steps=0"], "train.stage1_steps"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(VQRAEConfig, preset="tiny", overrides=overrides)


def test_missing_encoder_folder_fails_before_training(make_config, tmp_path):
    cfg = make_config(f"encoder.path={tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError, match="nope"):
        vt.train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_paper_presets_need_local_folders():
    with pytest.raises(ConfigError, match=r"data\.path"):
        load_config(VQRAEConfig, preset="siglip2-so400m-256")
    with pytest.raises(ConfigError, match=r"encoder\.path"):
        load_config(VQRAEConfig, preset="siglip2-so400m-256", overrides=["data.path=/d"])
    cfg = load_config(VQRAEConfig, preset="siglip2-so400m-256",
                      overrides=["encoder.path=/m", "data.path=/d", "loss.perceptual_weights=/w.safetensors"])
    assert (cfg.quantizer.codebook_size, cfg.quantizer.dim, cfg.quantizer.beta) == (16384, 1536, 0.25)
    assert (cfg.train.stage1_steps, cfg.train.stage2_steps, cfg.train.batch_size) == (100_000, 70_000, 1024)
    assert cfg.loss.perceptual_weight == 1.1 and cfg.loss.gan_weight == 0.1 and cfg.loss.distill_weight == 1.0
    d = load_config(VQRAEConfig, preset="dinov2-b-reg",
                    overrides=["encoder.path=/m", "data.path=/d", "loss.perceptual_weights=/w.safetensors"])
    assert d.encoder.kind == "dinov2" and d.encoder.non_affine_last_norm and d.data.image_size == 224


# --- two processes (what `accelerate launch --num_processes 2` sets up), gloo on CPU -------------------------------

def _dist_worker(rank: int, world: int, cfg_dict: dict, out: str) -> None:
    from accelerate import PartialState

    PartialState._reset_state()  # forked from a process that may already hold a single-process state
    cfg = load_config(VQRAEConfig, cfg_dict)
    seen = {}
    real = vt.build

    def spy(c):
        seen["model"], teacher = real(c)
        return seen["model"], teacher

    vt.build = spy
    try:
        vt.train(cfg)
    finally:
        vt.build = real
    torch.save(torch.cat([p.detach().flatten() for p in seen["model"].parameters()]), f"{out}/{rank}.pt")


def test_two_processes_keep_identical_weights_and_log_global_code_usage(make_config, tmp_path):
    from shared.training import to_dict
    from shared.training.distributed import run_local_group

    cfg = make_config("run.evaluate=false", steps=(3, 2))
    run_local_group(_dist_worker, 2, to_dict(cfg), str(tmp_path))
    w0, w1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert torch.equal(w0, w1)  # gradients averaged over the two ranks' different batches
    recs = read_metrics(cfg.run.dir)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    # batch 8 = 4 images per rank; usage counted over both ranks' 8 × 16 tokens
    assert all(r["batch_tokens"] == 8 * 16 for r in recs)


def test_gan_term_starts_at_its_step_and_trains_the_discriminator(make_config):
    cfg = make_config("run.evaluate=false", "loss.gan_weight=0.1", "loss.gan_start=3", steps=(3, 2))
    vt.train(cfg)
    recs = read_metrics(cfg.run.dir)
    assert [("g_loss" in r) for r in recs] == [False, False, False, True, True]
    assert all(r["gan_adaptive_weight"] > 0 and "d_loss" in r for r in recs[3:])


def test_help_lists_the_config_fields(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for field in ("quantizer.dim", "encoder.trust_remote_code", "loss.distill_weight", "train.stage2_steps"):
        assert field in out


def test_the_committed_encoder_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = vt.encoder_spec(load_config(VQRAEConfig, preset="tiny"))
    assert spec.path != "assets/vqrae_encoder" and spec.path.endswith("assets/vqrae_encoder")
