"""``python -m bench``: runs the benchmark (see ``bench.run``)."""
import sys

from bench.run import main

sys.exit(main())
