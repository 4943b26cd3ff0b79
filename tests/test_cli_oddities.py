"""The command line where the process around it is odd: stdout full, closed or a pipe whose
reader left; Ctrl-C and SIGTERM while a command works or while it still imports; arguments a
shell hands over as bytes (non-UTF-8 text), empty paths, counts out of range; model folders
without a tokenizer. Each ends in the exit code and at most one line, never a traceback and
never the "this is a bug" line.

The process-level cases run `python -m clipdata.cli` as a user does; the argument table runs
the same entry point, main(), in this process (it stops before any model loads)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipdata.cli.app import main
from helpers import SAMPLES, SHAPES_MODEL, make_image, needs_shapes_model

LAYOUT = SAMPLES / "shapes" / "layout"
UNLABELED = SAMPLES / "shapes" / "unlabeled"
FOLDER = SAMPLES / "folder"
M = str(SHAPES_MODEL)
XFF = "\udcff"  # the byte 0xff of an argument, as Python hands it over (surrogateescape)


def _clipdata(args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "clipdata.cli", *args], stderr=subprocess.PIPE, timeout=120, **kw)


def _lines(err: bytes) -> list[str]:
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text and "this is a bug" not in text, text
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------- stdout that cannot be written

@pytest.mark.parametrize("args", [["models"], ["--help"], ["inspect", str(LAYOUT)]], ids=["models", "help", "inspect"])
def test_a_full_disk_on_stdout_is_one_line(args):
    with open("/dev/full", "wb") as full:
        r = _clipdata(args, stdout=full)
    assert r.returncode == 1
    assert _lines(r.stderr) == ["error: cannot write to standard output: No space left on device"]


def test_a_closed_stdout_is_one_line():
    r = _clipdata(["models"], stdout=subprocess.DEVNULL, pass_fds=(), close_fds=True,
                  preexec_fn=lambda: os.close(1))
    assert r.returncode == 1
    assert _lines(r.stderr) == ["error: cannot write to standard output: it is closed"]


@pytest.mark.parametrize("args", [["models"], ["inspect", str(LAYOUT)]], ids=["models", "inspect"])
def test_a_pipe_whose_reader_left_ends_quietly_with_141(args):
    """`clipdata models | head -1`: the reader has what it wanted; no line, exit 128 + SIGPIPE."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: EPIPE for sure
    try:
        r = _clipdata(args, stdout=write)
    finally:
        os.close(write)
    assert r.returncode == 141 and _lines(r.stderr) == []


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_cannot_show_a_name_gets_it_escaped(tmp_path, encoding):
    """PYTHONIOENCODING=ascii or a Latin-1 locale: a class `日本` crashed the table as a bug."""
    import clipdata

    make_image(tmp_path / "src" / "café" / "a.jpg")
    make_image(tmp_path / "src" / "日本" / "b.jpg")
    clipdata.convert(tmp_path / "src", tmp_path / "out", format="folder")
    r = _clipdata(["inspect", str(tmp_path / "out")], env=dict(os.environ, PYTHONIOENCODING=encoding))
    assert r.returncode == 0 and _lines(r.stderr) == []
    assert b"\\u65e5\\u672c" in r.stdout and "café".encode(encoding, "backslashreplace") in r.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_closed_standard_descriptors_are_never_handed_to_an_output_file(tmp_path):
    """`clipdata convert ... <&- >&- 2>&-`: the run's first files took descriptors 0-2, so a C
    library's stderr (and a spawned worker's whole output) went into them. /dev/null holds
    them now; the layout is the same as a normal run's."""
    report = tmp_path / "report.txt"
    code = ("import os, sys\n"
            "from clipdata.cli.app import main\n"
            f"sys.argv = ['clipdata', 'convert', 'folder', {str(FOLDER)!r}, {str(tmp_path / 'out')!r}, '-q', '-j', '2']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            f"open({str(report)!r}, 'w').write(' '.join([str(code)] + [os.readlink(f'/proc/self/fd/{{fd}}') for fd in (0, 1, 2)]))\n")
    subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, timeout=120,
                   preexec_fn=lambda: [os.close(fd) for fd in (0, 1, 2)])
    assert report.read_text() == "0 /dev/null /dev/null /dev/null"
    _clipdata(["convert", "folder", str(FOLDER), str(tmp_path / "again"), "-q"])
    for f in (tmp_path / "again").rglob("*"):
        if f.is_file() and f.name != "clipdata.json":
            assert (tmp_path / "out" / f.relative_to(tmp_path / "again")).read_bytes() == f.read_bytes(), f


# --------------------------------------------------------------------------------- signals

def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@needs_shapes_model
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_working_says_interrupted_once_and_leaves_no_process(tmp_path, sig):
    """Sent to the whole process group, as a terminal's Ctrl-C is, once the command is inside
    its work (torch is loaded); the loader's worker processes end with it."""
    p = subprocess.Popen([sys.executable, "-m", "clipdata.cli", "embed", str(UNLABELED), "-o", str(tmp_path / "emb"),
                          "--model", M, "--no-cache", "-j", "2", "--batch-size", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env=dict(os.environ, CLIPDATA_CACHE=str(tmp_path / "cache")),
                         preexec_fn=None)
    deadline = time.monotonic() + 60
    while not _torch_loaded(p.pid) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and _lines(err) == ["interrupted"]
    time.sleep(1)
    left = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert left == []


def test_ctrl_c_while_the_commands_import_says_interrupted():
    """The first half second, before main() runs: no page of importlib frames."""
    code = ("import sys\n"
            "class Stop:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'clipdata.cli.convert': raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Stop())\n"
            "import clipdata.cli\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode in (-signal.SIGINT, 130) and _lines(r.stderr) == ["interrupted"]


def _interrupted_inside_a_library(*args, **kwargs):
    """What a Ctrl-C that lands while a library defines a class looks like (Python wraps it),
    after the model loader has turned it into its own error."""
    from clipdata.embedding.engine import ModelError

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'parameter_count'") from e
    except RuntimeError:
        raise ModelError("cannot load model: a library failed to import") from None


@pytest.mark.parametrize("raised", [KeyboardInterrupt, _interrupted_inside_a_library], ids=["plain", "wrapped"])
def test_an_interrupt_wrapped_by_a_library_is_still_an_interrupt(monkeypatch, capsys, raised):
    import clipdata.commands.inspect as api

    def stop(*args, **kwargs):
        if raised is KeyboardInterrupt:
            raise KeyboardInterrupt
        raised()

    monkeypatch.setattr(api, "inspect", stop)
    monkeypatch.setattr(sys.modules["clipdata.cli.app"], "_said_interrupted", False)  # once per process
    monkeypatch.setattr(sys, "argv", ["clipdata", "inspect", str(LAYOUT)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 130 and _lines(capsys.readouterr().err.encode()) == ["interrupted"]


# ------------------------------------------------------------------------------- arguments

ARGS = [
    # (args, exit code, fragments of the one error line)
    (["search", str(UNLABELED), "a" + XFF, "--model", M], 2, ["'QUERIES'", "'a\\xff' is not UTF-8"]),
    (["convert", "folder", str(FOLDER), "{out}", "--template", "a " + XFF + " {}"], 2, ["'--template'", "not UTF-8"]),
    (["convert", "folder", str(FOLDER), "{out}", "--rename", "brick wall=b" + XFF], 2, ["'--rename'", "not UTF-8"]),
    (["label", str(UNLABELED), "-o", "{out}", "--classes", "a" + XFF + ",b", "--model", M], 2, ["'--classes'"]),
    (["eval", str(LAYOUT), "--template", XFF + " {}", "--model", M], 2, ["'--template'", "not UTF-8"]),
    (["search", "", "a", "--model", M], 2, ["'IMAGES'", "an empty path"]),
    (["convert", "folder", str(FOLDER), ""], 2, ["'OUT'", "an empty path"]),
    (["convert", "folder", "", "{out}"], 2, ["'SOURCE'", "an empty path"]),
    (["inspect", ""], 2, ["'LAYOUT'", "an empty path"]),
    (["search", str(UNLABELED), "a", "--jsonl", "", "--model", M], 2, ["'--jsonl'", "an empty path"]),
    (["search", str(UNLABELED), "a", "--model", ""], 2, ["--model is empty"]),
    (["search", str(UNLABELED), "a", "--jsonl", "-", "--model", M], 2, ["'--jsonl'", "'-' is not standard output"]),
    (["convert", "folder", str(FOLDER), "-"], 2, ["'OUT'", "a file named '-'"]),
    (["review", "apply", "{out}-typo", "{out}"], 1, ["out-typo: not found"]),  # it named the parent
    (["search", str(UNLABELED), "a", "--model", M, "-j", "-1"], 2, ["--workers -1 must be 0"]),
    (["label", str(UNLABELED), "-o", "{out}", "--classes", "a,b", "--model", M, "-j", "-2"], 2, ["--workers -2"]),
    (["embed", str(UNLABELED), "-o", "{out}", "--model", M, "-j", "-1"], 2, ["--workers -1"]),
    (["search", str(UNLABELED), "a", "--model", M, "--num-actors", "0"], 2, ["--num-actors 0"]),
    (["unique", str(UNLABELED), "--model", M, "--top", "-1"], 2, ["--top -1 must be at least 1"]),
    (["audit", str(LAYOUT), "--model", M, "--top", "-1"], 2, ["--top -1 must be at least 1"]),
    (["check", str(LAYOUT), "--model", M, "--top", "0"], 2, ["--top 0 must be at least 1"]),
    (["check", str(LAYOUT), "--model", M, "--folds", "1"], 2, ["--folds 1 must be at least 2"]),
    (["audit", str(LAYOUT), "--model", M, "--folds", "0"], 2, ["--folds 0 must be at least 2"]),
    (["prompts", str(LAYOUT), "--model", M, "--folds", "-1", "--out", "{out}.yaml"], 2, ["--folds -1"]),
    (["label", str(UNLABELED), "-o", "{out}", "--train-from", str(LAYOUT / "train"), "--model", M, "--folds", "0"],
     2, ["--folds 0"]),
    (["check", str(LAYOUT), "--model", M, "--threshold", "near=nan"], 2, ["near='nan': not a finite number"]),
    (["check", str(LAYOUT), "--model", M, "--threshold", "near=inf"], 2, ["not a finite number"]),
    # the --image file is checked before minutes of embedding, not after
    (["search", str(UNLABELED), "--image", "{out}-gone.jpg", "--model", M], 1, ["out-gone.jpg: No such file"]),
    (["search", str(UNLABELED), "--image", str(UNLABELED), "--model", M], 2, ["not a regular file"]),
    # click's usage errors are one line too, not its usage block
    (["search", str(UNLABELED), "a", "--tpo", "3"], 2, ["No such option: --tpo", "see 'clipdata search --help'"]),
    (["convert", "folder", str(FOLDER)], 2, ["Missing argument 'OUT' — see 'clipdata convert --help'"]),
    (["search", str(UNLABELED), "a", "--top", "1.5"], 2, ["Invalid value for '--top'"]),
    # names are bytes: a non-UTF-8 path or --model folder is a path like any other
    (["search", "/nonexistent/ph" + XFF + "tos", "a", "--model", M], 1, ["ph\\xfftos: not a folder"]),
    (["search", str(UNLABELED), "a", "--model", "/nonexistent/m" + XFF], 1, ["m\\xff: no such folder"]),
]


@pytest.mark.parametrize("args, code, fragments", ARGS, ids=[f"{i}-{a[0]}" for i, (a, _, _) in enumerate(ARGS)])
def test_odd_arguments_are_one_line_naming_the_option(tmp_path, monkeypatch, capsys, args, code, fragments):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["clipdata", *[a.replace("{out}", str(out)) for a in args]])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err
    assert done.value.code == code, err
    said = _lines(err.encode("utf-8", "surrogateescape"))
    assert len(said) == 1 and said[0].startswith("error: ") and all(f in said[0] for f in fragments), err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # refused before anything was written


def test_non_utf8_bytes_from_a_real_shell_reach_the_check():
    """The same through argv bytes: a Latin-1 terminal's é in a query."""
    r = _clipdata(["search", os.fsencode(str(UNLABELED)), b"caf\xe9", "--model", M])
    assert r.returncode == 2 and "'caf\\xe9' is not UTF-8" in r.stderr.decode()


# ---------------------------------------------------------------------------------- models

@needs_shapes_model
def test_a_model_folder_without_its_tokenizer_refuses_text_and_still_embeds_images(tmp_path):
    """transformers 5 builds an empty tokenizer for such a folder: every query would embed the
    same and search would rank at random. Images need no tokenizer."""
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for f in SHAPES_MODEL.iterdir():
        if not f.name.startswith("tokenizer"):
            (folder / f.name).write_bytes(f.read_bytes())
    import clipdata
    from clipdata.embedding import EngineSpec
    from clipdata.errors import ClipdataError

    spec = EngineSpec(model=str(folder), dtype="float32", workers=0)
    make_image(tmp_path / "imgs" / "a.jpg")
    make_image(tmp_path / "imgs" / "b.jpg", color=(0, 0, 200))
    with pytest.raises(ClipdataError, match="no tokenizer vocabulary") as info:
        clipdata.search(tmp_path / "imgs", ["a red circle"], spec=spec, cache_dir=False)
    assert "\n" not in str(info.value)
    assert len(clipdata.duplicates(tmp_path / "imgs", spec=spec, cache_dir=False).groups) == 0


# ------------------------------------------------------------------------------ filesystems

def _unlistable(monkeypatch, *folders: Path) -> None:
    """Folders whose listing fails as without read permission (root reads everything, so the
    refusal is made here; `setpriv` dropping CAP_DAC_OVERRIDE shows the same on disk)."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) in folders:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_is_counted_never_skipped(tmp_path, monkeypatch):
    """`search/embed/duplicates` over a tree with a folder they cannot list name it among the
    unreadable (it was passed over in silence: its images simply did not exist)."""
    from clipdata.embedding import _not_files, scan_images
    from clipdata.errors import SourceError

    make_image(tmp_path / "imgs" / "a.jpg")
    make_image(tmp_path / "imgs" / "locked" / "b.jpg")
    _unlistable(monkeypatch, tmp_path / "imgs" / "locked")
    found = scan_images(tmp_path / "imgs")
    assert found == [tmp_path / "imgs" / "a.jpg", tmp_path / "imgs" / "locked"]
    why = _not_files([str(p) for p in found])
    assert list(why) == [str(tmp_path / "imgs" / "locked")] and "cannot be listed" in why[str(found[1])]
    _unlistable(monkeypatch, tmp_path / "imgs")
    with pytest.raises(SourceError, match="imgs: cannot be listed — check its permissions"):
        scan_images(tmp_path / "imgs")


def _as_a_user() -> list[str]:
    """A command prefix under which permissions apply: root reads everything, so root runs
    without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions do not apply")
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX permissions")
def test_unreadable_inputs_are_the_commands_to_say_exit_1(tmp_path):
    """typer refused an unreadable path as a usage error (exit 2, three lines, before the
    command could name the file); the command now says it: the file, and exit 1."""
    locked = tmp_path / "locked.json"
    locked.write_text("{}")
    (tmp_path / "locked").mkdir()
    make_image(tmp_path / "locked" / "a.jpg")
    locked.chmod(0)
    (tmp_path / "locked").chmod(0)
    try:
        for args, said in [(["convert", "coco", str(locked), str(tmp_path / "out")], "locked.json: Permission denied"),
                           (["embed", str(tmp_path / "locked"), "-o", str(tmp_path / "emb"), "--model", M],
                            "locked: cannot be listed — check its permissions")]:
            r = subprocess.run([*_as_a_user(), sys.executable, "-m", "clipdata.cli", *args], capture_output=True,
                               timeout=120)
            assert r.returncode == 1 and len(_lines(r.stderr)) == 1 and said in r.stderr.decode(), r.stderr
            assert not (tmp_path / "out").exists() and not (tmp_path / "emb").exists()
    finally:
        (tmp_path / "locked").chmod(0o755)


@pytest.mark.parametrize("kwargs, said", [
    ({"template": "a " + XFF + " {}"}, "template 'a \\xff {}' is not UTF-8"),
    ({"rename": ["brick wall=b" + XFF]}, "the new name is not UTF-8"),
], ids=["template", "rename"])
def test_the_api_refuses_non_utf8_caption_text_too(tmp_path, kwargs, said):
    """convert(template=...) wrote `\\xff` into every caption; a renamed class was dropped."""
    import clipdata
    from clipdata.errors import OptionError

    with pytest.raises(OptionError, match=re.escape(said)):
        clipdata.convert(FOLDER, tmp_path / "out", format="folder", **kwargs)
    assert not (tmp_path / "out").exists()
