"""`python -m lib.soup`: see lib.soup.make."""
import sys

from lib.soup.make import main

sys.exit(main())
