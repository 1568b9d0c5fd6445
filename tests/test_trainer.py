"""The shared Trainer on the toy cascade: learning, accumulation, schedules, non-finite losses,
outputs (CSV, PNG, TensorBoard, checkpoints, saved model) and typed config overrides."""
import csv
import math

import pytest
import torch
from safetensors.torch import load_file

from recipes.toy.data import ToySequences, collate
from recipes.toy.train import DEFAULT_CONFIG, DataConfig, ToyConfig, main, make_datasets, make_eval_fn
from zoo.checkpoint import list_checkpoints, load_checkpoint
from zoo.config import ConfigError, apply_overrides, load_config, parse_train_args
from zoo.registry import create_model
from zoo.train import TrainConfig, Trainer, lr_lambda, seed_everything



def quiet(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(tmp_path), progress=False, tensorboard=False, **kw)


def test_toy_cascade_learns_through_the_trainer(tmp_path):
    seed_everything(0)
    model = create_model("toy_cascade", dim=32, layers=1, heads=2)
    train_set, held_out = make_datasets(DataConfig())
    eval_fn = make_eval_fn(held_out)
    before = eval_fn(model.eval())
    cfg = quiet(tmp_path, steps=200, batch_size=32, lr=3e-3, warmup_steps=20, eval_every=100)
    history = Trainer(model.train(), train_set, collate, cfg, eval_fn=eval_fn).fit()
    losses = [r["loss"] for r in history["train"]]
    assert len(losses) == 200 and [r["step"] for r in history["train"]] == list(range(1, 201))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last <= 0.5 * first, (first, last)
    for head in ("tags", "majority"):  # both heads, the cascaded one included, learn
        head_losses = [r[f"loss_{head}"] for r in history["train"]]
        assert sum(head_losses[-10:]) < 0.8 * sum(head_losses[:10])
    after = history["eval"][-1]
    assert [e["step"] for e in history["eval"]] == [100, 200]
    assert after["acc_tags"] > max(0.8, before["acc_tags"] + 0.3), (before, after)
    assert after["acc_majority"] > before["acc_majority"] + 0.15, (before, after)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_autocast_follows_fp32_and_warns_where_it_is_emulated(tmp_path, monkeypatch, native):
    """precision=bf16 on CPU autocasts (the small ASR config trains so, 1.4x faster with AVX512-BF16): its losses
    track fp32's, and a CPU without native bf16 gets a warning that names the fix."""
    import warnings

    import zoo.train as train_module

    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: native)
    data = _equal_length_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, bf16 = _train(tmp_path / "bf16", data, steps=80, batch_size=16, lr=1e-2, precision="bf16")
    emulated = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
    assert all("train.precision=fp32" in str(w.message) for w in emulated)
    _, fp32 = _train(tmp_path / "fp32", data, steps=80, batch_size=16, lr=1e-2, precision="fp32")
    assert bf16 != fp32  # autocast did change the arithmetic
    assert sum(bf16[-5:]) < 0.3 * sum(bf16[:5])  # and it learns
    assert sum(bf16[-5:]) == pytest.approx(sum(fp32[-5:]), rel=0.1)


def _equal_length_data(n=32):
    return ToySequences(n, min_len=10, max_len=10, seed=5)  # every row labelled, no padding


def _train(tmp_path, data, **kw):
    seed_everything(0)
    model = create_model("toy_cascade", dim=16, layers=1, heads=2)
    history = Trainer(model, data, collate, quiet(tmp_path, **kw)).fit()
    return model, [r["loss"] for r in history["train"]]


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    data = _equal_length_data()
    full, full_losses = _train(tmp_path / "a", data, steps=5, batch_size=16, grad_accum=1, lr=1e-2, clip_norm=0)
    accum, accum_losses = _train(tmp_path / "b", data, steps=5, batch_size=16, grad_accum=4, lr=1e-2, clip_norm=0)
    assert full_losses == pytest.approx(accum_losses, rel=1e-5)
    assert len(set(full_losses)) == 5  # the weights did move
    # the gradient of the last update (left in .grad) is the same, micro-batched or not
    for (name, a), b in zip(full.named_parameters(), accum.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_lr_schedules_and_the_logged_lr(tmp_path):
    assert [lr_lambda(s, 4, 20, "cosine", 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_lambda(12, 4, 20, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down
    assert lr_lambda(12, 4, 20, "linear", 0.0) == pytest.approx(0.5)
    assert lr_lambda(19, 4, 20, "constant", 0.0) == 1.0
    assert lr_lambda(20, 4, 20, "cosine", 0.1) == pytest.approx(0.1)
    _, _ = _train(tmp_path, _equal_length_data(16), steps=6, batch_size=8, lr=0.5, warmup_steps=2,
                  schedule="linear", min_lr_ratio=0.2)
    with open(tmp_path / "log.csv") as handle:
        logged = [float(r["lr"]) for r in csv.DictReader(handle)]
    assert logged == pytest.approx([0.5 * lr_lambda(s, 2, 6, "linear", 0.2) for s in range(6)])


class _WithNaN(torch.utils.data.Dataset):
    def __init__(self):
        self.items = ToySequences(16, seed=1).items
        self.items[6] = dict(self.items[6], signal=torch.full_like(self.items[6]["signal"], float("nan")))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_non_finite_loss_names_the_step_and_the_batch_ids(tmp_path):
    seed_everything(0)
    model = create_model("toy_cascade", dim=16, layers=1, heads=2)
    cfg = quiet(tmp_path, steps=10, batch_size=4, shuffle=False)
    with pytest.raises(FloatingPointError, match=r"at step 2\b.*'toy-1-00004', 'toy-1-00005', 'toy-1-00006'"):
        Trainer(model, _WithNaN(), collate, cfg).fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad update was never applied


def test_main_writes_logs_curves_tensorboard_checkpoints_and_model(tmp_path):
    out = tmp_path / "run"
    assert main([f"train.out_dir={out}", "train.steps=12", "train.checkpoint_every=3", "train.keep_last=2",
                 "train.eval_every=6", "train.batch_size=8", "data.train_size=64", "data.eval_size=16",
                 "model.dim=16", "train.progress=false"]) == 0
    with open(out / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "epoch", "loss", "loss_tags", "loss_majority", "lr", "grad_norm", "elapsed"]
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    with open(out / "eval.csv") as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["6", "12"]
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000009.pt", "step-00000012.pt"]
    final = load_checkpoint(out / "checkpoints" / "step-00000012.pt")
    saved = load_file(out / "model" / "model.safetensors")
    assert saved.keys() == final["model"].keys()
    assert all(torch.equal(saved[k], final["model"][k]) for k in saved)
    assert load_config(ToyConfig, out / "config.yaml").train.steps == 12


# --- config ----------------------------------------------------------------------------------
def test_overrides_are_typed_from_yaml():
    cfg = load_config(ToyConfig, DEFAULT_CONFIG, ["train.lr=1e-3", "train.steps=7", "train.shuffle=false",
                                                  "model.dim=16", "train.betas=[0.8, 0.99]", "train.clip_norm=2"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.train.shuffle is False and cfg.model.dim == 16
    assert cfg.train.betas == (0.8, 0.99)
    assert cfg.train.clip_norm == 2.0 and isinstance(cfg.train.clip_norm, float)
    assert cfg.data.train_size == 512  # from the file
    assert apply_overrides(cfg, ["train.steps=1e3"]).train.steps == 1000


def test_unknown_keys_list_close_matches(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stpes'.*Did you mean: train.steps"):
        load_config(ToyConfig, DEFAULT_CONFIG, ["train.stpes=3"])
    with pytest.raises(ConfigError, match=r"'modle'.*Did you mean: model"):
        load_config(ToyConfig, None, ["modle.dim=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  warmup_step: 3\n")
    with pytest.raises(ConfigError, match=r"train.warmup_step.*train.warmup_steps"):
        load_config(ToyConfig, bad)


def test_bad_values_and_malformed_overrides_are_explained():
    with pytest.raises(ConfigError, match="'train.steps' must be an integer; got 'abc'"):
        load_config(ToyConfig, None, ["train.steps=abc"])
    with pytest.raises(ConfigError, match="'train.steps' must be an integer; got 1.5"):
        load_config(ToyConfig, None, ["train.steps=1.5"])
    with pytest.raises(ConfigError, match=r"'train.schedule' must be one of 'cosine', 'linear', 'constant'"):
        load_config(ToyConfig, None, ["train.schedule=cosin"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(ToyConfig, None, ["train.steps"])
    with pytest.raises(ConfigError, match="'train.shuffle' must be true or false"):
        load_config(ToyConfig, None, ["train.shuffle=maybe"])


def test_parse_train_args_intermixed_with_resume(tmp_path):
    cfg, resume = parse_train_args(["train.steps=5", "--resume", "--config", str(DEFAULT_CONFIG), "model.dim=8"],
                                   ToyConfig)
    assert resume and cfg.train.steps == 5 and cfg.model.dim == 8 and cfg.train.lr == 3e-3
    cfg, resume = parse_train_args([], ToyConfig, DEFAULT_CONFIG)
    assert not resume and cfg.train.steps == 200
