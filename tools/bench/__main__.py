"""`python -m tools.bench`: see tools.bench.bench."""
import sys

from tools.bench.bench import main

sys.exit(main())
