"""`python -m lib.submission SUB --queries Q [--gallery DIR]`: validate (code: `lib.eval.submission`)."""
import sys

if __name__ == "__main__":
    from lib.eval.submission import main

    sys.exit(main())
