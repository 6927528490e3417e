"""Every way a query path can fail to be read is one line naming the path and why.

``read_file`` is the one read of a query (the command line, warm mode, evaluation) and
of the collection: an ``OSError`` of any kind (a name too long, no permission, a
folder, a FIFO, a device, a broken link, a link loop, a path through a file) or a NUL
in the path used to escape as a traceback, or block on a FIFO. Real files, FIFOs and
sockets; permission is tested in a user namespace (``unshare -U``) when run as root,
whom file modes do not stop.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lib.errors import ImageReadError, one_line
from lib.photos.images import read_file
from tests.support.helpers import REPO_ROOT, tool_env

TIMEOUT_S = 60


def odd_paths(root: Path) -> dict:
    """Paths that cannot be read, by case, each with the words its error must hold."""
    os.mkfifo(root / "pipe.jpg")
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "file.jpg").write_bytes(b"x")
    (root / "folder.jpg").mkdir()
    (root / "to-pipe.jpg").symlink_to(root / "pipe.jpg")
    return {
        "missing": (root / "nowhere.jpg", "no such file"),
        "broken link": (root / "dangling.jpg", "broken link"),
        "link loop": (root / "loop.jpg", "cannot read (Too many levels of symbolic links)"),
        "folder": (root / "folder.jpg", "not a file (a folder)"),
        "FIFO": (root / "pipe.jpg", "not a file (a FIFO)"),
        "link to a FIFO": (root / "to-pipe.jpg", "not a file (a FIFO)"),
        "device": (Path("/dev/null"), "not a file (a device)"),
        "name too long": (root / ("n" * 300 + ".jpg"), "cannot read (File name too long)"),
        "path too long": (root / "/".join(["d" * 200] * 30),
                          "cannot read (File name too long)"),
        "through a file": (root / "file.jpg" / "x.jpg", "cannot read (Not a directory)"),
        "NUL in the name": (Path(f"{root}/a\0b.jpg"), "cannot read (embedded null byte)"),
        "not UTF-8": (root / os.fsdecode(b"caf\xe9.jpg"), "no such file"),
        "newline": (root / "new\nline.jpg", "no such file"),
    }


@pytest.mark.parametrize("case", ["missing", "broken link", "link loop", "folder", "FIFO",
                                  "link to a FIFO", "device", "name too long",
                                  "path too long", "through a file", "NUL in the name",
                                  "not UTF-8", "newline"])
def test_each_unreadable_path_is_one_line_naming_it_and_why(tmp_path, case):
    path, words = odd_paths(tmp_path)[case]
    with pytest.raises(ImageReadError) as err:
        read_file(path, max_bytes=1 << 20)
    assert str(err.value) == f"{path}: {words}"
    shown = one_line(err.value)                  # as the command line prints it
    assert shown == one_line(ValueError(f"{path}: {words}")) and shown.isprintable()


def test_a_socket_is_refused_without_being_opened(tmp_path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.jpg"))
        with pytest.raises(ImageReadError, match="sock.jpg: not a file \\(a socket\\)"):
            read_file(tmp_path / "sock.jpg")


def test_no_permission_is_one_line(tmp_path):
    photo = tmp_path / "secret.jpg"
    photo.write_bytes(b"\xff\xd8 not read")
    photo.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "inside.jpg").write_bytes(b"x")
    locked.chmod(0)
    code = ("import sys\nfrom lib.errors import ImageReadError\n"
            "from lib.photos.images import read_file\nfor path in sys.argv[1:]:\n"
            "    try:\n        read_file(path)\n        print('read', path)\n"
            "    except ImageReadError as err:\n        print(err)")
    command = [sys.executable, "-c", code, str(photo), str(locked / "inside.jpg")]
    if os.geteuid() == 0:                 # root reads anything: drop that in a namespace
        if shutil.which("unshare") is None or subprocess.run(
                ["unshare", "-U", "true"], capture_output=True, check=False).returncode:
            pytest.skip("run as root without user namespaces (unshare -U)")
        command = ["unshare", "-U", *command]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=tool_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=True)
    assert proc.stdout.splitlines() == [
        f"{photo}: cannot read (Permission denied)",
        f"{locked / 'inside.jpg'}: cannot read (Permission denied)"], proc.stdout
    locked.chmod(0o700)
