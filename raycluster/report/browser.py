"""Open a report in headless Chromium (playwright driving the system's browser; nothing is
downloaded): what the page logged, which images rendered, and a screenshot.

    python -m raycluster.report.browser outputs/runs/<run>/report/index.html docs/report.png [--full-page]
"""
from __future__ import annotations

import argparse
import os

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Flags that work on machines without a display, GPU or network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def inspect_page(page_path: str, screenshot: str | None = None, full_page: bool = True,
                 viewport: tuple[int, int] = (1400, 1000)) -> dict:
    """Load `page_path` from disk; returns {"errors": [console errors and page exceptions],
    "cards": number of [data-cluster] elements, "images": [(id or src, rendered: bool)],
    "dialogs": [messages of alert/confirm/prompt calls], "handlers": elements with an on* attribute,
    "scripts": <script> elements} (the last three: what text injected into the page could run)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise FileNotFoundError(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` "
                                "(scripts/test.sh does this when it can), or set CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            errors, dialogs = [], []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"file://{os.path.abspath(page_path)}")
            page.wait_for_load_state("load")
            result = {
                "errors": errors,
                "cards": page.locator("[data-cluster]").count(),
                "images": [tuple(item) for item in page.evaluate(
                    "Array.from(document.images).map(i => [i.id || i.getAttribute('src'),"
                    " i.complete && i.naturalWidth > 0])")],
                "dialogs": dialogs,
                "handlers": page.evaluate("Array.from(document.querySelectorAll('*')).filter(e =>"
                                          " Array.from(e.attributes).some(a => a.name.startsWith('on'))).length"),
                "scripts": page.locator("script").count(),
            }
            if screenshot:
                page.screenshot(path=screenshot, full_page=full_page)
        finally:
            browser.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page")
    parser.add_argument("screenshot")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the first viewport")
    parser.add_argument("--height", type=int, default=1000, help="viewport height in pixels")
    args = parser.parse_args(argv)
    result = inspect_page(args.page, args.screenshot, args.full_page, (1400, args.height))
    broken = [name for name, ok in result["images"] if not ok]
    print(f"{result['cards']} cluster cards, {len(result['images'])} images ({len(broken)} not rendered), "
          f"{len(result['errors'])} console errors -> {args.screenshot}")


if __name__ == "__main__":
    main()
