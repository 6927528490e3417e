"""The API contract, checked by a real client: Schemathesis fuzzes the running service
from its own OpenAPI schema with every check.

``st run`` (the CLI, as a user runs it) against ``query_service`` at its real address
(so that its Host is served), ``--checks all``: no server error, every status, header,
content type and body as the schema documents it, schema-valid requests accepted and
invalid ones refused, 405 with ``Allow`` for the methods a path does not take.
``tests/support/contract_hooks.py`` tells it what a schema cannot (real images for the
upload, the collection's names as examples). The near-duplicates report is made first,
so that ``GET /duplicates`` answers with groups. Bounded by ``--max-examples`` (about
1,000 cases, well under 2 minutes).
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import REPO_ROOT, run, tool_env

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 200
TIMEOUT_S = 600


def test_the_service_keeps_its_openapi_contract(query_service, query_project,
                                                tmp_path: Path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed: pip install -r requirements.txt"
    env = {**tool_env(), "SCHEMATHESIS_HOOKS": "tests.support.contract_hooks",
           "CONTRACT_PROJECT": str(query_project), "PYTHONPATH": str(REPO_ROOT),
           "NO_COLOR": "1"}
    run([sys.executable, str(REPO_ROOT / "stages" / "duplicates.py")], query_project)
    try:
        proc = subprocess.run(
            [st, "run", f"{query_service.url}/openapi.json", "--checks", "all",
             "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--no-color"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
            check=False)
    finally:
        shutil.rmtree(query_project / "duplicates", ignore_errors=True)
    output = proc.stdout + proc.stderr
    print(output[-3000:])
    assert proc.returncode == 0, output[-12000:]
    assert "No issues found" in output, output[-12000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases and int(cases.group(1)) == int(cases.group(2)) >= 500, output[-3000:]
    assert re.search(r"Operations:\s+7 selected / 7 total", output), output[:3000]
    log = query_service.log()
    assert "Traceback" not in log and not re.search(r'" 5\d\d ', log)
