"""``python -m fastdeconv ...``: the command line of :mod:`fastdeconv.tools.cli`."""
from fastdeconv.tools.cli import main

if __name__ == "__main__":  # worker processes that re-import the main module must not start the command again
    raise SystemExit(main())
