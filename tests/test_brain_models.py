"""fMRI adapters + trunk, retrieval/cycle heads, MEG encoder: behaviour, not shapes."""
import pytest
import torch

from recipes.brain_decoding.adapt import add_subject, freeze_for_adaptation
from recipes.brain_decoding.presets import fmri_spec
from zoo import ZooModel, create_encoder
from zoo.metrics_retrieval import topk_among

VOXELS = {"1": 157, "2": 142, "3": 130}


def cohort(n=96, seed=0, voxels=VOXELS, noise=0.1):
    """Three subjects seeing the same 8-d latents through their own mixing; padded batch."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    target = torch.cat([z, torch.tanh(z)], 1)                                # 16-d target embedding
    rows, sids, emb = [], [], []
    for s, nv in voxels.items():
        mix = torch.randn(nv, 8, generator=torch.Generator().manual_seed(100 + int(s)))
        rows += list(z @ mix.T + noise * torch.randn(n, nv, generator=g))
        sids += [int(s)] * n
        emb.append(target)
    lengths = torch.tensor([len(r) for r in rows])
    fmri = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    sids = torch.tensor(sids)
    return dict(fmri=fmri, fmri_lengths=lengths, subject_ids=sids,
                targets=dict(retrieval=dict(embedding=torch.cat(emb)), cycle=dict(subject_ids=sids)))


def small(adapter="linear", trunk="resmlp", cycle=False, loss="softclip", voxels=VOXELS, **kw):
    torch.manual_seed(0)
    return fmri_spec("test", voxels, adapter, trunk, hidden=32, depth=1, embed_dim=16, loss=loss, cycle=cycle,
                     pool=64, temperature=0.1, **kw).build()


def take(batch, index):
    from zoo.contract import select_rows

    return select_rows(batch, torch.as_tensor(index))


@pytest.mark.parametrize("adapter", ["linear", "mlp", "pool"])
def test_gather_by_subject_equals_running_each_subject_alone(adapter):
    model = small(adapter).eval()
    batch = take(cohort(8), torch.randperm(24, generator=torch.Generator().manual_seed(1)))   # subjects interleaved
    mixed = model.encode(batch)["brain"].x
    for s, nv in VOXELS.items():
        rows = (batch["subject_ids"] == int(s)).nonzero().squeeze(1)
        alone = model.encoders["brain"](batch["fmri"][rows, :nv], None, subject_ids=batch["subject_ids"][rows]).x
        assert torch.allclose(mixed[rows], alone, atol=1e-6)


@pytest.mark.parametrize("adapter,trunk,loss,cycle", [("linear", "mixer", "bimixco", False),
                                                       ("pool", "resmlp", "softclip", True),
                                                       ("mlp", "resmlp", "infonce", False)])
def test_batches_mixing_voxel_counts_train(adapter, trunk, loss, cycle):
    from decoders.retrieval import set_progress

    model = small(adapter, trunk, cycle, loss, mixup_pct=0.3)
    data = cohort(96)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g, losses = torch.Generator().manual_seed(0), []
    for step in range(120):
        set_progress(model, step / 120)
        out = model(take(data, torch.randint(0, 288, (48,), generator=g)))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.losses["retrieval"].item())
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])
    test = cohort(40, seed=5)
    pred = model.eval().generate(test, heads="retrieval")["retrieval"]
    assert topk_among(pred, test["targets"]["retrieval"]["embedding"], n=40, ks=(1,)).top[1] > 0.25   # chance 0.025


def test_adapter_only_tuning_leaves_the_trunk_bit_identical():
    model = small("linear", cycle=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = add_subject(model, 9, 111)
    trainable = freeze_for_adaptation(model, new)
    assert {id(p) for p in trainable} == {id(p) for p in new[0].parameters()}
    data = cohort(32, voxels={"9": 111})
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        loss = model(data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)           # every old tensor untouched
    assert not torch.equal(new[0].weight, torch.zeros_like(new[0].weight))
    assert model.spec_encoders["brain"]["subjects"]["9"] == 111


def test_added_subject_survives_save_and_strict_load(tmp_path):
    model = small("pool", cycle=True)
    add_subject(model, 7, 99)
    model.save_pretrained(tmp_path)
    loaded = ZooModel.from_pretrained(str(tmp_path))
    assert loaded.encoders["brain"].subjects["7"] == 99 and "7" in loaded.decoders["cycle"].builders
    batch = cohort(4, voxels={"7": 99})
    assert torch.equal(model.eval().encode(batch)["brain"].x, loaded.encode(batch)["brain"].x)


def test_cycle_head_reconstructs_and_cycles_through_another_subject():
    model = small("linear", cycle=True)
    out = model(cohort(8))
    extras = out.outputs["cycle"].extras
    assert set(extras) == {"recon", "cycle"} and extras["cycle"] > 0
    cycle = model.decoders["cycle"]
    feats = model.encode(cohort(8))["brain"]
    synth = cycle.decode(feats, torch.full((24,), 2))             # subject 2's voxels from everyone's embedding
    assert synth.shape == (24, 157) and torch.all(synth[:, 142:] == 0)


class _ToBf16(torch.nn.Module):
    def forward(self, x):
        return x.to(torch.bfloat16)


def test_cycle_head_scatters_lower_precision_builder_rows():
    """Under CUDA autocast the adapter's LayerNorm gives an fp32 embedding but the builders' Linear gives bf16
    rows (gpu_check on an H200 found the index_copy dtype clash); CPU autocast promotes index_copy, so the
    builders are made to return bf16 here."""
    cycle = small("linear", cycle=True).decoders["cycle"]
    e, sids = torch.randn(6, cycle.hidden), torch.tensor([1, 2, 3, 1, 2, 3])
    reference = cycle.build(e, sids)
    for key in list(cycle.builders):
        cycle.builders[key] = torch.nn.Sequential(cycle.builders[key], _ToBf16())
    built = cycle.build(e, sids)
    assert built.dtype == torch.float32 and torch.allclose(built, reference, atol=0.05)


def test_bad_fmri_inputs_raise_clear_errors():
    model = small("linear").eval()
    data = cohort(2)
    with pytest.raises(ValueError, match=r"subject 5 has no adapter .*add_subject\(5"):
        model.encode({**data, "subject_ids": torch.full((6,), 5)})
    with pytest.raises(ValueError, match="expects 157 voxels but rows of that subject carry \\[150\\]"):
        model.encode({**data, "fmri_lengths": torch.tensor([150, 150, 142, 142, 130, 130])})
    nan = data["fmri"].clone()
    nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match="subject 2 has NaN voxels"):
        model.encode({**data, "fmri": nan})
    nan[3, 150] = float("nan")   # NaN in the padding of a shorter subject is not data: ignored
    nan[3, 5] = 0.0
    model.encode({**data, "fmri": nan})
    with pytest.raises(ValueError, match="needs subject_ids"):
        model.encoders["brain"](data["fmri"], data["fmri_lengths"])


# --- MEG ------------------------------------------------------------------------------------------
def meg_batch(b=3, c=20, t=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, c, dtype=torch.bool)
    mask[0, 15:] = False                                   # row 0 has only 15 sensors
    mask[1, [2, 7]] = False                                # row 1 has two bad channels
    return (torch.randn(b, c, t, generator=g, requires_grad=True), torch.rand(b, c, 2, generator=g), mask,
            torch.tensor([0, 1, 0]))


def test_masked_meg_channels_get_zero_gradient():
    enc = create_encoder("meg_encoder", n_subjects=2, out_dim=8, hidden=16, merger_channels=8, blocks=2,
                         pos_dim=32, dropout_radius=0.2).train()
    x, pos, mask, sids = meg_batch()
    pos = pos.clone().requires_grad_(True)
    x.data[~mask] = float("nan")                                 # whatever sits in masked channels is ignored
    out = enc(x, None, subject_ids=sids, sensor_positions=pos, sensor_mask=mask).x
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.all(x.grad[~mask] == 0) and torch.all(pos.grad[~mask] == 0)
    assert (x.grad[mask].abs().sum(-1) > 0).float().mean() > 0.5   # valid sensors do learn
    weights = enc.merger.eval().weights(pos.detach(), mask)
    assert torch.all(weights[~mask[:, None, :].expand_as(weights)] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 8))


def test_meg_subject_layer_is_gathered_per_sample_and_bad_inputs_fail():
    enc = create_encoder("meg_encoder", n_subjects=2, out_dim=8, hidden=16, merger_channels=8, blocks=1, pos_dim=32).eval()
    with torch.no_grad():
        enc.subject.weights[1].mul_(-1.0)
    x, pos, mask, sids = meg_batch()
    full = enc(x, None, subject_ids=sids, sensor_positions=pos, sensor_mask=mask).x
    one = enc(x[1:2], None, subject_ids=sids[1:2], sensor_positions=pos[1:2], sensor_mask=mask[1:2]).x
    assert torch.allclose(full[1:2], one, atol=1e-5)
    with pytest.raises(ValueError, match="needs sensor_positions"):
        enc(x, None, subject_ids=sids, sensor_mask=mask)
    bad = pos.clone()
    bad[2, 4] = float("nan")
    with pytest.raises(ValueError, match=r"sensors \[4\] .* no finite 2-D position"):
        enc(x, None, subject_ids=sids, sensor_positions=bad, sensor_mask=mask)
    with pytest.raises(ValueError, match="subject ids \\[5\\] have no subject layer"):
        enc(x, None, subject_ids=torch.tensor([0, 5, 1]), sensor_positions=pos, sensor_mask=mask)
    assert enc.add_subject() == 2 and enc.subject.weights.shape[0] == 3


def test_presets_build_through_torch_hub_and_round_trip(tmp_path):
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    meg = torch.hub.load(root, "meg_clip_tiny", source="local", n_subjects=2, target_dim=8, trust_repo=True)
    x, pos, mask, sids = meg_batch(b=3)
    batch = dict(meg=x.detach(), subject_ids=torch.tensor([0, 1, 0]), sensor_positions=pos, sensor_mask=mask,
                 targets=dict(segments=dict(embedding=torch.randn(3, 40, 8))))
    assert torch.isfinite(meg(batch).loss)
    meg.save_pretrained(tmp_path / "meg")
    loaded = ZooModel.from_pretrained(str(tmp_path / "meg"))
    meg.eval()
    assert torch.equal(meg.generate(batch)["segments"], loaded.generate(batch)["segments"])
    fmri = torch.hub.load(root, "brain_mindbridge_tiny", source="local", subjects={"1": 157}, trust_repo=True)
    assert fmri.encoders["brain"].subjects == {"1": 157} and set(fmri.decoders) == {"retrieval", "cycle"}
