"""`python -m tools.gpu`: see tools.gpu.proof."""
import sys

from tools.gpu.proof import main

sys.exit(main())
