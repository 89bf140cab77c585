"""The kit's tests, one module per lib module, in folders that mirror lib's packages."""
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
