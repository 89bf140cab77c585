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


def _ship(folder, recipe, payload=b"shipped weights"):
    """A shipped checkpoint in `folder` made by `recipe`, as make foundation ARGS=--ship writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo-seed0.pt").write_bytes(payload)
    digest = foundation.sha256_file(folder / "demo-seed0.pt")
    (folder / "demo-seed0.json").write_text(json.dumps({"recipe": recipe, "sha256": digest, "made_on": "x"}))
    return digest


def _smoke(tmp_path, monkeypatch, recipe):
    cfg = config.load("smoke", data_root=str(tmp_path / "data"),
                      pretrained=str(tmp_path / "data" / "foundation" / "foundation.pt"))
    monkeypatch.setattr(foundation, "recipe", lambda _cfg: recipe)
    monkeypatch.setattr(foundation, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(foundation, "train", lambda *a, **k: pytest.fail("the shipped one must be used"))
    return cfg


def test_the_shipped_foundation_of_the_same_recipe_is_copied_and_checked(tmp_path, monkeypatch):
    recipe = {"corpus_sha256": "abc", "model": "kit-tiny-vit", "seed": 0}
    cfg = _smoke(tmp_path, monkeypatch, recipe)
    digest = _ship(tmp_path / "shipped", recipe)
    _ship(tmp_path / "other", {**recipe, "seed": 1})
    assert foundation.shipped_for({**recipe, "seed": 1}, tmp_path / "shipped") is None
    made = foundation.ensure_foundation(cfg, progress=False)
    assert made.read_bytes() == b"shipped weights"
    assert (made.parent / "foundation.pt.sha256").read_text().split()[0] == digest
    assert json.loads((made.parent / "foundation.pt.recipe.json").read_text()) == recipe
    assert foundation.ensure_foundation(cfg, progress=False) == made  # found, verified, kept


def test_a_damaged_shipped_foundation_is_refused_naming_it(tmp_path, monkeypatch):
    recipe = {"corpus_sha256": "abc"}
    cfg = _smoke(tmp_path, monkeypatch, recipe)
    _ship(tmp_path / "shipped", recipe)
    (tmp_path / "shipped" / "demo-seed0.pt").write_bytes(b"shipped weightz")
    with pytest.raises(foundation.FoundationError, match=r"demo-seed0\.pt has sha256 .*git checkout"):
        foundation.ensure_foundation(cfg, progress=False)
    assert not cfg.path("pretrained").exists()

