"""`python -m lib.train` (and torchrun's `-m lib.train`): see lib.train.launch."""
import sys

from lib.train.launch import main

sys.exit(main())
