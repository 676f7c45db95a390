"""Screenshots of every dashboard page, for anyone to look at without running a browser themselves.

    python scripts/screenshots.py --url http://127.0.0.1:8765 --run NAME [--compare A,B] [--config PATH] [--out DIR]

Start the dashboard first (`tunewise ui RUNS`). Needs headless Chromium and its driver (Debian: `apt-get install
chromium chromium-driver`) and selenium (the test extra). Writes DIR/runs.png, run.png, compare.png, playground.png
and new.png (default DIR: screenshots/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunewise.ui.browser import chromium  # noqa: E402


def wait_for(driver, script: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(f"try {{ return Boolean({script}); }} catch (e) {{ return false; }}"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never satisfied: {script}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--run", required=True, help="The run shown on the run page and in the playground")
    parser.add_argument("--compare", help="Runs to compare, comma-separated (default: the two newest)")
    parser.add_argument("--prompt", default="reverse: c a t", help="The playground's prompt")
    parser.add_argument("--lang", default="en", choices=("en", "zh"))
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    url = args.url.rstrip("/")
    driver = chromium(1360, 1100)
    try:
        driver.get(url + "/")
        driver.execute_script(f"localStorage.setItem('tw-lang', '{args.lang}')")
        driver.get(url + "/")
        wait_for(driver, "document.body.dataset.loaded")
        driver.save_screenshot(str(args.out / "runs.png"))
        names = args.compare or ",".join(driver.execute_script(
            "return [...document.querySelectorAll('tr[data-run]')].slice(0, 2).map(r => r.dataset.run)"))

        driver.get(f"{url}/run?name={quote(args.run)}")
        wait_for(driver, "document.querySelector('#checklist') && Number(document.querySelector('svg').dataset.points) > 0")
        driver.save_screenshot(str(args.out / "run.png"))

        driver.get(f"{url}/compare?runs={quote(names)}")
        wait_for(driver, "document.body.dataset.loaded")
        driver.save_screenshot(str(args.out / "compare.png"))

        driver.get(f"{url}/playground?run={quote(args.run)}")
        wait_for(driver, "!document.querySelector('#pg-send').disabled")
        driver.find_element("id", "pg-prompt").send_keys(args.prompt)
        driver.find_element("id", "pg-send").click()
        wait_for(driver, "[...document.querySelectorAll('[data-variant]')].every(b => b.dataset.done === '1')", 120)
        driver.save_screenshot(str(args.out / "playground.png"))

        driver.get(f"{url}/new")
        wait_for(driver, "document.querySelector('#valid') && document.querySelector('#valid').dataset.ok !== undefined")
        field = driver.find_element("id", "field-training.learning_rate")
        field.clear()
        field.send_keys("-1")
        wait_for(driver, "document.querySelector('[data-key=\"training.learning_rate\"].bad')")
        driver.execute_script("document.querySelector('[data-key=\"training.learning_rate\"]').scrollIntoView({block: 'center'})")
        driver.save_screenshot(str(args.out / "new.png"))
    finally:
        driver.quit()
    for name in ("runs", "run", "compare", "playground", "new"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
