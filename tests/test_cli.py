"""The CLI through typer's runner: it parses, calls the API, and reports in one line."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from clipdata.cli import app
from helpers import SAMPLES, make_image, write_coco

runner = CliRunner()


def test_readme_command_on_the_sample(tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["convert", "coco", str(SAMPLES / "coco" / "annotations.json"), str(out)])
    assert r.exit_code == 0, r.output
    assert "15 crops" in r.output and "13 classes" in r.output
    assert "a photo of a space shuttle" in r.output
    assert (out / "train" / "_tokenization.txt").is_file()
    r = runner.invoke(app, ["inspect", str(out)])
    assert r.exit_code == 0 and "layout OK" in r.output


def test_options_reach_the_api(tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["convert", "folder", str(SAMPLES / "folder"), str(out), "--quiet",
                            "--template", "a close-up photo of {}", "--rename", "brick wall=bricks"])
    assert r.exit_code == 0 and r.output == ""
    assert (out / "valid" / "_tokenization.txt").read_text().splitlines()[0] == "a close-up photo of bricks"
    options = json.loads((out / "clipdata.json").read_text())["options"]
    assert options["rename"] == ["brick wall=bricks"] and options["template"] == "a close-up photo of {}"


@pytest.mark.parametrize("args, fragment, code", [
    (["convert", "pascal", "x", "out"], "unknown format 'pascal'", 2),
    (["convert", "coco", "nope.json", "out"], "nope.json: file not found", 1),
    (["convert", "folder", "nope", "out"], "not a folder", 1),
    (["convert", "folder", str(SAMPLES / "folder"), "out", "--template", "no placeholder"], "has no {}", 2),
    (["convert", "folder", str(SAMPLES / "folder"), "out", "--padding", "lots"], "--padding", 2),
    (["convert", "folder", str(SAMPLES / "folder"), "out", "--split", "holdout"], "--split", 2),
    (["convert", "folder", str(SAMPLES / "folder"), "out", "--image-format", "gif"], "--image-format", 2),
    (["convert", "folder", str(SAMPLES / "folder"), "out", "--mode", "foo"], "--mode", 2),
])
def test_user_mistakes_are_one_line_and_exit_1_or_2_for_usage(tmp_path, monkeypatch, args, fragment, code):
    """Bad input exits 1; a bad option value on the command line is a usage error, 2."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == code
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")  # one message, never wrapped
    assert fragment in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_broken_json_names_file_and_line(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('{"images": [\n  {"id": 1,}\n]}')
    r = runner.invoke(app, ["convert", "coco", str(f), str(tmp_path / "out")])
    assert r.exit_code == 1 and "(line 2, column 12): malformed JSON" in " ".join(r.output.split())


def test_missing_images_and_skip_missing(tmp_path):
    make_image(tmp_path / "a.jpg")
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "gone.jpg"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]},
                    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4]}], [{"id": 1, "name": "c"}])
    r = runner.invoke(app, ["convert", "coco", str(f), str(tmp_path / "out")])
    assert r.exit_code == 1 and "1 image(s) not found: 'gone.jpg'" in " ".join(r.output.split())
    r = runner.invoke(app, ["convert", "coco", str(f), str(tmp_path / "out"), "--skip-missing"])
    assert r.exit_code == 0 and "missing_image 1" in r.output


def test_inspect_exit_code_gates_a_pipeline(tmp_path):
    make_image(tmp_path / "train" / "a" / "1.jpg")
    make_image(tmp_path / "train" / "b" / "1.jpg")
    (tmp_path / "train" / "_tokenization.txt").write_text("only one")
    r = runner.invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 1 and "1 caption line(s) for 2 class folder(s)" in " ".join(r.output.split())


def test_help_shows_an_example():
    r = runner.invoke(app, ["convert", "--help"])
    assert r.exit_code == 0 and "clipdata convert coco samples/coco/annotations.json out/" in r.output


def test_usage_error_is_exit_2():
    assert runner.invoke(app, ["convert", "coco"]).exit_code == 2


def test_console_script_and_no_heavy_imports(tmp_path):
    """The installed `clipdata` runs, and neither import nor convert loads torch."""
    code = (
        "import sys, clipdata; from clipdata.cli import main; "
        f"sys.argv = ['clipdata', 'convert', 'folder', {str(SAMPLES / 'folder')!r}, {str(tmp_path / 'o')!r}, '-q'];\n"
        "try: main()\nexcept SystemExit as e: assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    r = subprocess.run([sys.executable, "-c", "import sys, clipdata; print('PIL' in sys.modules)"],
                       check=True, capture_output=True, text=True)
    assert r.stdout.strip() == "False"  # importing the package is cheap
    r = subprocess.run(["clipdata", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("clipdata ")
