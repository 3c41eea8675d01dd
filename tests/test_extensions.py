"""Region extensions behind one hook: the registry, the paper model without any, and checkpoints written
when each extension had a boolean option of its own."""
import json

import pytest
import torch
from safetensors import safe_open

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.checkpoint import load_checkpoint, save_checkpoint, write_manifest
from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.extensions import EXTENSIONS, extension_names
from smolrgpt.modeling.model import FrameFeatures, SmolRGPTForConditionalGeneration

# The parameter names those checkpoints hold (the layers' attributes as the boolean options created them).
OLD_EXTENSION_KEYS = {
    "region_contents.message.weight", "region_contents.message.bias", "region_contents.receive.weight",
    "region_contents.receive.bias", "region_contents.output.weight", "region_contents.output.bias",
    "region_contents.edge_threshold", "region_contents.edge_sharpness",
    "region_comparisons.sender.weight", "region_comparisons.sender.bias", "region_comparisons.relation.weight",
    "region_comparisons.relation.bias", "region_comparisons.receive.weight", "region_comparisons.receive.bias",
    "region_comparisons.output.weight", "region_comparisons.output.bias",
}
# What the config of such a checkpoint said about the region options (all five were written).
OLD_OPTIONS = {"region_geometry": True, "region_relations": False, "region_contents": True,
               "region_comparisons": True, "region_groups": False}


def _old_checkpoint(folder, processor, **changes):
    """A tiny-preset checkpoint whose config.json has the boolean region options instead of the list."""
    torch.manual_seed(0)
    model = SmolRGPTForConditionalGeneration(SmolRGPTConfig.from_preset("smolrgpt-tiny")).eval()
    save_checkpoint(model, processor, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["region_extensions"]
    config.update(OLD_OPTIONS, **changes)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_manifest(folder)  # vouch for the edited config
    return model


def test_the_registry_names_each_extension_once_in_its_order():
    assert list(EXTENSIONS) == ["contents", "comparisons", "geometry"]
    assert [cls.attribute for cls in EXTENSIONS.values()] == ["region_contents", "region_comparisons",
                                                            "region_geometry"]
    assert {cls.name: (cls.family, cls.stages) for cls in EXTENSIONS.values()} == {
        "contents": ("language_model", (3,)), "comparisons": ("language_model", (3,)), "geometry": (None, ())}
    assert extension_names(["geometry", "contents"]) == ["contents", "geometry"]
    with pytest.raises(ValueError, match="^unknown region extension 'groups'; choose among contents, comparisons, "
                                         "geometry$"):
        extension_names(["contents", "groups"])


def test_the_paper_model_has_no_extension_and_splices_the_pooled_vectors(paper_model):
    assert paper_model.config.region_extensions == [] and paper_model.region_extension_attributes == ()
    assert not [name for name, _ in paper_model.named_children() if name.startswith("region_")]
    rgb, depth = torch.randn(3, 128), torch.randn(3, 128)
    masks, index = torch.rand(3, 16, 16), torch.tensor([0, 0, 1])
    got = paper_model._apply_region_extensions(rgb, depth, masks, index)
    assert got[0] is rgb and got[1] is depth


def test_a_checkpoint_with_the_boolean_options_loads_into_the_extension_list(tmp_path, tiny_processor):
    model = _old_checkpoint(tmp_path / "old", tiny_processor)
    with safe_open(str(tmp_path / "old" / "model.safetensors"), "pt") as f:
        assert {k for k in f.keys() if k.startswith("region_")} == OLD_EXTENSION_KEYS
    loaded, _ = load_checkpoint(tmp_path / "old")
    assert loaded.config.region_extensions == ["contents", "comparisons", "geometry"]
    assert not [k for k in loaded.config.to_dict() if k in OLD_OPTIONS]  # written back in the new form only
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    config = model.config
    frames = FrameFeatures(torch.randn(1, config.num_image_tokens, 128), torch.randn(1, config.num_image_tokens, 128))
    masks = torch.zeros(2, config.mask_grid, config.mask_grid)
    masks[0, 0:8, 0:8], masks[1, 2:4, 2:4] = 1.0, 1.0
    index = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.get_region_features(masks, index, frames),
                                                     model.get_region_features(masks, index, frames)))
    # an option switched off leaves its extension out
    _old_checkpoint(tmp_path / "no_geometry", tiny_processor, region_geometry=False)
    no_geometry = load_checkpoint(tmp_path / "no_geometry")[0]
    assert no_geometry.region_extension_attributes == ("region_contents", "region_comparisons")


@pytest.mark.parametrize("option", ["region_relations", "region_groups"])
def test_a_checkpoint_that_switches_on_a_removed_option_is_refused(tmp_path, tiny_processor, option):
    _old_checkpoint(tmp_path, tiny_processor, **{option: True})
    message = (f"{tmp_path / 'config.json'}: {option}=true: that region option was removed (it did not help; "
               "docs/research.md); this version cannot load a model that uses it")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    assert str(error.value) == message
    config = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match=f"^{option}=true: that region option was removed"):
        SmolRGPTConfig.from_dict(config)
