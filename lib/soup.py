"""`python -m lib.soup --run RUN [--method greedy|uniform|wise] [--alpha A]`: average a run's
checkpoints into checkpoints/soup.pt (code: `lib.eval.soup`)."""
import sys

if __name__ == "__main__":
    from lib.eval.soup import main

    sys.exit(main())
