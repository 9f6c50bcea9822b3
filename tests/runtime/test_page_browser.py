"""The web page in a real browser (Debian's chromium + chromedriver under selenium): the daemon runs on the review
farm's video with toy models; the page shows the individuals and the live frame; a stranger's track is enrolled as
a new fish from the review queue; the running daemon then names that fish in later events."""

import time

import pytest

from finprint.page_demo import (
    chromium,
    find_chromium,
    named_since,
    start_farm_daemon,
    unknown_track,
    wait_for,
)

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium and chromedriver are not installed (.ci/run installs them: "
                                       "apt-get install chromium chromium-driver)")


def test_enrol_a_stranger_from_the_review_queue_in_a_browser(tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    daemon = start_farm_daemon(tmp_path)
    browser = None
    try:
        base = f"http://127.0.0.1:{daemon.http.port}"
        uid = wait_for(lambda: unknown_track(daemon), what="a stranger's track in the review queue")
        browser = chromium()
        wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))  # the page reloads

        browser.get(base + "/")
        live = browser.find_element(By.CSS_SELECTOR, 'img.live[data-cam="pen1"]')
        wait.until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", live))
        assert "streaming" in browser.find_element(By.ID, "stat-pen1").text

        browser.get(base + "/individuals")
        row = browser.find_element(By.CSS_SELECTOR, 'tr.fish-row[data-fish="fish-a"]')
        assert "sightings" in row.text and row.find_elements(By.TAG_NAME, "svg")

        browser.get(base + "/review")
        browser.find_element(By.ID, "who").send_keys("Ana")
        card = browser.find_element(By.CSS_SELECTOR, f'.review-card[data-uid="{uid}"]')
        assert card.find_elements(By.CSS_SELECTOR, ".crops img")
        card.find_element(By.CSS_SELECTOR, ".new-id").send_keys("fish-b")
        since = time.time()
        card.find_element(By.CSS_SELECTOR, ".act-new").click()
        wait.until(lambda b: "fish-b" in b.find_element(By.ID, "msg").text)  # the page reloaded and says what it did
        assert not browser.find_elements(By.CSS_SELECTOR, f'.review-card[data-uid="{uid}"]')
        assert "Ana" in browser.find_element(By.TAG_NAME, "table").text  # who decided

        wait_for(lambda: named_since(daemon, "fish-b", since), what="an event naming fish-b")
        browser.get(base + "/individuals")
        assert browser.find_elements(By.CSS_SELECTOR, 'tr.fish-row[data-fish="fish-b"]')
    finally:
        if browser is not None:
            browser.quit()
        daemon.stop()
    assert daemon.exit_code == 0
