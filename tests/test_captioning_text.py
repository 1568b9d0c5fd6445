"""transformers text towers: equal to the wrapped model, and padding never changes valid positions."""
import pytest
import torch

from zoo.registry import create_encoder

CONFIGS = {
    "bert": dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "clip": dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=16),
}


@pytest.mark.parametrize("family", ["bert", "clip"])
def test_text_tower_padding_and_reference(family):
    torch.manual_seed(0)
    enc = create_encoder("hf_text", family=family, config=CONFIGS[family]).eval()
    ids = torch.randint(3, 50, (1, 5))
    padded = torch.cat([ids, torch.randint(3, 50, (1, 3))], 1)
    with torch.no_grad():
        short = enc(ids, torch.tensor([5])).x
        long = enc(padded, torch.tensor([5])).x
        ref = enc.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(long[:, :5], short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short, ref)
    assert enc.out_dim == 32 and create_encoder("hf_text", family=family, config=CONFIGS[family], dim=8).out_dim == 8
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        enc(torch.tensor([[60]]))
    with pytest.raises(ValueError, match="family"):
        create_encoder("hf_text", family="gpt")
