"""The preprocessing cache gives what the processor gives, resumes, and refuses stale or corrupt data."""
import json
import os

import numpy as np
import pytest

from smolrgpt.data import open_dataset
from smolrgpt.processing.cache import CacheError, PreparedCache, build_cache

from conftest import write_track3_split


@pytest.fixture()
def split(tmp_path):
    return write_track3_split(tmp_path / "data", frames=4, questions_per_frame=3)


def test_cached_samples_equal_processed_samples(split, tmp_path, tiny_processor):
    samples = list(open_dataset(split))
    build_cache(samples, split, tiny_processor, tmp_path / "cache", samples_per_shard=5, progress=False)
    cache = PreparedCache(tmp_path / "cache", tiny_processor, source=split)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 3 and sum(len(s["frames"]) for s in manifest["shards"]) == 4
    for sample in samples:
        direct, cached = tiny_processor.prepare(sample), cache.prepare(sample)
        assert np.array_equal(direct.input_ids, cached.input_ids) and np.array_equal(direct.labels, cached.labels)
        np.testing.assert_array_equal(direct.pixel_values, cached.pixel_values)  # uint8 resize stored exactly
        np.testing.assert_allclose(direct.depth_values, cached.depth_values, atol=2e-3)  # float16 depth
        np.testing.assert_allclose(direct.region_masks, cached.region_masks, atol=1e-3)  # float16 masks


def test_a_frames_masks_are_stored_once_per_shard(split, tmp_path, tiny_processor):
    """Questions about one frame name the same objects: each distinct mask is stored once per frame and
    shard, and each sample keeps row numbers into them; a cache of the earlier layout is refused."""
    from safetensors import safe_open

    samples = list(open_dataset(split))
    build_cache(samples, split, tiny_processor, tmp_path / "cache", samples_per_shard=5, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    expected, stored, regions = set(), 0, 0
    for shard_no, shard in enumerate(manifest["shards"]):
        with safe_open(str(tmp_path / "cache" / shard["file"]), framework="np") as fh:
            names = list(fh.keys())
            stored += sum(fh.get_tensor(n).shape[0] for n in names if n.startswith("grids/"))
            assert not any(n.startswith("masks/") for n in names)
        for sample in samples[shard_no * 5:(shard_no + 1) * 5]:
            grids = tiny_processor.prepare(sample).region_masks.astype(np.float16)
            regions += len(grids)
            expected |= {(shard_no, sample.frame_key(), g.tobytes()) for g in grids}
    assert stored == len(expected) < regions
    manifest["version"] = 1
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="another cache version"):
        PreparedCache(tmp_path / "cache", tiny_processor)


def test_interrupted_prepare_resumes_to_the_same_cache(split, tmp_path, tiny_processor):
    samples = list(open_dataset(split))

    def crashing():
        for i, s in enumerate(samples):
            if i == 7:
                raise KeyboardInterrupt
            yield s

    with pytest.raises(KeyboardInterrupt):
        build_cache(crashing(), split, tiny_processor, tmp_path / "a", samples_per_shard=3, progress=False)
    with pytest.raises(CacheError, match="incomplete"):
        PreparedCache(tmp_path / "a", tiny_processor)
    build_cache(samples, split, tiny_processor, tmp_path / "a", samples_per_shard=3, progress=False)
    build_cache(samples, split, tiny_processor, tmp_path / "b", samples_per_shard=3, progress=False)
    for name in sorted(os.listdir(tmp_path / "b")):
        if name.endswith(".safetensors"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stale_and_corrupt_caches_are_refused(split, tmp_path, tiny_processor):
    samples = list(open_dataset(split))
    build_cache(samples, split, tiny_processor, tmp_path / "c", samples_per_shard=6, progress=False)
    shard = tmp_path / "c" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="shard-00001.safetensors is corrupt"):
        PreparedCache(tmp_path / "c", tiny_processor)
    build_cache(samples, split, tiny_processor, tmp_path / "d", samples_per_shard=6, progress=False)
    os.utime(split, ns=(1, 1))
    with pytest.raises(CacheError, match="is stale"):
        PreparedCache(tmp_path / "d", tiny_processor, source=split)
    with pytest.raises(CacheError, match="holds a cache of other data"):
        build_cache(samples, split, tiny_processor, tmp_path / "d", progress=False)


def test_settings_mismatch_is_refused(split, tmp_path, tiny_processor):
    from smolrgpt.processing.processor import SmolRGPTProcessor

    samples = list(open_dataset(split))
    build_cache(samples, split, tiny_processor, tmp_path / "e", progress=False)
    other = SmolRGPTProcessor(tiny_processor.tokenizer, image_size=128, mask_grid_size=32)
    with pytest.raises(CacheError, match="was prepared for"):
        PreparedCache(tmp_path / "e", other)


def test_prepare_cli(split, tmp_path, capsys):
    from smolrgpt.cli import main
    from smolrgpt.processing.processor import SmolRGPTProcessor

    assert main(["data", "prepare", str(split), "--out", str(tmp_path / "cli"), "--preset", "smolrgpt-tiny",
                 "--no-progress"]) == 0
    assert "cache ready" in capsys.readouterr().out
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    cache = PreparedCache(tmp_path / "cli", SmolRGPTProcessor(build_tiny_tokenizer()), source=split)
    assert len(cache.samples) == 12 and len(cache.frames) == 4
