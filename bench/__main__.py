"""``python -m bench``: runs the benchmark (see ``bench.run``); ``python -m bench service``:
the HTTP service's load scenario (see ``bench.service``); ``python -m bench incremental``:
the living-library scenario (see ``bench.incremental``); ``python -m bench cold``: a cold
command-line query against the bare floor (see ``bench.cold_query``)."""
import sys

if sys.argv[1:2] == ["service"]:
    from bench.service import main as service_main
    sys.exit(service_main(sys.argv[2:]))
if sys.argv[1:2] == ["incremental"]:
    from bench.incremental import main as incremental_main
    sys.exit(incremental_main(sys.argv[2:]))

if sys.argv[1:2] == ["cold"]:
    from bench.cold_query import main as cold_main
    sys.exit(cold_main(sys.argv[2:]))

from bench.run import main  # pylint: disable=wrong-import-position

sys.exit(main())
