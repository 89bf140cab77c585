"""`python -m lib.pipeline`: see lib.pipeline.runner."""
import sys

from lib.pipeline.runner import main

sys.exit(main())
