"""tools.foundation (make foundation): the shipped foundation is what the demo profile's recipe makes, and a
rebuild compares its bytes with it (or ships them)."""
import json

from lib import config
from lib.demo import foundation as lib_foundation
from lib.files import sha256_file
from tools import foundation


def test_the_shipped_default_has_its_bytes_and_the_demo_profiles_recipe():
    meta = json.loads((lib_foundation.SHIPPED_DIR / "demo-seed0.json").read_text())
    assert sha256_file(lib_foundation.SHIPPED_DIR / "demo-seed0.pt") == meta["sha256"]
    assert meta["command"] == "make foundation ARGS=--ship"
    demo = config.load("demo")
    keys = {k: v for k, v in meta["recipe"].items() if k != "corpus_sha256"}
    assert keys == {k: getattr(demo, k) for k in keys}, "the shipped recipe is not the demo profile's"


def test_rebuild_ships_then_compares_the_bytes(tmp_path, monkeypatch, capsys):
    payload = {"bytes": b"pretrained weights"}

    def pretrain(cfg, progress, use_shipped):
        assert not use_shipped
        made = cfg.path("pretrained")
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_bytes(payload["bytes"])
        return made

    shipped = tmp_path / "shipped"
    for module in (foundation, lib_foundation):
        monkeypatch.setattr(module, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(foundation, "ensure_demo_data", lambda cfg, progress: None)
    monkeypatch.setattr(foundation, "ensure_foundation", pretrain)
    monkeypatch.setattr(foundation, "recipe", lambda cfg: {"corpus_sha256": "abc"})
    cfg = config.load("smoke", data_root=str(tmp_path / "data"))
    assert foundation.rebuild(cfg, progress=False) == 1
    assert "nothing ships for this recipe" in capsys.readouterr().out
    assert foundation.rebuild(cfg, ship=True, progress=False) == 0
    meta = json.loads((shipped / "smoke-seed0.json").read_text())
    assert meta["recipe"] == {"corpus_sha256": "abc"} and meta["command"] == "make foundation ARGS=--ship"
    assert (shipped / "smoke-seed0.pt").read_bytes() == payload["bytes"]
    assert meta["sha256"] == sha256_file(shipped / "smoke-seed0.pt")
    capsys.readouterr()
    assert foundation.rebuild(cfg, progress=False) == 0
    assert "same bytes as the shipped" in capsys.readouterr().out
    payload["bytes"] = b"other processor's weights"
    assert foundation.rebuild(cfg, progress=False) == 1
    assert "differs from the shipped" in capsys.readouterr().out


def test_a_profile_that_downloads_its_weights_has_nothing_to_rebuild(capsys):
    assert foundation.main(["--profile", "competition"]) == 2
    assert "downloads its pretrained weights: nothing to rebuild" in capsys.readouterr().err
