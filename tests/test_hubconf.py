"""hubconf.py: one documented torch.hub entrypoint per registered preset, loadable with source='local'."""
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from zoo import PretrainedCfg, create_model, list_models, register_model
from zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def load_hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builtin_presets() -> list[str]:
    return [n for n in list_models() if MODELS.get(n).fn.__module__.startswith("recipes.")]


def test_every_preset_is_a_documented_module_level_entrypoint():
    hubconf = load_hubconf()
    assert set(list_models()) <= set(hubconf.__all__)
    for name in list_models():
        fn = getattr(hubconf, name)
        entry = MODELS.get(name)
        assert callable(fn) and fn.__name__ == name and fn.__module__ == hubconf.__name__
        assert inspect.cleandoc(entry.fn.__doc__ or name) in fn.__doc__
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["pretrained", "tag"] and params["pretrained"].default is False
        assert set(inspect.signature(entry.fn).parameters) - {"pretrained", "tag"} <= set(params)
    assert all(importlib.util.find_spec(d) is not None for d in hubconf.dependencies)


@pytest.mark.parametrize("name", builtin_presets())
def test_torch_hub_local_load_builds_the_preset(name):
    torch.manual_seed(0)
    via_hub = torch.hub.load(str(ROOT), name, source="local")
    torch.manual_seed(0)
    direct = create_model(name)
    assert type(via_hub) is type(direct)
    a, b = via_hub.state_dict(), direct.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_torch_hub_pretrained_and_kwargs(tmp_path):
    torch.manual_seed(3)
    saved = create_model("toy_cascade", dim=16, layers=1, heads=2)
    saved.save_pretrained(tmp_path)
    MODELS.add_pretrained("toy_cascade", "hubconf_test", PretrainedCfg(local_dir=str(tmp_path)))
    try:
        loaded = torch.hub.load(str(ROOT), "toy_cascade", source="local", pretrained=True, tag="hubconf_test",
                                dim=16, layers=1, heads=2)
        random = torch.hub.load(str(ROOT), "toy_cascade", source="local", dim=16, layers=1, heads=2)
    finally:
        MODELS.get("toy_cascade").pretrained_cfgs.pop("hubconf_test")
    expected = saved.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    assert not torch.equal(random.state_dict()["decoders.tags.proj.weight"], expected["decoders.tags.proj.weight"])
    with pytest.raises(ValueError, match="pass pretrained=True"):
        torch.hub.load(str(ROOT), "toy_cascade", source="local", tag="hubconf_test")


def test_new_presets_appear_without_editing_hubconf():
    @register_model(task="toy", modality="signal")
    def _hubconf_probe(dim: int = 8):
        """A probe preset registered by the test."""
        return create_model("toy_cascade", dim=dim, layers=1, heads=2)

    try:
        hubconf = load_hubconf()
        assert "A probe preset" in hubconf._hubconf_probe.__doc__
        model = torch.hub.load(str(ROOT), "_hubconf_probe", source="local", dim=8)
        assert model.encoders["frames"].out_dim == 8
    finally:
        MODELS.entries.pop("_hubconf_probe")
