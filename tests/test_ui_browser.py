"""The dashboard in a real browser (headless Chromium from Debian's packages, driven by Selenium), on tiny-model runs
that train while the test watches: `tunewise ui` and `tunewise run` are started as the user starts them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Iterator
from urllib.request import urlopen

import pytest

from tunewise.ui.browser import missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no browser to drive: {missing()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(driver: Any, script: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"try {{ return {script}; }} catch (e) {{ return null; }}")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.conftest import reversal_rows
    from tunewise.ui.browser import chromium

    root = tmp_path_factory.mktemp("ui")
    data, runs, configs = root / "reverse.jsonl", root / "runs", root / "configs"
    configs.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in reversal_rows(300, seed=3)), encoding="utf-8")
    (configs / "tiny.yaml").write_text(
        f"name: a\noutput_dir: {runs}\nmodel: tiny\nmethod: lora\n"
        f"data: {{path: {data}, format: chat, split: {{train: 0.9, val: 0.05, test: 0.05}}, max_tokens: 64}}\n"
        "lora: {r: 8, alpha: 16, dropout: 0.0}\n"
        "training: {max_steps: 80, per_device_train_batch_size: 8, learning_rate: 5.0e-3, warmup_steps: 2, "
        "logging_steps: 1, eval_steps: 10, save_steps: 20}\n"
        "eval: {max_new_tokens: 8, batch_size: 16, max_examples: 12, few_shot: 0, metrics: [exact_match, token_f1]}\n"
        "decide: {calibrate: false}\nmonitor: {live: plain}\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunewise", "ui", str(runs), "--port", str(port), "--configs", str(configs)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urlopen(url + "/api/runs", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError("the dashboard did not start:\n" + (server.stdout.read() if server.stdout else ""))
            time.sleep(0.2)
    training = subprocess.Popen([sys.executable, "-m", "tunewise", "run", str(configs / "tiny.yaml")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = chromium()
    try:
        yield {"url": url, "runs": runs, "driver": driver, "training": training, "configs": configs}
    finally:
        driver.quit()
        for proc in (training, server):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def test_live_curve_gains_points_without_reload_then_checklist_links(dashboard: dict[str, Any]) -> None:
    driver, url = dashboard["driver"], dashboard["url"]
    driver.get(url + "/run?name=a")
    first = int(_wait(driver, "Number(document.querySelector('[data-chart=loss] svg').dataset.points) > 0 && "
                              "Number(document.querySelector('[data-chart=loss] svg').dataset.points)"))
    driver.execute_script("window.__same_page = true")
    more = int(_wait(driver, f"Number(document.querySelector('[data-chart=loss] svg').dataset.points) > {first} && "
                             "Number(document.querySelector('[data-chart=loss] svg').dataset.points)"))
    assert more > first and driver.execute_script("return window.__same_page === true")  # no reload happened
    assert dashboard["training"].wait(240) == 0
    _wait(driver, "document.querySelector('#status').textContent === 'succeeded'")
    row = _wait(driver, "document.querySelector('tr[data-item=test_eval][data-status=done] a.evidence')")
    href = row.get_attribute("href")
    assert href.endswith("/runs/a/files/eval/metrics_tuned.json")
    assert json.loads(urlopen(href, timeout=10).read())["metrics"]
    compression = driver.find_element("css selector", "tr[data-item=compression]")
    assert compression.get_attribute("data-status") == "todo"
    assert compression.find_element("css selector", "code.command").text == f"tunewise export {dashboard['runs'] / 'a'} --merge"
    assert driver.find_element("css selector", "tr[data-item=baseline]").get_attribute("data-status") == "done"
    # the whole loss curve: every train and eval record of the finished run is a point
    lines = [json.loads(x) for x in (dashboard["runs"] / "a" / "metrics.jsonl").read_text().splitlines()]
    expected = sum(1 for r in lines if r["kind"] == "train" or r["kind"] == "eval")
    _wait(driver, f"Number(document.querySelector('[data-chart=loss] svg').dataset.points) === {expected}")


def test_new_run_shows_config_errors_starts_and_cancels(dashboard: dict[str, Any]) -> None:
    driver, url = dashboard["driver"], dashboard["url"]
    driver.get(url + "/new")
    _wait(driver, "document.querySelector('#valid').dataset.ok !== undefined")

    def set_field(key: str, value: str) -> None:
        field = driver.find_element("id", f"field-{key}")
        field.clear()
        field.send_keys(value)

    set_field("training.learning_rate", "-1")
    message = _wait(driver, "document.querySelector('[data-key=\"training.learning_rate\"].bad .error').textContent")
    assert message == "training.learning_rate: Input should be greater than 0 (got -1)"
    assert "a run named 'a' exists" in driver.find_element("css selector", "[data-key=name] .error").text
    set_field("training.learning_rate", "0.005")
    set_field("name", "b")
    set_field("training.max_steps", "100000")
    set_field("eval.baseline", "false")
    _wait(driver, "document.querySelector('#valid').dataset.ok === '1'")
    driver.find_element("id", "start").click()
    _wait(driver, "location.pathname === '/run' && Number(document.querySelector('[data-chart=loss] svg').dataset.points) > 2")
    driver.find_element("id", "cancel").click()
    _wait(driver, "document.querySelector('#status').textContent === 'cancelled'", timeout=120)
    record = json.loads((dashboard["runs"] / "b" / "run.json").read_text())
    assert record["status"] == "cancelled" and "--resume" in record["error"]
    assert list((dashboard["runs"] / "b" / "checkpoints").glob("checkpoint-*"))  # resumable
    _wait(driver, "document.querySelector('#resume')")


def test_runs_list_compare_and_playground(dashboard: dict[str, Any]) -> None:
    driver, url = dashboard["driver"], dashboard["url"]
    driver.get(url + "/")
    _wait(driver, "document.body.dataset.loaded === '1' && document.querySelectorAll('tr[data-run]').length === 2")
    progress = driver.find_element("css selector", "tr[data-run=a] td.progress").text
    done, total = (int(x) for x in progress.split()[0].split("/"))
    assert 13 <= done <= total <= 24  # prepared, split, trained, watched, evaluated and compared: at least 13 items
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "f-status")).select_by_value("cancelled")
    assert [r.get_attribute("data-run") for r in driver.find_elements("css selector", "tr[data-run]")] == ["b"]

    driver.get(url + "/compare?runs=a,b")
    _wait(driver, "document.body.dataset.loaded === '1'")
    series = {p.get_attribute("data-series") for p in driver.find_elements("css selector", "[data-chart=loss] polyline")}
    assert {"a train loss", "a eval loss", "b train loss"} <= series
    cell = driver.find_element("css selector", "#compare-metrics td[data-metric=token_f1]").text
    assert "[" in cell and "Δ vs base" in cell  # the tuned value with its interval, and the delta with its CI

    driver.get(url + "/playground?run=a")
    _wait(driver, "!document.querySelector('#pg-send').disabled")
    driver.find_element("id", "pg-prompt").send_keys("reverse: d o g")
    driver.find_element("id", "pg-send").click()
    _wait(driver, "[...document.querySelectorAll('[data-variant]')].every(b => b.dataset.done === '1')", timeout=120)
    boxes = {b.get_attribute("data-variant"): b for b in driver.find_elements("css selector", "[data-variant]")}
    assert set(boxes) == {"base", "a"}
    for box in boxes.values():
        assert "tokens" in box.find_element("css selector", ".stats").text
    assert boxes["a"].find_element("css selector", ".answer").text.strip()
