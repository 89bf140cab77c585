import pytest
import torch

from lib.model.factory import create_model
from tests.model import MICRO


@pytest.fixture(scope="module")
def micro():
    """A randomly initialised kit-micro-vit (seed 0)."""
    torch.manual_seed(0)
    net, _, _ = create_model(MICRO)
    return net
