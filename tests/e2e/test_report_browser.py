"""report.html in a real browser: headless Chromium (Debian's `chromium` package) opens it offline, runs its
self-check, and must find every plot decoded and no script error or console output. A screenshot is kept under
test-artifacts/ for people to look at.

No DevTools client or Playwright: Chromium's own `--dump-dom` prints the DOM after the load event, and the page's
inline self-check (vlmopt/report/html.py) has by then written what it saw into #render-check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.unit.report_fixtures import make_manifest, make_plan, make_profiles
from vlmopt.report import build_report

pytestmark = pytest.mark.e2e

# Tall enough for the whole fixture report, so the artifact shows every plot.
WINDOW = (1280, 7000)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium not found (looked for chromium, chromium-browser, google-chrome); "
                "run `scripts/setup.sh --ci-tools` to install Debian's chromium package")


def run_chromium(page: Path, profile_dir: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    args = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0",
        # Any host name fails to resolve: a report that tried to fetch something would show it as a broken image.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", *mode, page.resolve().as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)


class RenderCheck(HTMLParser):
    """Reads the attributes of <div id="render-check"> from the dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id") == "render-check":
            self.attrs = {k: v or "" for k, v in found.items()}


def render_check(page: Path, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    result = run_chromium(page, tmp_path / "chromium-dom", "--dump-dom")
    assert result.returncode == 0, f"chromium --dump-dom failed ({result.returncode}): {result.stderr[-2000:]}"
    parser = RenderCheck()
    parser.feed(result.stdout)
    assert parser.attrs is not None, "no #render-check element in the dumped DOM"
    # Chromium logs every console message and uncaught exception of the page as '...:CONSOLE...' on stderr.
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return parser.attrs, console


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    paths = build_report(make_plan(), tmp_path_factory.mktemp("report") / "doc-qa", make_profiles(),
                         [make_manifest()])
    return paths.html, len(paths.plots)


def test_report_renders_in_headless_chromium(report_html, tmp_path, artifacts_dir):
    page, plot_count = report_html
    attrs, console = render_check(page, tmp_path)
    assert attrs.get("data-done") == "1", f"the page's load handler never ran: {attrs}"
    assert attrs["data-errors"] == "[]", f"errors in the page: {attrs['data-errors']}"
    assert console == [], "console output or uncaught errors:\n" + "\n".join(console)
    assert plot_count == 5
    assert int(attrs["data-images-total"]) == plot_count
    assert int(attrs["data-images-loaded"]) == plot_count, "some plots did not decode"

    shot = artifacts_dir / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    result = run_chromium(page, tmp_path / "chromium-shot", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), f"no screenshot: {result.stderr[-2000:]}"
    with Image.open(shot) as image:
        assert image.size == WINDOW
        # A blank or unstyled page has a handful of colours; rendered charts and tables have many.
        colours = image.convert("RGB").resize((320, 1750)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 200, f"screenshot looks blank ({len(colours)} colours)"


def test_self_check_catches_broken_pages(report_html, tmp_path):
    """The harness must be able to fail: a script error, a console.error and an unloadable image are all seen."""
    page, plot_count = report_html
    broken = tmp_path / "broken.html"
    html = page.read_text()
    html = html.replace("</body>", '<img src="data:image/png;base64,AAAA"><script>console.error("boom");'
                                   "undefinedFunction();</script></body>")
    broken.write_text(html)
    attrs, console = render_check(broken, tmp_path)
    assert int(attrs["data-images-total"]) == plot_count + 1
    assert int(attrs["data-images-loaded"]) == plot_count
    assert "boom" in attrs["data-errors"] and re.search(r"undefinedFunction", attrs["data-errors"])
    assert console, "chromium stderr showed no console line for the broken page"
