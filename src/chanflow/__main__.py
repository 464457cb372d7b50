"""``python -m chanflow``: the same command line as ``chanflow``."""

from ._cli import main

if __name__ == "__main__":
    main()
