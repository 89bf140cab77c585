"""tools.study.confirm: a world of its own (data, foundation, run), never world 0."""
from lib import config
from tools.study import confirm


def test_a_world_has_its_own_data_foundation_and_run():
    assert confirm.world_overrides(3) == ["demo_seed=3", "data_root=data/demo-world3",
                                          "pretrained=data/demo-world3/foundation/foundation.pt",
                                          "run_name=world3"]
    cfg = config.load("demo", **config.parse_overrides(confirm.world_overrides(1)))
    assert cfg.demo_seed == 1 and cfg.path("pretrained").parent.parent == cfg.path("data_root")


def test_the_deciding_world_is_refused(capsys):
    assert confirm.main(["--world", "0"]) == 2
    assert "world 0 decided the defaults" in capsys.readouterr().err
