"""`python -m lib.train` (and torchrun's `-m lib.train`): see lib.train.launch."""
from lib.train.launch import main

raise SystemExit(main())
