import pytest
import torch

from lib.train.launch import train
from tests.train import make_table, tiny_cfg


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """2 shared cores: a second intra-op thread only spins against the other workers (100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """2 epochs uninterrupted, latest.pt also every 2 steps, val table and an evaluator."""
    root = tmp_path_factory.mktemp("train_ref")
    table = make_table(root / "images")
    cfg = tiny_cfg(root, save_every_steps=2, workers=2)  # workers: augmentation must not depend on them
    calls = []

    def evaluator(model):  # not monotonic: the best epoch (1) is not the last (2)
        calls.append(model.training)
        return {"map10_official": (0.6, 0.9, 0.7)[len(calls) - 1], "recall@1": 0.25}

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cfg, root / "run", table, val_table=table.iloc[:8], evaluator=evaluator,
                       progress=False)
    finally:
        torch.set_num_threads(before)
    return {"root": root, "table": table, "cfg": cfg, "result": result, "calls": calls}
