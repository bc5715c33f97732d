"""The web page in headless Chromium (Debian's, driven by Selenium): attach an image, ask, watch it stream."""

from __future__ import annotations

import shutil

import httpx
import pytest
from serve_helpers import MODEL_NAME, data_url, image_message, png_bytes

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,900")

# Counts the answer's text updates, so the test can tell streaming from one final write.
WATCH_ANSWER = """
window.answerUpdates = [];
new MutationObserver(() => {
  const answer = document.querySelector('.turn.assistant .text');
  if (answer) window.answerUpdates.push(answer.textContent);
}).observe(document.getElementById('conversation'), {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium or chromedriver is not installed (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def test_page_streams_an_answer_about_an_image(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = png_bytes(56, 84, seed=3)
    path = tmp_path / "digit.png"
    path.write_bytes(image)
    wait = WebDriverWait(browser, 30)
    browser.get(f"{server.url}/")
    wait.until(lambda d: d.find_element(By.ID, "model").text == MODEL_NAME)
    browser.find_element(By.ID, "image-input").send_keys(str(path))
    wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("src").startswith("data:image/png"))
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("40")
    browser.find_element(By.ID, "question").send_keys("What digit is this?")
    browser.execute_script(WATCH_ANSWER)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))

    answer = browser.find_element(By.CSS_SELECTOR, ".turn.assistant .text").get_property("textContent")
    updates = browser.execute_script("return window.answerUpdates")
    reference = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
        "model": MODEL_NAME, "messages": [image_message(data_url(image))], "max_tokens": 40, "temperature": 0})
    expected = reference.json()["choices"][0]["message"]["content"]
    assert answer == expected
    assert len(set(updates)) > 2, updates  # the answer grew piece by piece
    assert browser.find_element(By.ID, "status").text == "done (length)"
    assert browser.find_element(By.CSS_SELECTOR, ".turn.user img").get_attribute("src").startswith("data:image/png")


def test_page_shows_errors(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(f"{server.url}/")
    wait.until(lambda d: d.find_element(By.ID, "model").text == MODEL_NAME)
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("999999")  # over the server's cap
    browser.find_element(By.ID, "question").send_keys("hello")
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text == "error")
    assert "cap" in browser.find_element(By.CSS_SELECTOR, ".turn.error").text
