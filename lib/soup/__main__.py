"""`python -m lib.soup`: see lib.soup.make."""
from lib.soup.make import main

raise SystemExit(main())
