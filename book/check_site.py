"""Open the built book in a real browser and check it: every page, internal link and image.

    .venv/bin/python book/check_site.py            # checks _build/html, screenshots in _build/screenshots

Serves the HTML on 127.0.0.1 and visits every page with headless Chromium (Debian's
``chromium``: ``apt-get install -y chromium``), reading the DOM the browser rendered
(``--dump-dom``). It reports an internal link whose target is not served or whose ``#anchor`` is
not an id of the target page, and an image that is not served as a decodable PNG, JPEG, GIF or
SVG. It saves screenshots of the first notebook page and of the results page. Exit status 1 when
anything is broken.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
]
# name -> (page, window size): the results page is long, its tables come after the introduction
SCREENSHOTS = {
    "notebook_01.png": ("notebooks/01_feature_hooks.html", "1280,1600"),
    "results.png": ("book/results.html", "1280,4200"),
}
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"<svg", b"<?xml")
SKIPPED_DIRS = ("_static", "_sources", "_images", "_sphinx_design_static")
_REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']refresh["'][^>]+url=([^"'>]+)""", re.I)


class _Refs(HTMLParser):
    """The ids, link targets and image sources of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        for key in ("id", "name"):
            if key in a and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "img" and "src" in a:
            self.images.append(a["src"])


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no Chromium found: install it with `apt-get update && apt-get install -y chromium`")


@contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1 at a free port for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the report says what matters
        return


class Browser:
    """Headless Chromium with a fresh profile, one process per page."""

    def __init__(self, profile: Path):
        self.exe = find_chromium()
        self.profile = profile

    def _run(self, *args: str) -> str:
        cmd = [self.exe, *FLAGS, f"--user-data-dir={self.profile}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def dom(self, url: str) -> str:
        return self._run("--virtual-time-budget=3000", "--dump-dom", url)

    def screenshot(self, url: str, out: Path, size: str = "1280,1600") -> None:
        self._run(f"--window-size={size}", f"--screenshot={out}", "--virtual-time-budget=3000", url)


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _is_image(data: bytes) -> bool:
    head = data[:64].lstrip()
    return any(head.startswith(m) for m in IMAGE_MAGIC)


def pages_of(site: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to it."""
    return sorted(
        p.relative_to(site).as_posix() for p in site.rglob("*.html")
        if p.relative_to(site).parts[0] not in SKIPPED_DIRS
    )


def check(site: Path, browser: Browser, base: str) -> tuple[list[str], dict[str, int]]:
    """Visit every page; return the problems found and counts of what was checked."""
    problems: list[str] = []
    counts = {"pages": 0, "links": 0, "images": 0}
    ids: dict[str, set[str]] = {}
    refs: dict[str, _Refs] = {}
    for page in pages_of(site):
        redirect = _REFRESH.search((site / page).read_text(errors="replace"))
        if redirect:  # Jupyter Book's index.html sends the browser to the root page
            target = urllib.parse.urljoin(base + page, redirect.group(1).strip())
            if _fetch(target)[0] != 200:
                problems.append(f"{page}: redirects to {target}, which is not served")
            counts["links"] += 1
            continue
        parser = _Refs()
        parser.feed(browser.dom(base + page))
        refs[page], ids[page] = parser, parser.ids
        counts["pages"] += 1
    status: dict[str, int] = {}
    for page, parser in refs.items():
        url = base + page
        for href in parser.links:
            target = urllib.parse.urljoin(url, href)
            parts = urllib.parse.urlsplit(target)
            if parts.scheme not in ("http", "https") or not target.startswith(base):
                continue  # external links and mailto: are not this check's business
            counts["links"] += 1
            path = parts.path.removeprefix(urllib.parse.urlsplit(base).path) or "index.html"
            if path.endswith("/"):
                path += "index.html"
            no_fragment = urllib.parse.urlunsplit(parts._replace(fragment=""))
            if no_fragment not in status:
                status[no_fragment] = _fetch(no_fragment)[0]
            if status[no_fragment] != 200:
                problems.append(f"{page}: link {href!r} -> HTTP {status[no_fragment]}")
            elif parts.fragment and path in ids and parts.fragment not in ids[path]:
                problems.append(f"{page}: link {href!r}: no id {parts.fragment!r} in {path}")
        for src in parser.images:
            counts["images"] += 1
            if src.startswith("data:"):
                payload = src.split(",", 1)[-1]
                ok = ";base64" in src.split(",", 1)[0] and _is_image(base64.b64decode(payload))
                ok = ok or src.startswith("data:image/svg+xml")
                if not ok:
                    problems.append(f"{page}: inline image is not a decodable image")
                continue
            code, data = _fetch(urllib.parse.urljoin(url, src))
            if code != 200 or not _is_image(data):
                problems.append(f"{page}: image {src!r} -> HTTP {code}, {len(data)} bytes")
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", default=str(ROOT / "_build" / "screenshots"))
    args = parser.parse_args(argv)
    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"check_site: no built book at {site}; build it first with `make book`", file=sys.stderr)
        return 2
    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, serve(site) as base:
        browser = Browser(Path(profile))
        problems, counts = check(site, browser, base)
        for name, (page, size) in SCREENSHOTS.items():
            if not (site / page).is_file():
                problems.append(f"screenshot: page {page} is missing")
                continue
            browser.screenshot(base + page, shots / name, size)
            print(f"screenshot: {page} -> {shots / name}")
    print(f"check_site: {counts['pages']} pages, {counts['links']} internal links, "
          f"{counts['images']} images checked in headless Chromium; {len(problems)} problems")
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
