"""Registry and model-graph behaviour: names, cascades, multi-source heads, partial labels."""
import pytest
import torch

from recipes.toy.data import ToySequences, collate
from zoo import ModelSpec, Node, UnknownNameError, ZooModel, create_model, list_encoders, list_models
from zoo.registry import ENCODERS, Registry, register_encoder


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder(lambda **kw: None, name="mlp_encoder")


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError, match="Did you mean: toy_cascade"):
        create_model("toy_cascde")
    with pytest.raises(UnknownNameError, match="transformer_encoder"):
        ENCODERS.get("transfomer_encoder")


def test_list_filters_by_pattern_task_modality_and_pretrained():
    assert "transformer_encoder" in list_encoders("*transformer*")
    assert "mlp_encoder" not in list_encoders("*transformer*")
    assert list_models(task="toy") == ["toy_cascade"]
    assert list_models(task="toy", modality="audio") == []
    r = Registry("thing")
    r.register(lambda: 1, name="a", pretrained_cfgs={"x": None, "y": None})
    r.register(lambda: 2, name="b")
    assert r.list(pretrained=True) == ["a.x", "a.y"]
    assert r.list("a*") == ["a"]


def test_cycle_and_unknown_source_are_reported():
    spec = {"a": {"type": "mlp_encoder", "input": "b", "in_dim": 4}, "b": {"type": "mlp_encoder", "input": "a", "in_dim": 4}}
    with pytest.raises(ValueError, match="cycle"):
        ZooModel(spec, {})
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        ZooModel({"a": {"type": "mlp_encoder", "input": "x", "in_dim": 4}},
                 {"h": {"type": "frame_classifier", "source": "nope", "in_dim": 128, "num_classes": 2}})


def test_multi_source_decoder_receives_a_list():
    from zoo.contract import Decoder, DecoderOutput
    from zoo.registry import DECODERS

    class Concat(Decoder):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, memory, targets):
            assert isinstance(memory, list) and len(memory) == 2
            return DecoderOutput(self.w * sum(m.x.mean() for m in memory))

    if "_test_concat" not in DECODERS.entries:
        DECODERS.register(lambda: Concat(), name="_test_concat")
    model = ModelSpec(
        encoders={"a": Node("mlp_encoder", input="signal", in_dim=8, dim=4),
                  "b": Node("mlp_encoder", input="a", in_dim=4, dim=4)},
        decoders={"both": Node("_test_concat", source=["b", "a"])},
    ).build()
    out = model({"signal": torch.randn(2, 5, 8), "targets": {"both": {}}})
    assert out.loss.shape == ()


def test_cascade_reads_upstream_features_and_generate_runs_only_needed_encoders():
    torch.manual_seed(0)
    model = create_model("toy_cascade").eval()
    batch = collate([ToySequences(4, seed=3)[i] for i in range(4)])
    feats = model.encode(batch, needed={"frames"})
    assert set(feats) == {"frames"}
    out = model.generate(batch, heads="tags")
    assert list(out) == ["tags"] and [len(t) for t in out["tags"]] == batch["signal_lengths"].tolist()
    # the cascaded encoder sees exactly the first encoder's output
    full = model.encode(batch)
    direct = model.encoders["context"](full["frames"].x, full["frames"].lengths)
    assert torch.equal(direct.x, full["context"].x)


def test_rows_without_a_label_do_not_train_that_head():
    torch.manual_seed(0)
    model = create_model("toy_cascade")
    items = [ToySequences(6, seed=1)[i] for i in range(6)]
    for i, it in enumerate(items):
        it["has_majority"] = i < 3
    batch = collate(items)
    out = model(batch)
    assert out.rows["majority"].tolist() == [0, 1, 2] and out.rows["tags"].tolist() == list(range(6))
    # the majority loss equals the loss on the labelled rows alone
    only = collate(items[:3])
    only["targets"] = {"majority": only["targets"]["majority"]}
    assert torch.allclose(out.losses["majority"], model(only).losses["majority"])
    # a batch with no majority labels leaves the majority head without gradient
    for it in items:
        it["has_majority"] = False
    model.zero_grad()
    out = model(collate(items))
    out.loss.backward()
    assert "majority" not in out.losses
    assert all(p.grad is None for p in model.decoders["majority"].parameters())


def test_spec_round_trips_through_config():
    model = create_model("toy_cascade", dim=32)
    rebuilt = ZooModel(**model._hub_mixin_config)
    assert rebuilt.spec_encoders == model.spec_encoders and rebuilt.spec_decoders == model.spec_decoders
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())


def test_an_encoder_may_share_its_name_with_the_batch_key_it_reads():
    model = ModelSpec(
        encoders={"signal": Node("mlp_encoder", input="signal", in_dim=8, dim=16),
                  "context": Node("transformer_encoder", input="signal", in_dim=16, dim=16, layers=1, heads=2)},
        decoders={"majority": Node("sequence_classifier", source="context", in_dim=16, num_classes=4)},
    ).build()
    assert model.inputs() == ["signal"] and model.order == ["signal", "context"]
    batch = collate([ToySequences(3, seed=2)[i] for i in range(3)])
    assert model(batch).losses["majority"].isfinite()
