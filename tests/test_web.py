"""The web page end to end in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium):
pick the bundled example, draw two boxes, write a question with <mask> references, ask, and check that the
page shows the answer the API gives for the same request, with overlays coloured like visualize.py."""
from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smolrgpt.data.sample import Region
from smolrgpt.serving.api import create_app
from smolrgpt.visualize import draw_regions

from serving_support import BackgroundServer, http_client, load_engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="the web page test needs Debian's Chromium at /usr/bin/chromium: apt-get install -y chromium chromium-driver")

HTTP = http_client()
QUESTION = "How far is the pallet <mask> from the pallet <mask>?"


@pytest.fixture(scope="module")
def server():
    app = create_app(load_engine(max_new_tokens=12), max_batch=4, batch_wait_ms=5, model_name="lively-tiny")
    with BackgroundServer(app) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must never try to download a driver or browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMEDRIVER.exists(), "Chromium is installed but not its driver: apt-get install -y chromium-driver"
    profile = tempfile.mkdtemp(prefix="smolrgpt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1400,900", "--force-device-scale-factor=1",
                "--no-proxy-server"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 60.0):
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.time() + timeout
    while True:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {script}; page error: "
                                 f"{driver.execute_script('return document.getElementById(`error`).textContent')!r}")
        time.sleep(0.05)


def canvas_offset(driver, x: float, y: float) -> tuple[int, int]:
    """Offset from the canvas centre (what Selenium's pointer actions use) of image pixel (x, y)."""
    rect = driver.execute_script("const r = document.getElementById('canvas').getBoundingClientRect();"
                                 "return [r.width, r.height];")
    scale = rect[0] / driver.execute_script("return window.smolrgpt.width")
    return round(x * scale - rect[0] / 2), round(y * scale - rect[1] / 2)


def drag(driver, canvas, x0, y0, x1, y1):
    from selenium.webdriver.common.action_chains import ActionChains

    ax, ay = canvas_offset(driver, x0, y0)
    bx, by = canvas_offset(driver, x1, y1)
    (ActionChains(driver).move_to_element_with_offset(canvas, ax, ay).click_and_hold()
     .move_by_offset((bx - ax) // 2, (by - ay) // 2).move_by_offset(bx - ax - (bx - ax) // 2, by - ay - (by - ay) // 2)
     .release().perform())


def click_at(driver, canvas, x, y):
    from selenium.webdriver.common.action_chains import ActionChains

    ax, ay = canvas_offset(driver, x, y)
    ActionChains(driver).move_to_element_with_offset(canvas, ax, ay).click().perform()


def screenshot(driver, folder: Path, name: str) -> None:
    """Saved next to the test's files, and copied to $SMOLRGPT_SCREENSHOT_DIR when set (to look at)."""
    driver.save_screenshot(str(folder / name))
    if os.environ.get("SMOLRGPT_SCREENSHOT_DIR"):
        shutil.copy(folder / name, Path(os.environ["SMOLRGPT_SCREENSHOT_DIR"]) / name)


def test_web_page_end_to_end(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server.url + "/")
    wait_for(d, "document.body.dataset.ready === '1'")
    screenshot(d, tmp_path, "web_start.png")
    assert "lively-tiny" in wait_for(d, "document.getElementById('model-info').textContent.includes('parameters') && "
                                        "document.getElementById('model-info').textContent")
    select = Select(d.find_element(By.ID, "example-select"))
    example = select.options[1].get_attribute("value")
    select.select_by_value(example)
    wait_for(d, "window.smolrgpt.frameId")
    assert d.find_element(By.ID, "frame-status").text.startswith("frame 640×360 ready")

    canvas = d.find_element(By.ID, "canvas")
    drag(d, canvas, 60, 200, 200, 320)
    drag(d, canvas, 380, 110, 540, 230)
    boxes = [[int(v) for v in li.get_attribute("data-box").split(",")]
             for li in d.find_elements(By.CSS_SELECTOR, "#region-list li")]
    assert len(boxes) == 2
    for box, want in zip(boxes, [[60, 200, 200, 320], [380, 110, 540, 230]]):
        assert all(abs(a - b) <= 2 for a, b in zip(box, want)), (box, want)

    # the question: typed, with one <mask> from the region list and one from a click on the region
    question = d.find_element(By.ID, "question")
    assert question.get_attribute("value") == QUESTION  # the example's own question, not only a placeholder
    question.clear()
    question.send_keys("How far is the pallet ")
    d.find_element(By.CSS_SELECTOR, "#region-list li[data-index='0'] .chip").click()
    question.send_keys(" from the pallet ")
    click_at(d, canvas, (boxes[1][0] + boxes[1][2]) / 2 - 25, (boxes[1][1] + boxes[1][3]) / 2 - 25)
    question.send_keys("?")
    assert question.get_attribute("value") == QUESTION
    assert d.find_element(By.ID, "mapping-status").text == "2 <mask> tags ↔ 2 regions"
    tags = [t.text for t in d.find_elements(By.CSS_SELECTOR, "#mapping .tag")]
    assert tags == ["<mask> → region 0", "<mask> → region 1"]

    d.find_element(By.ID, "ask").click()
    wait_for(d, "window.smolrgpt.lastAnswer")
    shown = d.execute_script("return ['answer-text', 'answer-category', 'answer-normalized']"
                             ".map(id => document.getElementById(id).textContent)")
    screenshot(d, tmp_path, "web_answer.png")

    # the same request straight to the API (example bytes as base64): the page shows exactly its answer
    info = next(e for e in HTTP.get(server.url + "/v1/examples").json()["examples"] if e["name"] == example)
    rgb_png, depth_png = (HTTP.get(server.url + info[k]).content for k in ("image_url", "depth_url"))
    api = HTTP.post(server.url + "/v1/ask", timeout=60, json={
        "question": QUESTION, "image": base64.b64encode(rgb_png).decode(),
        "depth": base64.b64encode(depth_png).decode(), "regions": [{"box": b} for b in boxes]}).json()
    assert api["answer"], "the lively test model gives non-empty answers"
    assert shown == [api["answer"], api["category"], api["normalized_answer"]]
    assert d.execute_script("return window.smolrgpt.lastRequest.regions") == [{"box": b} for b in boxes]

    # overlays: the same colours as visualize.draw_regions (sampled inside each box, off its label and edge)
    image = Image.open(io.BytesIO(rgb_png)).convert("RGB")
    reference = np.asarray(draw_regions(image, [Region("box", b) for b in boxes]))
    for x1, y1, x2, y2 in boxes:
        x, y = x1 + 6, y1 + 6
        pixel = d.execute_script(f"return Array.from(document.getElementById('canvas').getContext('2d')"
                                 f".getImageData({x}, {y}, 1, 1).data.slice(0, 3))")
        assert np.abs(np.asarray(pixel) - reference[y, x]).max() <= 2, (pixel, reference[y, x])

    # everything the page loaded came from this server
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(server.url) for r in resources), resources

    # removing a region: the mismatch is shown and Ask is disabled
    d.find_element(By.CSS_SELECTOR, "#region-list li[data-index='1'] .remove").click()
    assert d.find_element(By.ID, "mapping-status").text == "the question has 2 <mask> tags but 1 region is drawn"
    assert not d.find_element(By.ID, "ask").is_enabled()
    assert [t.text for t in d.find_elements(By.CSS_SELECTOR, "#mapping .tag")] == ["<mask> → region 0",
                                                                                    "<mask> → no region"]
    screenshot(d, tmp_path, "web_mismatch.png")


def test_clicking_a_region_inserts_its_mask_and_keeps_the_numbering(server, browser):
    """Clicking region 1 when the question has no <mask> yet makes it region 0 (the k-th <mask> is region k);
    a click on an empty spot adds a small box."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server.url + "/")
    wait_for(d, "document.body.dataset.ready === '1'")
    Select(d.find_element(By.ID, "example-select")).select_by_index(1)
    wait_for(d, "window.smolrgpt.frameId")
    canvas = d.find_element(By.ID, "canvas")
    drag(d, canvas, 20, 20, 120, 100)
    drag(d, canvas, 300, 150, 420, 260)
    click_at(d, canvas, 560, 60)  # empty spot: a small box (about 4% of the short side each way)
    boxes = [[int(v) for v in li.get_attribute("data-box").split(",")]
             for li in d.find_elements(By.CSS_SELECTOR, "#region-list li")]
    assert len(boxes) == 3 and abs(boxes[2][0] - 546) <= 2 and abs(boxes[2][2] - 574) <= 2

    question = d.find_element(By.ID, "question")
    question.clear()
    question.send_keys("Is the pallet ")
    d.find_element(By.CSS_SELECTOR, "#region-list li[data-index='1'] .chip").click()
    question.send_keys(" left of the pallet ")
    d.find_element(By.CSS_SELECTOR, "#region-list li[data-index='2'] .chip").click()
    question.send_keys(" or of ")
    d.find_element(By.CSS_SELECTOR, "#region-list li[data-index='2'] .chip").click()
    question.send_keys("?")
    assert question.get_attribute("value") == "Is the pallet <mask> left of the pallet <mask> or of <mask>?"
    reordered = [[int(v) for v in li.get_attribute("data-box").split(",")]
                 for li in d.find_elements(By.CSS_SELECTOR, "#region-list li")]
    assert reordered == [boxes[1], boxes[2], boxes[0]]  # in the order the <mask> tags refer to them
    assert d.find_element(By.ID, "mapping-status").text == "3 <mask> tags ↔ 3 regions"
    d.find_element(By.ID, "ask").click()
    wait_for(d, "window.smolrgpt.lastAnswer")
    assert d.execute_script("return window.smolrgpt.lastRequest.regions") == [{"box": b} for b in reordered]
    assert d.execute_script("return document.getElementById('answer-text').textContent") == \
        d.execute_script("return window.smolrgpt.lastAnswer.answer")


def test_example_question_failed_upload_and_edited_question(server, browser, tmp_path):
    """Choosing an example puts its question in the field (its <mask> tags count); a frame the server refuses
    leaves no frame active (Ask cannot ask about the previous image); editing the question clears the answer
    shown for the question before the edit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server.url + "/")
    wait_for(d, "document.body.dataset.ready === '1'")
    Select(d.find_element(By.ID, "example-select")).select_by_index(1)
    wait_for(d, "window.smolrgpt.frameId")
    question = d.find_element(By.ID, "question")
    assert question.get_attribute("value") == QUESTION
    assert d.find_element(By.ID, "mapping-status").text == "the question has 2 <mask> tags but 0 regions are drawn"
    d.find_element(By.ID, "suggested").click()
    assert d.find_element(By.ID, "mapping-status").text == "2 <mask> tags ↔ 2 regions"
    d.find_element(By.ID, "ask").click()
    wait_for(d, "window.smolrgpt.lastAnswer")
    answer = d.execute_script("return document.getElementById('answer-text').textContent")
    assert answer not in ("—", "thinking…")
    question.send_keys(" ")  # an edit: the old answer no longer belongs to the question
    assert d.execute_script("return document.getElementById('answer-text').textContent") == "—"

    rgb, depth = tmp_path / "rgb.png", tmp_path / "depth.png"
    Image.fromarray(np.full((90, 160, 3), 200, np.uint8)).save(rgb)
    depth.write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")  # the browser need not show it; the server refuses it
    d.find_element(By.ID, "depth-file").send_keys(str(depth))
    d.find_element(By.ID, "rgb-file").send_keys(str(rgb))
    wait_for(d, "document.getElementById('frame-status').textContent === 'the frame was refused'")
    assert "depth: not an image" in d.find_element(By.ID, "error").text
    assert d.execute_script("return window.smolrgpt.frameId") is None
    assert d.execute_script("return window.smolrgpt.image") is None
    assert not d.find_element(By.ID, "ask").is_enabled()

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    Select(d.find_element(By.ID, "example-select")).select_by_index(1)
    wait_for(d, "window.smolrgpt.frameId")
    d.execute_script("document.getElementById('depth-file').value = ''")
    d.find_element(By.ID, "rgb-file").send_keys(str(broken))
    wait_for(d, "document.getElementById('error').textContent.startsWith('RGB image:')")
    assert d.execute_script("return window.smolrgpt.frameId") is None
    assert not d.find_element(By.ID, "ask").is_enabled()
