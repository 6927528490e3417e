"""Query paths as a user gives them to ``serve.py``: warm mode answers the next line after
any bad one, and ``--no-verify`` names the bytes it actually loaded.

Real project (the session's query project, real model), real processes, real files:
a FIFO, a folder, a device, a broken link, an unreadable file, a name too long, a NUL,
and paths that are not UTF-8 (one of them a real photo, which is answered). Warm mode
used to stop with a traceback at the first line that was not UTF-8, or an ``OSError``
other than a missing file.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.errors import one_line, printable
from tests.support.helpers import DATASET, run, tool_env
from tests.support.query_project import COLLECTION, name_of

pytestmark = pytest.mark.slow

TIMEOUT_S = 600


def blocks(stdout: str) -> list:
    """The answer blocks of warm mode (each ended by an empty line), after the version."""
    version, _, rest = stdout.partition("\n")
    assert version.startswith("version: "), stdout
    return [block.splitlines() for block in rest.split("\n\n") if block.strip()]


def test_warm_mode_answers_the_next_line_after_every_unreadable_path(query_project,
                                                                     tmp_path):
    photo = query_project / "data" / "master" / name_of(COLLECTION[2])
    latin = os.fsencode(tmp_path) + b"/caf\xe9.jpg"             # not UTF-8, a real photo
    shutil.copyfile(photo, latin)
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "secret.jpg").write_bytes(photo.read_bytes())
    (tmp_path / "secret.jpg").chmod(0)
    bad = [(os.fsencode(tmp_path / "nowhere.jpg"), "no such file"),
           (os.fsencode(tmp_path / "pipe.jpg"), "not a file (a FIFO)"),
           (os.fsencode(tmp_path / "folder.jpg"), "not a file (a folder)"),
           (b"/dev/null", "not a file (a device)"),
           (os.fsencode(tmp_path / "dangling.jpg"), "broken link"),
           (os.fsencode(tmp_path / "secret.jpg"), "cannot read (Permission denied)"),
           (os.fsencode(tmp_path) + b"/" + b"n" * 300 + b".jpg",
            "cannot read (File name too long)"),
           (os.fsencode(tmp_path) + b"/" + b"/".join([b"d" * 200] * 25) + b".jpg",
            "cannot read (File name too long)"),                  # a 5,000-character path
           (os.fsencode(tmp_path) + b"/nul\0.jpg", "cannot read (embedded null byte)"),
           (os.fsencode(tmp_path) + b"/gone-\xff\xfe.jpg", "no such file")]
    lines = [os.fsencode(photo)] + [path for path, _ in bad] + [latin, os.fsencode(photo)]
    command = [sys.executable, "stages/serve.py", "-", "-n", "3"]
    if os.geteuid() == 0:                # root reads anything: drop that in a namespace
        if shutil.which("unshare") is None or subprocess.run(
                ["unshare", "-U", "true"], capture_output=True, check=False).returncode:
            bad = [case for case in bad if "Permission" not in case[1]]
            lines = [line for line in lines if not line.endswith(b"secret.jpg")]
        else:
            command = ["unshare", "-U", *command]
    proc = subprocess.run(command, cwd=query_project, env=tool_env(),
                          input=b"".join(line + b"\n" for line in lines), capture_output=True,
                          timeout=TIMEOUT_S, check=False)
    stdout = proc.stdout.decode("utf-8")
    assert proc.returncode == 1, proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in proc.stderr.decode("utf-8", "replace")
    answers = blocks(stdout)
    assert len(answers) == len(lines), stdout
    first, *errors, latin_answer, last = answers
    assert first[0].startswith("3 most similar of") and first[1].split()[-1] == \
        name_of(COLLECTION[2])
    for block, (path, words) in zip(errors, bad):
        assert block == [f"error: {one_line(ValueError(f'{os.fsdecode(path)}: {words}'))}"], \
            block
    # The photo whose name is not UTF-8 is answered, its name shown escaped.
    assert latin_answer[0].endswith(f"to {printable(os.fsdecode(latin))}:"), latin_answer
    assert latin_answer[1].split()[-1] == name_of(COLLECTION[2])
    assert last == first


def test_a_five_thousand_character_query_path_is_one_line(query_project, tmp_path):
    path = str(tmp_path) + "/" + "/".join(["d" * 200] * 25) + ".jpg"
    assert len(path) > 5000
    proc = subprocess.run([sys.executable, "stages/serve.py", path, "-n", "2"],
                          cwd=query_project, env=tool_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 1 and not proc.stdout.strip(), proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("serve.py: error: ")
    assert "File name too long" in proc.stderr and "Traceback" not in proc.stderr


def test_no_verify_names_the_md5_of_the_vectors_it_loaded(query_project, tmp_path):
    project = Path(shutil.copytree(query_project, tmp_path / "project", symlinks=True))
    vectors = project / "data" / "model" / "embedded_image_vectors.npy"
    scaled = np.load(vectors) * 2                      # same ranking (cosine), other bytes
    vectors.unlink()                                   # a DVC link: do not write through it
    np.save(vectors, scaled)
    loaded = hashlib.md5(vectors.read_bytes()).hexdigest()
    query = DATASET / COLLECTION[3][0]
    proc = run(["python", "stages/serve.py", str(query), "-n", "2", "--no-verify",
                "--output", str(tmp_path / "out.png")], project)
    assert proc.stdout.splitlines()[0] == ("version: git none (workspace, unverified), "
                                           f"vectors md5 {loaded}")
    assert f"the vectors loaded (md5 {loaded}) are not the version dvc.lock records" in \
        proc.stderr
    assert proc.stdout.splitlines()[2].split()[-1] == name_of(COLLECTION[3])
    refused = run(["python", "stages/serve.py", str(query)], project, check=False)
    assert refused.returncode == 1 and "is not the version recorded in dvc.lock" in \
        refused.stderr
