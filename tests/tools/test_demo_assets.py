"""tools.demo_assets: the shipped person-vector table is what its recipe makes from the real labels."""
from lib.demo import captions as dc
from tests.demo.test_captions import FIXTURES
from tools.demo_assets import build_person_vector_table


def test_shipped_person_vector_table_is_rebuilt_from_the_real_labels(tmp_path):
    rebuilt = build_person_vector_table(FIXTURES / "val_label.txt", tmp_path / "table.csv")
    assert rebuilt.read_bytes() == dc.PERSON_TABLE.read_bytes()
    vectors, p, _ = dc.person_vector_table()
    assert vectors.shape == (718, 21) and abs(p.sum() - 1) < 1e-9
