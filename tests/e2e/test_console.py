"""The console in a real browser: headless Chromium (Debian's, driven through its chromedriver by
Selenium) against the console the chart deploys, on the local platform after the digits loop.
Each test saves a screenshot under .tauon/screenshots/ for a person to look at."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from kubetest import new_namespace, status_of, wait_for, wait_phase
from localplatform import grant_store, start_console
from test_loop import NS, digits  # noqa: F401 (the module's fixture: examples/digits, trained)

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / ".tauon" / "screenshots"


@pytest.fixture(scope="module")
def console(digits):  # noqa: F811
    wait_phase(digits, "mdep", "digits", NS, "Ready", timeout=300)
    return start_console(digits, NS)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(browser, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def only_the_console(browser, console: str) -> None:
    """Every request this page made went to the console."""
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    origin = urlparse(console).netloc
    assert all(urlparse(u).netloc == origin for u in urls if not u.startswith("data:")), urls


def wait_js(browser, script: str, timeout: float = 30, what: str = "the page"):
    return wait_for(lambda: browser.execute_script(script), timeout=timeout, interval=0.25, what=what)


def test_the_overview_lists_the_loop_with_its_phases_and_updates_live(console, browser):
    browser.get(f"{console}/?namespace={NS}")
    phases = wait_js(browser, """
        const rows = [...document.querySelectorAll('#live tr[data-kind]')];
        const got = Object.fromEntries(rows.map(r => [r.dataset.kind + '/' + r.dataset.name,
                                                      r.querySelector('.phase').textContent]));
        return got['ModelDeployment/digits'] ? got : null;""", what="the overview's rows")
    assert phases["Dataset/digits"] == "Ready"
    assert phases["TrainingJob/digits-cnn"] == "Succeeded"
    assert phases["ModelDeployment/digits"] == "Ready"
    # the live region is re-fetched without a reload
    wait_js(browser, "return document.getElementById('live').dataset.updated", what="a live refresh")
    only_the_console(browser, console)
    shot(browser, "overview")


def test_the_training_page_draws_one_point_per_epoch(console, browser):
    browser.get(f"{console}/trainingjobs/{NS}/digits-cnn")
    epochs = wait_js(browser, "return Number(document.querySelector('.curves').dataset.epochs)")
    points = browser.execute_script(
        "return [...document.querySelectorAll('figure.plot')].map(f => "
        "[f.querySelector('figcaption').textContent, f.querySelectorAll('circle.point.s0').length])")
    accuracy = dict(points)
    caption = next(k for k in accuracy if k.startswith("Accuracy"))
    assert accuracy[caption] == epochs >= 10  # examples/digits trains 15 epochs (early stop may end sooner)
    assert float(browser.find_element("css selector", "progress").get_attribute("value")) == 100
    text = browser.find_element("id", "live").text
    assert "sha256" in text and "Test metrics" in text
    only_the_console(browser, console)
    shot(browser, "trainingjob")


def test_the_dataset_page_shows_its_digest_splits_and_samples(console, browser, digits):  # noqa: F811
    ds = status_of(digits, "tds", "digits", NS)
    browser.get(f"{console}/datasets/{NS}/digits")
    wait_js(browser, "return document.querySelectorAll('.sample img').length >= 8", what="samples")
    text = browser.find_element("id", "live").text
    assert ds["digest"] in text and f"train {ds['counts']['train']}" in text
    only_the_console(browser, console)
    shot(browser, "dataset")


def try_it_ready(browser) -> None:
    """The form knows the model (its metadata came through the console), or the test says why."""
    state = wait_js(browser, "const s = document.querySelector('section.try'); "
                             "const p = document.getElementById('try-error'); "
                             "return s.dataset.ready ? 'ready' : (!p.hidden && p.textContent)",
                    what="Try it")
    assert state == "ready", state


def draw_a_one(browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    pad = browser.find_element("id", "pad")
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(pad, 0, -55).click_and_hold()
    for dy in range(-50, 60, 10):
        actions.move_to_element_with_offset(pad, 0, dy)
    actions.release().perform()


def test_drawing_a_digit_predicts_a_label_and_feedback_raises_the_count(console, browser, digits):  # noqa: F811
    before = status_of(digits, "mdep", "digits", NS).get("feedbackCount") or 0
    browser.get(f"{console}/modeldeployments/{NS}/digits")
    try_it_ready(browser)
    draw_a_one(browser)
    browser.find_element("id", "predict").click()
    label = wait_js(browser, "const l = document.getElementById('predicted-label'); return l && l.textContent")
    assert label in [str(i) for i in range(10)]
    shot(browser, "modeldeployment-predicted")
    browser.execute_script("document.getElementById('truth').value = '1'")
    browser.find_element("id", "send-feedback").click()
    wait_js(browser, "return document.getElementById('answer').textContent.includes('feedback stored')")
    # the status counts it (the operator polls the servers), and the live page shows it
    wait_js(browser, f"return Number(document.getElementById('feedback-count').textContent) > {before}",
            timeout=60, what="the feedback count to rise")
    assert (status_of(digits, "mdep", "digits", NS).get("feedbackCount") or 0) > before
    assert browser.find_element("css selector", "svg.lineage")  # the version history, drawn
    only_the_console(browser, console)
    shot(browser, "modeldeployment")


def test_a_malformed_upload_is_a_clear_message(console, browser, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is not a PNG")
    browser.get(f"{console}/modeldeployments/{NS}/digits")
    try_it_ready(browser)
    browser.find_element("id", "upload").send_keys(str(bad))
    browser.find_element("id", "predict").click()
    message = wait_js(browser, "const p = document.getElementById('try-error'); "
                               "return !p.hidden && p.textContent", what="the error")
    assert "image" in message.lower() and "Traceback" not in message
    shot(browser, "upload-error")


def test_missing_things_are_clear_messages_never_traces(console, browser, digits):  # noqa: F811
    browser.get(f"{console}/?namespace=no-such-namespace")
    assert "No Datasets, TrainingJobs or ModelDeployments in namespace no-such-namespace" in \
        browser.find_element("id", "live").text
    # a model that is not Ready
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "orphan"},
        "spec": {"model": {"trainingJobRef": {"name": "never-trained"}}}}))
    wait_for(lambda: status_of(digits, "mdep", "orphan", NS).get("phase") == "Failed", what="orphan Failed")
    browser.get(f"{console}/modeldeployments/{NS}/orphan")
    text = wait_js(browser, "const p = document.getElementById('try-error'); return !p.hidden && p.textContent")
    assert "is not Ready" in text and "never-trained" in text
    shot(browser, "not-ready")
    # a resource deleted while its page is open
    digits.kubectl("delete", "mdep", "orphan", "-n", NS)
    gone = wait_js(browser, "return document.getElementById('live').textContent.includes('does not exist')",
                   what="the page to say it is gone")
    assert gone
    assert "Traceback" not in browser.page_source
    shot(browser, "deleted")


def test_choosing_a_namespace_shows_it(console, browser, digits):  # noqa: F811
    other = "console-other"
    if digits.kubectl("get", "namespace", other, check=False).returncode != 0:
        digits.kubectl("create", "namespace", other)
    # an object that starts no pod (the node's CPUs are the next test's)
    digits.kubectl("apply", "-n", other, "-f", "-", input=json.dumps({
        "apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "elsewhere"},
        "spec": {"model": {"trainingJobRef": {"name": "not-yet"}}}}))

    def offered():  # the selector's choices are listed again every 15 s
        browser.get(f"{console}/?namespace={NS}")
        return browser.execute_script(
            f"return [...document.querySelectorAll('#namespace option')].some(o => o.value === '{other}')")

    wait_for(offered, timeout=40, interval=2, what=f"{other} in the namespace selector")
    assert not browser.find_element("id", "show-namespace").is_displayed()  # JS submits on change
    browser.execute_script(f"const s = document.getElementById('namespace'); s.value = '{other}';"
                           "s.dispatchEvent(new Event('change'))")
    wait_for(lambda: browser.current_url.endswith(f"namespace={other}"), what="the new namespace's page")
    assert "elsewhere" in browser.find_element("id", "live").text
    shot(browser, "namespace")
    digits.kubectl("delete", "namespace", other, "--wait=false")


def test_a_tabular_model_gets_a_form_of_its_features(console, browser, digits):  # noqa: F811
    ns = new_namespace(digits, "console-wine")  # its own: test_tabular's wine may be going away
    grant_store(digits, ns)
    digits.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "tabular"))
    wait_phase(digits, "mdep", "wine", ns, "Ready", timeout=400)
    browser.get(f"{console}/modeldeployments/{ns}/wine")
    try_it_ready(browser)
    assert not browser.find_element("css selector", ".try-tabular").get_attribute("hidden")
    assert browser.find_element("css selector", ".try-image").get_attribute("hidden")
    names = browser.execute_script("return [...document.querySelectorAll('#features input')].map(i => i.name)")
    assert names[:2] == ["alcohol", "malic_acid"] and len(names) == 13
    # a class_0 wine (the first row of scikit-learn's data set)
    row = [14.23, 1.71, 2.43, 15.6, 127, 2.8, 3.06, 0.28, 2.29, 5.64, 1.04, 3.92, 1065]
    for name, value in zip(names, row, strict=True):
        browser.find_element("css selector", f"#features input[name='{name}']").send_keys(str(value))
    browser.find_element("id", "predict").click()
    label = wait_js(browser, "const l = document.getElementById('predicted-label'); return l && l.textContent")
    assert label == "class_0"
    # a feature left empty: the model's own 400, named, shown as a message
    browser.find_element("css selector", "#features input[name='alcohol']").clear()
    browser.find_element("id", "predict").click()
    message = wait_js(browser, "const p = document.getElementById('try-error'); return !p.hidden && p.textContent")
    assert "alcohol" in message
    shot(browser, "tabular")
    digits.kubectl("delete", "namespace", ns, "--wait=false")
