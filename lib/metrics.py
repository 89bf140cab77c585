"""`python -m lib.metrics --gt GT --submission SUB`: the organisers' mAP@10 (code: `lib.eval.metrics`)."""
import sys

if __name__ == "__main__":
    from lib.eval.metrics import main

    sys.exit(main())
