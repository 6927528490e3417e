"""One typed configuration, and user errors apart from bugs."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lib import cli
from lib.config import Config, EtlConfig, load_config, SECTIONS
from lib.errors import ConfigError, InputError, UserError
from lib.photos import etl as pipeline
from tests.support.helpers import REPO_ROOT, tool_env

SHIPPED = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_the_shipped_params_are_the_declared_defaults():
    config = load_config(REPO_ROOT / "params.yaml")
    # Every setting params.yaml lists is declared, and the shipped values are the defaults
    # (the one place defaults live), so a key left out behaves as the shipped file.
    assert set(SHIPPED) == set(SECTIONS)
    for name, section in SECTIONS.items():
        assert set(SHIPPED[name]) == {field.name for field in dataclasses.fields(section)}
        assert getattr(config, name) == section(), name
    assert config == Config()


def test_config_objects_are_immutable():
    config = load_config(REPO_ROOT / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.etl.image_size = 10  # type: ignore[misc]


def _with(dotted: str, value) -> dict:
    params = yaml.safe_load(yaml.safe_dump(SHIPPED))
    section, key = dotted.split(".")
    params[section][key] = value
    return params


@pytest.mark.parametrize("params, message", [
    (_with("etl.image_size", -1), "params.yaml: etl.image_size: -1 is not allowed: expected "
                                  "an integer >= 8"),
    (_with("serve.top_n", "five"), "serve.top_n: 'five' is not allowed: expected an integer"),
    (_with("etl.resize_mode", "squash"), "etl.resize_mode: 'squash' is not allowed: expected "
                                         "one of stretch, crop, pad"),
    (_with("etl.reduced_decode", "yes"), "etl.reduced_decode: 'yes' is not allowed: expected "
                                         "true or false"),
    (_with("modelling.gem_p", float("nan")), "modelling.gem_p: nan is not allowed"),
    (_with("etl.image_sise", 224), "etl.image_sise: unknown setting; etl has"),
    ({key: value for key, value in SHIPPED.items() if key != "serve"},
     "params.yaml: section 'serve' is missing"),
    ({**SHIPPED, "servee": {}}, "unknown section 'servee'"),
    ({**SHIPPED, "etl": [1, 2]}, "section 'etl' must be a mapping"),
    ([1, 2], "must hold a mapping of sections"),
])
def test_a_bad_params_file_is_one_line_naming_key_value_and_what_is_allowed(params, message):
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(params)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_not_yaml_and_missing_files_are_config_errors(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("etl: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_revision_built_before_a_section_existed_gets_its_defaults():
    old = {key: value for key, value in SHIPPED.items() if key not in ("whitening", "serve")}
    config = Config.from_dict(old, missing_sections=True)
    assert config.whitening.dim == 0 and config.serve.query_expansion == 0


def test_constructing_a_section_in_code_validates_it_too():
    with pytest.raises(ConfigError, match="etl.interpolation"):
        EtlConfig(interpolation="nearest")


@pytest.mark.parametrize("script", ["weights", "etl", "feature_engineering", "modelling",
                                    "whitening", "index", "evaluate"])
def test_every_stage_refuses_bad_params_in_one_line_and_writes_nothing(tmp_path, script):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_with("etl.image_size", -1)), encoding="utf-8")
    outputs = [tmp_path / f"out{i}" for i in range(4)]
    args = {"weights": outputs[:1], "etl": [REPO_ROOT / "data/master"] + outputs[:3],
            "feature_engineering": outputs[:2], "modelling": outputs[:4],
            "whitening": outputs[:2], "index": outputs[:3],
            "evaluate": [REPO_ROOT / "data/queries/labels.csv"] + outputs[:4]}[script]
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "stages" / f"{script}.py"),
                           *map(str, args), "--params", str(params)],
                          capture_output=True, text=True, env=tool_env(), check=False,
                          cwd=tmp_path)
    assert proc.returncode == cli.EXIT_USER_ERROR
    assert proc.stderr.strip() == (f"{script}.py: error: {params}: etl.image_size: -1 is not "
                                   "allowed: expected an integer >= 8")
    assert not any(path.exists() for path in outputs)


def _main_raising(error: BaseException):
    def main(argv=None):  # pylint: disable=unused-argument
        raise error
    return main


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    assert cli.run(_main_raising(InputError("photo.jpg: no such\nfile"))) == 1
    assert capsys.readouterr().err.endswith("error: photo.jpg: no such file\n")
    # A bug (here a TypeError from deep in the code) is not dressed up as a user error.
    for bug in (TypeError("object of type 'NoneType' has no len()"), ValueError("bug"),
                OSError("bug")):
        with pytest.raises(type(bug)):
            cli.run(_main_raising(bug))


def test_verbose_shows_the_traceback_of_a_user_error_too(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(
        "import sys\nsys.path.insert(0, sys.argv[1])\nfrom lib import cli\n"
        "from lib.errors import InputError\n"
        "def main(argv=None):\n"
        "    args = cli.ArgumentParser().parse_args(sys.argv[2:])\n"
        "    cli.setup_logging(args.verbose)\n"
        "    raise InputError('bad photo')\n"
        "sys.exit(cli.run(main))\n", encoding="utf-8")
    quiet = subprocess.run([sys.executable, str(script), str(REPO_ROOT)], capture_output=True,
                           text=True, check=False)
    loud = subprocess.run([sys.executable, str(script), str(REPO_ROOT), "-v"],
                          capture_output=True, text=True, check=False)
    assert quiet.returncode == loud.returncode == 1
    assert quiet.stderr == "fails.py: error: bad photo\n"
    assert "Traceback" in loud.stderr and loud.stderr.endswith("fails.py: error: bad photo\n")


def test_a_bug_in_the_etl_is_not_recorded_as_a_skipped_file(tmp_path, monkeypatch):
    master = tmp_path / "master"
    master.mkdir()
    (master / "a.png").write_bytes(b"not a png")             # a bad file: skipped
    cv2.imwrite(str(master / "b.png"), np.zeros((10, 10, 3), np.uint8))
    report = pipeline.run_etl(master, tmp_path / "i.npy", tmp_path / "n.npy",
                              tmp_path / "r.json", EtlConfig(image_size=8))
    assert report["files_skipped"] == 1 and report["images_kept"] == 1

    def buggy(path, config):
        raise TypeError(f"object of type 'NoneType' has no len() ({path}, {config})")

    (tmp_path / "r.json").unlink()
    monkeypatch.setattr(pipeline, "load_image", buggy)       # a bug in the code instead
    with pytest.raises(TypeError, match="NoneType"):
        pipeline.run_etl(master, tmp_path / "i.npy", tmp_path / "n.npy",
                         tmp_path / "r.json", EtlConfig(image_size=8))
    assert not (tmp_path / "r.json").exists()


def test_every_user_facing_error_class_is_one_family():
    from lib.errors import ArtifactError  # pylint: disable=import-outside-toplevel
    from lib.errors import ImageReadError  # pylint: disable=import-outside-toplevel
    from lib.errors import PinningError  # pylint: disable=import-outside-toplevel
    for error in (ArtifactError, ImageReadError, PinningError, ConfigError, InputError):
        assert issubclass(error, UserError)


def test_config_paths_resolve_against_the_root(tmp_path):
    paths = Config().paths.resolve(tmp_path)
    assert paths["vectors"] == tmp_path / "data/model/embedded_image_vectors.npy"
    assert isinstance(paths["model"], Path)
