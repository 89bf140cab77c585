"""The demo foundation model: rebuilt when its corpus or recipe changes, never over another dataset's."""
import json

import pytest

from lib import config
from lib.demo import foundation


def _stale_foundation(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights of another corpus")
    path.with_name(path.name + ".recipe.json").write_text(json.dumps({"corpus_manifest_sha256": "other"}))


def test_a_foundation_outside_data_root_made_from_another_corpus_is_not_overwritten(tmp_path, monkeypatch):
    shared = tmp_path / "data" / "demo" / "foundation" / "foundation.pt"
    _stale_foundation(shared)
    monkeypatch.setattr(foundation, "train", lambda *a, **k: pytest.fail("must not pretrain over it"))
    cfg = config.load("smoke", data_root=str(tmp_path / "data" / "demo10k"), pretrained=str(shared))
    pattern = r"another corpus.*pretrained=.*demo10k/foundation/foundation\.pt"
    with pytest.raises(foundation.FoundationError, match=pattern):
        foundation.ensure_foundation(cfg, progress=False)
    assert shared.read_bytes() == b"weights of another corpus"


def test_a_stale_foundation_inside_data_root_is_pretrained_again(tmp_path, monkeypatch):
    own = tmp_path / "data" / "smoke" / "foundation" / "foundation.pt"
    _stale_foundation(own)

    class Pretrained(Exception):
        pass

    def fake_train(cfg, work_dir, *args, **kwargs):
        assert cfg.pretrained == "" and cfg.photometric_jitter_prob == 0.0
        raise Pretrained

    monkeypatch.setattr(foundation, "train", fake_train)
    monkeypatch.setattr(foundation, "corpus_table", lambda root: None)
    cfg = config.load("smoke", data_root=str(tmp_path / "data" / "smoke"), pretrained=str(own))
    with pytest.raises(Pretrained):
        foundation.ensure_foundation(cfg, progress=False)


def test_the_recipe_follows_the_corpus_not_the_other_splits(tmp_path):
    """Resizing val or test must not pretrain the foundation again (it never sees them)."""
    from lib.demo.dataset import make_demo_dataset

    sizes = dict(train_size=6, val_size=4, test_size=4, corpus_size=8)
    cfg = config.load("smoke", data_root=str(tmp_path / "d"))
    make_demo_dataset(tmp_path / "d", seed=0, progress=False, **sizes)
    first = foundation.recipe(cfg)
    make_demo_dataset(tmp_path / "d", seed=0, progress=False, **{**sizes, "val_size": 6, "test_size": 6})
    assert foundation.recipe(cfg) == first and first["corpus_sha256"]
    make_demo_dataset(tmp_path / "d", seed=0, progress=False, **{**sizes, "corpus_size": 10})
    assert foundation.recipe(cfg) != first
