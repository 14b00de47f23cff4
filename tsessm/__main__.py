"""`python -m tsessm ...`: the same as `tsessm ...`."""
import sys

from tsessm.cli import main

if __name__ == "__main__":
    sys.exit(main())
