import pandas as pd
import pytest

from lib.data import labels
from tests.data import VAL


@pytest.fixture(scope="module")
def val() -> pd.DataFrame:
    """The real validation labels, read strictly."""
    return labels.read_labels(VAL)
