"""``python -m bench``: runs the benchmark (see ``bench.run``); ``python -m bench service``
runs the HTTP service's load scenario (see ``bench.service``)."""
import sys

if sys.argv[1:2] == ["service"]:
    from bench.service import main as service_main
    sys.exit(service_main(sys.argv[2:]))

from bench.run import main  # pylint: disable=wrong-import-position

sys.exit(main())
