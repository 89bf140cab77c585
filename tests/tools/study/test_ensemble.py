"""tools.study.ensemble: fused embeddings rank by the mean of the models' cosines."""
import pytest
import torch

from lib.errors import KitError
from tools.study.ensemble import fuse


def test_fused_dot_products_are_the_mean_of_the_models_cosines():
    q1, g1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # model 1: cosines 1, 0
    q2, g2 = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # model 2: cosines 0.8, 1
    scores = fuse([q1, q2]) @ fuse([g1, g2]).T
    assert scores.tolist() == [[pytest.approx(0.9), pytest.approx(0.5)]]  # (1 + 0.8) / 2, (0 + 1) / 2
    with pytest.raises(KitError, match="the same items"):
        fuse([q1, torch.zeros(2, 2)])
