"""`python -m lib.labels FILE [--queries]`: check a label or queries file (code: `lib.data.labels`)."""
import sys

if __name__ == "__main__":
    from lib.data.labels import main

    sys.exit(main())
