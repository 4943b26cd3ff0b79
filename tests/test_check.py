"""clipdata check on the shapes world: every planted problem is found (copies of test images
in train, bad images, flipped labels, a thin class), the clean layout's findings are few and
counted, the gate exits as documented, the pixel measures come from the embedding's own
decode, and bad input stops in one line."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

from clipdata.cli import app  # noqa: E402
from clipdata.commands.check import check  # noqa: E402
from clipdata.errors import LayoutError, OptionError, OutputError, SourceError  # noqa: E402
from helpers import SHAPES_MODEL as MODEL, needs_shapes_model, shapes_spec, tree_bytes, world  # noqa: E402

pytestmark = needs_shapes_model
spec = pytest.fixture(scope="module", name="spec")(shapes_spec)
SEED = 4101


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


# what is planted -> how the copy of a test image is made
COPIES = {
    "exact": None,  # the file itself
    "q70": lambda im: _jpeg(im, 70),
    "half": lambda im: im.resize((im.width // 2, im.height // 2)),
    "flip": ImageOps.mirror,
    "crop90": lambda im: im.crop((round(im.width * .05), round(im.height * .05), round(im.width * .95), round(im.height * .95))),
}


def _plant(root: Path) -> dict:
    """Plant every problem the issue names into a fresh shapes layout; return what was planted."""
    planted: dict = {"copies": {}, "quality": {}, "flips": [], "thin": "yellow star"}
    tests = sorted(root.glob("test/*/*.jpg"))
    for n, (name, make) in enumerate(COPIES.items()):
        src = tests[n * 7]
        dst = root / "train" / src.parent.name / f"copy_{name}_{src.stem}.jpg"
        if make is None:
            shutil.copyfile(src, dst)
        else:
            make(Image.open(src).convert("RGB")).save(dst, quality=90)
        planted["copies"][name] = (src.relative_to(root).as_posix(), dst.relative_to(root).as_posix())
    trains = sorted(root.glob("train/*/*_00[0-3].jpg"))
    for kind, n in (("dark", 3), ("blurry", 11), ("constant", 19)):
        src = trains[n]
        img = Image.open(src).convert("RGB")
        if kind == "dark":
            img = img.point(lambda v: int(v * 0.15))
        elif kind == "blurry":
            img = img.filter(ImageFilter.GaussianBlur(4))
        else:
            img = Image.new("RGB", img.size, (120, 120, 120))
        dst = src.with_name(f"{kind}_{src.name}")
        img.save(dst, quality=90)
        planted["quality"][kind] = dst.relative_to(root).as_posix()
    for src, other in ((trains[27], "green circle"), (trains[45], "red square")):
        if src.parent.name == other:
            other = "blue circle"
        dst = root / "train" / other / f"flip_{src.name}"
        src.rename(dst)
        planted["flips"].append(dst.relative_to(root).as_posix())
    for p in sorted(root.glob("*/yellow star/*.jpg"))[2:]:  # two left (in test)
        p.unlink()
    (root / "broken.jpg").write_bytes(b"")  # not in a class folder: not an image of the layout
    bad = root / "train" / "red circle" / "truncated.jpg"
    bad.write_bytes(tests[0].read_bytes()[:200])
    planted["undecodable"] = bad.relative_to(root).as_posix()
    return planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory, spec):
    root = tmp_path_factory.mktemp("check") / "layout"
    world.write_layout(root, {"train": 4, "valid": 2, "test": 3}, seed=SEED)
    what = _plant(root)
    before = tree_bytes(root)
    out = root.parent
    r = check(root, spec=spec, cache_dir=out / "cache", json_path=out / "r.json", html_path=out / "r.html")
    assert tree_bytes(root) == before  # check never changes the layout
    return root, what, r


@pytest.fixture(scope="module")
def clean(tmp_path_factory, spec):
    root = tmp_path_factory.mktemp("clean") / "layout"
    world.write_layout(root, {"train": 4, "valid": 2, "test": 3}, seed=SEED)
    return root, check(root, spec=spec, cache_dir=root.parent / "cache")


def _of(r, kind: str, type_: str | None = None) -> list[dict]:
    return [f for f in r.findings if f["kind"] == kind and (type_ is None or f["type"] == type_)]


def test_every_planted_copy_is_found_as_leakage(planted):
    root, what, r = planted
    leaks = _of(r, "leakage")
    for name, (test_img, copy) in what["copies"].items():
        hit = [f for f in leaks if test_img in f["paths"] and copy in f["paths"]]
        assert hit, f"{name} copy not found: {test_img} / {copy}"
        assert hit[0]["drop"] == [test_img]  # keep train's, drop the test copy
        assert hit[0]["type"] == ("exact" if name == "exact" else "near")
        assert set(hit[0]["splits"]) == {"test", "train"}


def test_every_planted_bad_image_is_found(planted):
    root, what, r = planted
    quality = {(f["type"], f["paths"][0]) for f in _of(r, "quality")}
    assert ("dark", what["quality"]["dark"]) in quality
    assert ("blurry", what["quality"]["blurry"]) in quality
    assert ("low_information", what["quality"]["constant"]) in quality
    assert ("undecodable", what["undecodable"]) in quality


def test_flipped_labels_and_the_thin_class_are_found(planted):
    root, what, r = planted
    suspects = {f["paths"][0] for f in _of(r, "label")}
    assert set(what["flips"]) <= suspects
    thin = [f for f in _of(r, "balance") if f["classes"] == [what["thin"]]]
    assert {f["type"] for f in thin} == {"too_few", "missing"}


def test_the_clean_layout_has_few_findings(clean):
    root, r = clean
    by = r.by_kind
    assert by["leakage"] == 0 and by["duplicates"] == 0 and by["balance"] == 0
    assert by["quality"] == 0
    assert by["label"] <= 0.05 * r.images
    assert by["outlier"] <= 0.05 * r.images


def test_the_json_holds_every_finding_with_a_stable_id(planted, clean):
    root, _, r = planted
    data = json.loads((root.parent / "r.json").read_text())
    assert data["summary"] == r.by_kind and len(data["findings"]) == len(r.findings)
    assert len({f["id"] for f in data["findings"]}) == len(data["findings"])
    assert data["measured"]["pass"] == "in the embedding decode"
    assert r.measured["in_embedding_pass"] + r.measured["separate_pass"] == r.images  # the API's, not the JSON's
    assert data["gate"] == {"fail_on": [], "baseline": None, "failing": [], "failed": False}


def test_pixel_measures_are_taken_in_the_embedding_decode(spec, tmp_path):
    """One decode per image: a cold cache measures every image inside the embedding pass; a
    warm one (no embedding needed) decodes each image once for its measures, with equal values."""
    root = tmp_path / "layout"
    world.write_layout(root, {"train": 2, "test": 1}, seed=7)
    cold = check(root, kinds="quality,duplicates", spec=spec, cache_dir=tmp_path / "cache")
    warm = check(root, kinds="quality,duplicates", spec=spec, cache_dir=tmp_path / "cache")
    assert cold.measured["in_embedding_pass"] == cold.images == 48 and cold.measured["separate_pass"] == 0
    assert warm.measured["in_embedding_pass"] == 0 and warm.measured["separate_pass"] == 48
    assert cold.findings == warm.findings


def _cli(*args):
    return CliRunner().invoke(app, ["check", *map(str, args), "--model", str(MODEL), "--dtype", "float32",
                                    "--workers", "0", "--batch-size", "64"])


def test_the_gate(planted, tmp_path):
    root, _, r = planted
    cache = ["--cache-dir", root.parent / "cache"]
    report = root.parent / "r.json"
    assert _cli(root, *cache, "--kinds", "balance").exit_code == 0  # a report: exits 0 whatever it finds
    res = _cli(root, *cache, "--kinds", "balance", "--fail-on", "balance")
    assert res.exit_code == 1 and "gate failed" in res.output
    assert _cli(root, *cache, "--kinds", "balance", "--fail-on", "leakage").exit_code == 0
    res = _cli(root, *cache, "--kinds", "balance", "--fail-on", "balance", "--baseline", report)
    assert res.exit_code == 0 and "gate passed" in res.output  # every balance finding is in the baseline
    old = json.loads(report.read_text())
    old["findings"] = [f for f in old["findings"] if f["type"] != "missing"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    res = _cli(root, *cache, "--kinds", "balance", "--fail-on", "balance", "--baseline", tmp_path / "old.json",
               "--json", tmp_path / "new.json")
    assert res.exit_code == 1
    new = json.loads((tmp_path / "new.json").read_text())
    assert sorted(new["gate"]["failing"]) == sorted(f["id"] for f in new["findings"] if f["type"] == "missing")


def _misaligned(root: Path) -> None:
    tok = root / "train" / "_tokenization.txt"
    tok.write_text("\n".join(tok.read_text().splitlines()[:-1]))


def _one_class(root: Path) -> None:
    for p in sorted((root / "test").iterdir()):
        if p.is_dir() and p.name != "red circle":
            shutil.rmtree(p)
    (root / "test" / "_tokenization.txt").write_text("a photo of a red circle")


def _one_image(root: Path) -> None:
    keep = sorted(root.glob("*/*/*.jpg"))[0]
    for p in sorted(root.glob("*/*/*.jpg"))[1:]:
        p.unlink()
    assert keep.exists()


@pytest.mark.parametrize("mend, kwargs, error, words", [
    (_misaligned, {}, LayoutError, "caption line(s) for 16 class folder(s)"),
    (None, {"fail_on": "leak"}, OptionError, "--fail-on 'leak' is not a kind"),
    (None, {"thresholds": ["nearr=0.9"]}, OptionError, "--threshold 'nearr' is not a threshold"),
    (None, {"thresholds": ["near=x"]}, OptionError, "not a number"),
    (None, {"baseline": "nope.json", "fail_on": "leakage"}, OptionError, "--baseline: no such file"),
    (None, {"json_path": "inside"}, OutputError, "inside the layout"),
])
def test_bad_input_stops_in_one_line(spec, tmp_path, mend, kwargs, error, words):
    root = tmp_path / "layout"
    world.write_layout(root, {"train": 1, "test": 1}, seed=5)
    if mend:
        mend(root)
    if kwargs.get("json_path") == "inside":
        kwargs = {**kwargs, "json_path": root / "r.json"}
    with pytest.raises(error) as e:
        check(root, spec=spec, cache_dir=tmp_path / "cache", **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mend, expect", [
    (_one_class, "missing"),   # a split with one class: the others are reported missing there
    (_one_image, "too_few"),   # a layout of one image: a report, not a crash
])
def test_odd_layouts_give_a_report(spec, tmp_path, mend, expect):
    root = tmp_path / "layout"
    world.write_layout(root, {"train": 1, "test": 1}, seed=5)
    mend(root)
    r = check(root, spec=spec, cache_dir=tmp_path / "cache")
    assert expect in {f["type"] for f in _of(r, "balance")}


def test_embeddings_from_another_model_are_refused(spec, tiny, tmp_path):
    import clipdata
    from clipdata.embedding import EngineSpec

    root = tmp_path / "layout"
    world.write_layout(root, {"train": 1, "test": 1}, seed=5)
    clipdata.embed(root, tmp_path / "emb", spec=EngineSpec(model=str(tiny), dtype="float32", workers=0),
                   cache_dir=tmp_path / "cache")
    with pytest.raises(OptionError) as e:
        check(root, spec=spec, embeddings=tmp_path / "emb", cache_dir=tmp_path / "cache")
    assert "not the model these embeddings were made with" in str(e.value)
    r = check(root, spec=spec, embeddings=tmp_path / "emb", kinds="balance,duplicates")  # no model needed
    assert r.images == 32


def test_embeddings_of_another_folder_are_refused(spec, tmp_path):
    import clipdata

    root = tmp_path / "layout"
    world.write_layout(root, {"train": 1, "test": 1}, seed=5)
    other = tmp_path / "other"
    world.write_unlabeled(other, 4, seed=1)
    clipdata.embed(other, tmp_path / "emb", spec=spec, cache_dir=tmp_path / "cache")
    with pytest.raises(SourceError) as e:
        check(root, spec=spec, embeddings=tmp_path / "emb", kinds="balance")
    assert "none of the layout's 32 images is in this embeddings folder" in str(e.value)


def test_copies_are_found_from_an_embeddings_folder(spec, tmp_path):
    """From an embeddings folder (no image decoded but candidates): a test image copied byte
    for byte into train, and again into test, is one exact leakage group; the page shows the
    copies' thumbnails, read from the layout."""
    import clipdata

    root = tmp_path / "layout"
    world.write_layout(root, {"train": 1, "test": 1}, seed=5)
    src = sorted(root.glob("test/*/*.jpg"))[3]
    for dst in (root / "train" / src.parent.name / "copy.jpg", src.with_name("copy2.jpg")):
        shutil.copyfile(src, dst)
    clipdata.embed(root, tmp_path / "emb", spec=spec, cache_dir=tmp_path / "cache")
    r = check(root, spec=spec, embeddings=tmp_path / "emb", kinds="leakage", html_path=tmp_path / "r.html",
              cache_dir=tmp_path / "cache")
    rel = src.relative_to(root).as_posix()
    assert [(f["type"], sorted(f["paths"])) for f in r.findings] == [
        ("exact", sorted([rel, rel.rsplit("/", 1)[0] + "/copy2.jpg", f"train/{src.parent.name}/copy.jpg"]))]
    page = (tmp_path / "r.html").read_text()
    assert page.count('<img src="data:image/jpeg') >= 3 and "undecodable" not in page


def test_rows_without_pixels_get_no_signature():
    """From an embeddings folder almost no row is decoded: the pixel signatures (768 floats
    and their mirror per row) are made for the decoded rows only, not as zero rows for every
    image (6 GB at 1,000,000 images, over check's 4 GB budget)."""
    from clipdata import quality
    from clipdata.commands.check import _signature_bank

    img = Image.new("RGB", (40, 30), (10, 200, 30))
    img.paste((250, 20, 20), (0, 0, 20, 15))
    measured = [None] * 1_000_000
    measured[7] = measured[999_999] = quality.measure(img, (30, 40))
    live, sig, flip = _signature_bank(measured)
    assert live.tolist() == [7, 999_999] and sig.shape == flip.shape == (2, quality.SIG)
    assert abs(float(sig[0] @ sig[1]) - 1) < 1e-5
    live, sig, flip = _signature_bank([None] * 3)  # none decoded
    assert len(live) == 0 and sig.shape == flip.shape == (0, quality.SIG)


def test_the_summary_puts_the_kinds_with_findings_first(tmp_path):
    """'What to fix first' lists the kinds that have findings (in the page's order of
    urgency) before the kinds that have none: a clean kind is nothing to fix first."""
    import re

    from clipdata.checkpage import write_page
    from clipdata.commands.check import KINDS, THRESHOLDS, CheckReport, _finding

    findings = [_finding("outlier", "far", ["train/a/1.jpg"], "far"), _finding("balance", "too_few", [], "thin", classes=["b"]),
                _finding("leakage", "exact", ["train/a/1.jpg", "test/a/1.jpg"], "copy", pixel_similarity=1.0, clip_cosine=1.0)]
    report = CheckReport(tmp_path, ["train", "test"], ["a", "b"], ["a", "b"], {"train": {"a": 1}, "test": {"a": 1}}, 2,
                         list(KINDS), findings, dict(THRESHOLDS))
    write_page(tmp_path / "r.html", report, [], [])
    summary = (tmp_path / "r.html").read_text().split('class="summary"')[1].split("</ol>")[0]
    listed = re.findall(r"<b>(\d+)</b> (\w+)</a>", summary)
    assert [k for _, k in listed] == ["leakage", "balance", "outlier", "quality", "label", "duplicates", "captions"]
    assert [int(n) for n, _ in listed] == [1, 1, 1, 0, 0, 0, 0]


CHROMIUM = Path(os.environ.get("CLIPDATA_CHROMIUM", "/usr/bin/chromium"))  # as tests/test_serve_browser.py
CHROMEDRIVER = Path(os.environ.get("CLIPDATA_CHROMEDRIVER", "/usr/bin/chromedriver"))


@pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                    reason=f"needs chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): "
                           "apt-get install -y chromium chromium-driver (README, Quick start)")
def test_the_page_in_a_browser(planted, tmp_path):
    """Opened from disk in headless Chromium at 1280x800: no request leaves the page; the
    first screen holds the summary, the heatmap and the map; a flagged point shows its
    thumbnail on hover; a leaking pair is shown side by side."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    root, what, r = planted
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'ud'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1,
                                                                 "mobile": False})
        page = root.parent / "r.html"
        d.get_log("performance")  # what the browser did before the page (its new tab page) is not the page's
        d.get(page.as_uri())
        d.save_screenshot(str(root.parent / "report-1280x800.png"))
        requests = [json.loads(e["message"])["message"] for e in d.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), [u for u in urls if not u.startswith(("file:", "data:"))]
        box = d.execute_script("""return ['.summary', 'img[alt="confusion matrix"]', '.map > img'].map(s => {
            const e = document.querySelector(s), b = e.getBoundingClientRect();
            return [b.top, b.bottom, b.left, b.right, e.naturalWidth === undefined ? 1 : e.naturalWidth]; })""")
        for top, bottom, left, right, natural in box:
            assert 0 <= top < bottom <= 800 and 0 <= left < right <= 1280 and natural > 0
        assert "leakage" in d.find_element(By.CSS_SELECTOR, ".summary").text
        mark = d.find_elements(By.CSS_SELECTOR, ".mark")[0]
        tip = mark.find_element(By.CSS_SELECTOR, ".tip")
        assert not tip.is_displayed()
        ActionChains(d).move_to_element(mark).perform()
        assert tip.is_displayed() and tip.find_element(By.TAG_NAME, "img").get_attribute("naturalWidth") != "0"
        test_img, copy = what["copies"]["half"]
        pair = d.execute_script("""return [...document.querySelectorAll('#kind-leakage .finding')].map(
            f => [...f.querySelectorAll('figcaption')].map(c => c.firstChild.textContent))""")
        assert [copy, test_img] in pair
    finally:
        d.quit()


def test_quality_agrees_with_cleanvision_where_the_rules_are_the_same(tmp_path):
    """cleanvision as the reference on real photos and planted variants: dark, light, low
    information and odd aspect ratio agree image for image (same rules); blurry finds every
    plainly blurred photo, where cleanvision's histogram term misses some; grayscale finds
    grey pictures stored as RGB, which cleanvision (reading the file's mode) does not."""
    cleanvision = pytest.importorskip("cleanvision")
    from clipdata import quality

    photos = [Image.open(p).convert("RGB") for p in sorted(Path(MODEL).parents[1].glob("coco/images/*.jpg"))]
    items = [(im, None) for im in photos]
    for im in photos:
        items += [(im.point(lambda v: int(v * 0.15)), "dark"),
                  (Image.blend(im, Image.new("RGB", im.size, (255, 255, 255)), 0.95), "light"),
                  (im.filter(ImageFilter.GaussianBlur(0.03 * max(im.size))), "blurry"),
                  (im.convert("L").convert("RGB"), "grayscale")]
    items += [(Image.new("RGB", (200, 200), (90, 120, 90)), "low_information"),
              (photos[0].crop((0, 0, photos[0].width, photos[0].width // 4)), "odd_aspect_ratio"),
              (photos[1].convert("L"), "grayscale")]
    files = []
    for k, (im, _) in enumerate(items):
        files.append(tmp_path / f"{k:02d}.png")
        im.save(files[-1])
    lab = cleanvision.Imagelab(filepaths=[str(p) for p in files], verbose=False)
    types = ["dark", "light", "blurry", "low_information", "grayscale", "odd_aspect_ratio"]
    lab.find_issues({t: {} for t in types}, n_jobs=1, verbose=False)
    values = np.stack([quality.measure(Image.open(p), Image.open(p).size[::-1]).values for p in files])
    ours = [{t for t, _ in found} for found in quality.quality_issues(values)]
    theirs = {t: set(np.flatnonzero(lab.issues[f"is_{t}_issue"].to_numpy())) for t in types}
    # measured on at most 256 px a side (cleanvision: every pixel), so an image within a hair
    # of a threshold may fall on the other side; nothing further from it differs
    margin = {"dark": ("bright_p99", quality.DARK, 0.02), "light": ("bright_p5", quality.LIGHT, 0.02),
              "low_information": ("entropy", quality.LOW_INFO, 0.1), "odd_aspect_ratio": (None, 0, 0)}
    for t, (field, cut, tol) in margin.items():
        differ = {i for i, f in enumerate(ours) if t in f} ^ theirs[t]
        assert all(field and abs(values[i, quality.FIELDS.index(field)] - cut) < tol for i in differ), (t, differ)
        assert len(differ) <= 1, t
    for t in ("blurry", "grayscale"):
        planted_ = {i for i, (_, p) in enumerate(items) if p == t}
        assert planted_ <= {i for i, f in enumerate(ours) if t in f}, t
        assert theirs[t] <= {i for i, f in enumerate(ours) if t in f}, t  # ours is a superset here
    assert len(theirs["blurry"]) < len([p for _, p in items if p == "blurry"])  # what cleanvision misses
