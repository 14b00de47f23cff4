"""`python -m tsessm.stream ...`: the same as `tsessm stream ...`."""
import sys

from tsessm.stream.cli import main

if __name__ == "__main__":
    sys.exit(main())
