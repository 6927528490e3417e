"""``python -m bench``: runs the benchmark (see ``bench.run``); ``python -m bench
incremental``: the living-library scenario (see ``bench.incremental``)."""
import sys

if sys.argv[1:2] == ["incremental"]:
    from bench.incremental import main
    sys.exit(main(sys.argv[2:]))

from bench.run import main  # pylint: disable=wrong-import-position

sys.exit(main())
