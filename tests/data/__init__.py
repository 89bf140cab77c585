"""Helpers of the data tests: the real val labels, person attributes, files with given bytes."""
from pathlib import Path

from tests import FIXTURES

VAL = FIXTURES / "val_label.txt"  # the organisers' real val labels
PERSON_TEXT = ("A female pedestrian who is between 18 and 60 years old, with her body facing the camera. "
               "She is in a tee shirt with short sleeves.")


def bits(*ones: int) -> str:
    """A 21-bit person attribute with the given bits set."""
    return ",".join("1" if k in ones else "0" for k in range(21))


def write(tmp_path: Path, content: str | bytes, name: str = "val_label.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path
