"""`clipdata review serve` in a real browser: the system chromium, driven by Selenium, against
a server the test starts on 127.0.0.1, over images of the shapes world labeled by the tiny
shapes CLIP (samples/models/shapes-clip). Skips when chromium or its driver is missing."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import clipdata  # noqa: E402
from clipdata import review_serve  # noqa: E402  (the API twin)
from clipdata.embedding import EngineSpec  # noqa: E402
from clipdata.formats import decisions  # noqa: E402
from conftest import SAMPLES  # noqa: E402

CHROMIUM = os.environ.get("CLIPDATA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CLIPDATA_CHROMEDRIVER", "/usr/bin/chromedriver")
MODEL = SAMPLES / "models" / "shapes-clip"
sys.path.insert(0, str(SAMPLES))
import shapes_world as world  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                       reason=f"needs chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): "
                              "apt-get install -y chromium chromium-driver"),
    pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason="the shapes model is not built"),
]
# NATO code words: class names that tell CLIP nothing about colour or shape
CODES = ["alfa", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
         "kilo", "lima", "mike", "november", "oscar", "papa"]
WAIT = 60  # seconds any one page condition may take on a loaded 2-core machine


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,800", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_window_size(1280, 800)
    yield d
    d.quit()


def _label(root: Path, n: int, seed: int, classes: list[str]) -> tuple[Path, dict[str, str]]:
    truth = world.write_unlabeled(root / "images", n, seed=seed)
    spec = EngineSpec(model=str(MODEL), dtype="float32", workers=0, batch_size=64)
    clipdata.label(root / "images", root / "labeled", classes=classes, spec=spec)
    return root / "labeled", truth


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """96 fresh images labeled with the 16 class names; tests copy the label folder."""
    return _label(tmp_path_factory.mktemp("shapes"), 96, 1002, world.classes())


@pytest.fixture
def labeled(shapes, tmp_path):
    folder, truth = shapes
    shutil.copytree(folder, tmp_path / "labeled")
    return tmp_path / "labeled", truth


@pytest.fixture
def server(labeled):
    srv = review_serve(labeled[0])
    yield srv
    srv.stop()


def open_page(driver, url: str) -> float:
    """Load the page; seconds until its first screen is drawn."""
    t0 = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    return time.perf_counter() - t0


def idle(driver) -> None:
    """Every request the page made has been answered (saves included)."""
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(
        "return document.body.dataset.pending === '0' && !document.querySelector('#saved.error')"))
    time.sleep(0.05)
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.body.dataset.pending === '0'"))


def grid(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#grid .card')].map(c => "
        "({path: c.dataset.path, state: c.dataset.state, review: c.dataset.review}))")


def press(driver, *keys) -> None:
    body = driver.find_element(By.TAG_NAME, "body")
    for k in keys:
        body.send_keys(k)


def type_class(driver, name: str) -> None:
    """Pick a class the keyboard way: type part of it, then its number in the filtered list."""
    colour = name.split()[0]
    shown = [c for c in world.classes() if colour in c]
    press(driver, colour, str(shown.index(name) + 1))


def suggestions(srv) -> dict[str, str]:
    items = httpx.get(f"http://127.0.0.1:{srv.port}/api/items", headers={"x-clipdata-token": srv.token},
                      timeout=30).json()["items"]
    return {it["path"]: it["top_k"][0]["class"] for it in items}


def test_keyboard_review_of_20_images(driver, server, labeled):
    folder, truth = labeled
    open_page(driver, server.url)
    order = [c["path"] for c in grid(driver)]
    suggested = suggestions(server)
    for i, path in enumerate(order[:20]):
        if suggested[path] == truth[path] and i % 2 == 0:
            press(driver, Keys.ENTER)  # accept the pre-label
        elif i % 3 == 0:
            press(driver, truth[path], Keys.ENTER)  # type the whole name; Enter picks the first match
        else:
            type_class(driver, truth[path])
    idle(driver)
    assert decisions.read(folder) == {p: truth[p] for p in order[:20]}
    shown = grid(driver)
    assert [c["state"] for c in shown[:20]] == ["reviewed"] * 20
    assert [c["review"] for c in shown[:20]] == [truth[p] for p in order[:20]]
    assert driver.find_element(By.ID, "progress").text.startswith("20 reviewed")
    assert "Enter" in driver.find_element(By.ID, "keys").text  # the shortcuts are on the page


def test_shift_select_and_undo(driver, server, labeled):
    folder, truth = labeled
    open_page(driver, server.url)
    order = [c["path"] for c in grid(driver)]
    press(driver, Keys.SHIFT + Keys.ARROW_RIGHT, Keys.SHIFT + Keys.ARROW_RIGHT, "0")  # three rejected at once
    type_class(driver, truth[order[3]])  # the cursor moved on to the fourth
    idle(driver)
    assert decisions.read(folder) == {**{p: decisions.REJECTED for p in order[:3]}, order[3]: truth[order[3]]}
    press(driver, "u")
    idle(driver)
    assert decisions.read(folder)[order[3]] is None
    assert decisions.read(folder)[order[0]] == decisions.REJECTED
    press(driver, "u")
    idle(driver)
    assert decisions.read(folder) == {p: None for p in order[:4]}
    assert [c["state"] for c in grid(driver)[:4]] == [s for s in _states(server, order[:4])]
    assert all(c["review"] == "" for c in grid(driver)[:4])
    rows = [json.loads(l) for l in (folder / decisions.FILE).read_text().splitlines()]
    assert len(rows) == 8 and [r.get("undo", False) for r in rows] == [False] * 4 + [True] * 4


def test_two_tabs_on_one_folder(driver, labeled):
    """Two servers on one folder, one tab each: neither corrupts the file; a tab shows the
    other's decisions when it loads the items again (coming back into view, or as here, a
    filter change)."""
    from selenium.webdriver.support.ui import Select

    folder, truth = labeled
    with review_serve(folder) as one, review_serve(folder) as two:
        open_page(driver, one.url)
        first = driver.current_window_handle
        order = [c["path"] for c in grid(driver)]
        driver.switch_to.new_window("tab")
        second = driver.current_window_handle
        open_page(driver, two.url)
        type_class(driver, truth[order[0]])
        idle(driver)
        driver.switch_to.window(first)
        Select(driver.find_element(By.ID, "f-state")).select_by_value("reviewed")
        idle(driver)
        assert [(c["path"], c["review"]) for c in grid(driver)] == [(order[0], truth[order[0]])]
        press(driver, "0")  # a later decision in this tab wins
        idle(driver)
        driver.switch_to.window(second)
        driver.close()
        driver.switch_to.window(first)
    rows = [json.loads(l) for l in (folder / decisions.FILE).read_text().splitlines()]
    assert [(r["class"], r["previous"]) for r in rows] == [(truth[order[0]], None),
                                                          (decisions.REJECTED, truth[order[0]])]


def _states(srv, paths: list[str]) -> list[str]:
    items = httpx.get(f"http://127.0.0.1:{srv.port}/api/items", headers={"x-clipdata-token": srv.token},
                      timeout=30).json()["items"]
    by = {it["path"]: it["state"] for it in items}
    return [by[p] for p in paths]


def _start_cli(folder: Path) -> tuple[subprocess.Popen, str]:
    """`clipdata review serve` in its own process; returns it and the URL it printed."""
    code = "import clipdata.cli.serve; from clipdata.cli import app; app()"
    proc = subprocess.Popen([sys.executable, "-c", code, "review", "serve", str(folder), "--port", "0",
                             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    deadline, seen = time.monotonic() + WAIT, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith("review at "):
                return proc, line.split()[-1]
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the server printed no URL: " + "".join(seen))


def test_kill_9_mid_review_then_restart_keeps_state_and_apply_uses_it(driver, labeled, tmp_path):
    folder, truth = labeled
    proc, url = _start_cli(folder)
    try:
        open_page(driver, url)
        order = [c["path"] for c in grid(driver)]
        for path in order[:5]:
            type_class(driver, truth[path])
        idle(driver)  # the page says saved: the rows are on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    proc, url = _start_cli(folder)
    try:
        open_page(driver, url)
        shown = {c["path"]: c for c in grid(driver)}
        assert [shown[p]["review"] for p in order[:5]] == [truth[p] for p in order[:5]]
        press(driver, *[Keys.ARROW_RIGHT] * 5)
        for path in order[5:10]:
            type_class(driver, truth[path])
        # two wrong on purpose, and one left out
        press(driver, "red", "1", "blue", "2", "0")
        idle(driver)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    wanted = {p: truth[p] for p in order[:10]}
    wanted.update({order[10]: "red circle", order[11]: "blue square"})
    assert {p: c for p, c in decisions.read(folder).items() if c != decisions.REJECTED} == wanted
    result = clipdata.review_apply(folder, tmp_path / "layout")
    manifest = [json.loads(l) for l in (tmp_path / "layout" / "manifest.jsonl").read_text().splitlines()]
    applied = {m["source_image"]: m["class"] for m in manifest}
    assert {p: applied[p] for p in wanted} == wanted  # the reviewed classes win over the review tree
    assert order[12] not in applied  # rejected: left out
    assert result.layout.skipped_by_reason.get("rejected") == 1


def test_search_and_more_like_this_put_the_right_images_first(driver, server, labeled):
    _, truth = labeled
    open_page(driver, server.url)
    box = driver.find_element(By.ID, "search")
    box.send_keys("a green triangle", Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "sorted-by").is_displayed())
    idle(driver)
    top = [truth[c["path"]] for c in grid(driver)[:4]]
    assert top == ["green triangle"] * 4
    star = next(c["path"] for c in grid(driver) if truth[c["path"]] == "blue star")
    driver.find_element(By.CSS_SELECTOR, f'.card[data-path="{star}"] .like').click()
    WebDriverWait(driver, WAIT).until(lambda d: grid(d)[0]["path"] == star)
    idle(driver)
    assert [truth[c["path"]] for c in grid(driver)[:3]] == ["blue star"] * 3
    assert "like " + star in driver.find_element(By.ID, "sorted-by").text


def test_relabel_the_rest_raises_accuracy_with_code_names(driver, tmp_path):
    folder, truth = _label(tmp_path, 160, 3001, CODES)
    code = dict(zip(world.classes(), CODES))
    with review_serve(folder) as srv:
        base, head = f"http://127.0.0.1:{srv.port}", {"x-clipdata-token": srv.token}
        items = httpx.get(base + "/api/items", headers=head, timeout=30).json()["items"]
        reviewed, per = [], {}
        for it in sorted(items, key=lambda it: it["path"]):  # three of each class, as a person would
            cls = code[truth[it["path"]]]
            if per.get(cls, 0) < 3:
                per[cls] = per.get(cls, 0) + 1
                reviewed.append({"path": it["path"], "class": cls})
        assert httpx.post(base + "/api/decisions", json=reviewed, headers=head, timeout=30).status_code == 200
        done = {r["path"] for r in reviewed}

        def accuracy() -> float:
            rest = [it for it in httpx.get(base + "/api/items", headers=head, timeout=30).json()["items"]
                    if it["path"] not in done]
            return sum(it["top_k"][0]["class"] == code[truth[it["path"]]] for it in rest) / len(rest)

        before = accuracy()
        open_page(driver, srv.url)
        driver.find_element(By.ID, "relabel").click()
        WebDriverWait(driver, WAIT).until(
            lambda d: "accuracy" in d.find_element(By.ID, "relabel-result").text)
        idle(driver)
        after = accuracy()
        text = driver.find_element(By.ID, "relabel-result").text
    assert before < 0.3 and after >= 0.8, (before, after)
    assert f"on {len(reviewed)} reviewed" in text and "suggestions changed" in text
    # the queue is re-ordered: the unreviewed come first
    assert all(c["path"] not in done for c in grid(driver)[:160 - len(done)])


def test_grid_of_500_is_readable_and_loads_thumbnails_lazily(driver, tmp_path):
    folder, _ = _label(tmp_path, 500, 4001, world.classes())
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the page itself 1280 x 800
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    with review_serve(folder) as srv:
        seconds = open_page(driver, srv.url)
        WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(
            "const i = document.querySelector('#grid img'); return i.complete && i.naturalWidth > 0"))
        time.sleep(1.0)
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('#grid img')].filter(i => i.complete && i.naturalWidth > 0).length")
        sources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        shot = Path(os.environ.get("CLIPDATA_SCREENSHOTS", tmp_path)) / "review-grid-500.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        print(f"first screen of 500 images in {seconds:.2f} s; {loaded} thumbnails loaded; {shot}")
    drawn = len(grid(driver))
    cols = driver.execute_script("return getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length")
    rows = drawn // cols + 2
    press(driver, *[Keys.ARROW_DOWN] * rows)  # the keyboard moves past what is drawn: more is drawn
    assert driver.execute_script("return document.querySelector('.card.cursor').dataset.pos") == str(rows * cols)
    for _ in range(40):  # scrolling draws the rest
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        time.sleep(0.1)
        if len(grid(driver)) == 500:
            break
    assert drawn < 500 and len(grid(driver)) == 500
    assert 0 < loaded < 250  # lazily: only those on or near the screen
    assert sources and all(s.startswith(f"http://127.0.0.1:{srv.port}/") for s in sources)  # nothing from the web
    assert driver.execute_script("return [innerWidth, innerHeight]") == [1280, 800]
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
