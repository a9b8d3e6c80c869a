"""Open a run's report.html in a real headless browser (Debian's chromium) and check it.

    python benchmarks/report_browser.py runs/tiny_cpu/report.html [--out benchmarks/results]

Two screenshots (images on, images off) and the DOM after rendering; the checks: the browser logged
no error (console errors, failed loads), every report section is in the rendered DOM, every image
has alt text, and with images off the tables still hold the numbers (the evaluation and stage
tables are non-empty). Writes report_browser_<date>.json (checks, chromium version, command) and
the two PNGs next to it; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobilellm_r1.pipeline.report.page import SECTIONS

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
ERROR_LINE = re.compile(r"ERROR:CONSOLE|Uncaught|Failed to load resource|net::ERR_", re.I)


class DomSummary(html.parser.HTMLParser):
    """Section ids, <img> alt texts and the number of filled table cells per section."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.alts: list[str | None] = []
        self.cells: dict[str, int] = {}
        self._section, self._in_cell = "", False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if found.get("id") in SECTIONS:
            self._section = found["id"]
            self.ids.append(self._section)
        if tag == "img":
            self.alts.append(found.get("alt"))
        self._in_cell = tag == "td"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and data.strip() not in ("", "-"):
            self.cells[self._section] = self.cells.get(self._section, 0) + 1


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise SystemExit("no chromium found: apt-get install chromium (Debian) and run again")


def chromium(exe: str, url: str, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1200,5200",
                *flags,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )


def check(page: Path, out: Path) -> dict:
    exe = browser()
    url = page.resolve().as_uri()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    stem = f"report_browser_{time.strftime('%Y-%m-%d')}"
    shots = {"images": out / f"{stem}.png", "no_images": out / f"{stem}_noimages.png"}
    runs = {
        "images": chromium(exe, url, f"--screenshot={shots['images']}"),
        "no_images": chromium(
            exe, url, "--blink-settings=imagesEnabled=false", f"--screenshot={shots['no_images']}"
        ),
        "dom": chromium(exe, url, "--dump-dom"),
    }
    dom = DomSummary()
    dom.feed(runs["dom"].stdout)
    errors = [line for r in runs.values() for line in r.stderr.splitlines() if ERROR_LINE.search(line)]
    checks = {
        "browser_exit_codes": {k: r.returncode for k, r in runs.items()},
        "console_errors": errors,
        "sections_found": dom.ids,
        "sections_missing": [s for s in SECTIONS if s not in dom.ids],
        "images": len(dom.alts),
        "images_without_alt": sum(not a for a in dom.alts),
        "filled_cells_per_section": dom.cells,
        "screenshots": {k: str(p) for k, p in shots.items() if p.exists()},
    }
    checks["ok"] = (
        all(r.returncode == 0 for r in runs.values())
        and not errors
        and not checks["sections_missing"]
        and checks["images_without_alt"] == 0
        and dom.cells.get("stages", 0) > 0
        and dom.cells.get("evaluation", 0) > 0
        and len(checks["screenshots"]) == 2
    )
    return {
        "page": str(page),
        "browser": version,
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        **checks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("page", type=Path, help="a report.html")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not args.page.is_file():
        raise SystemExit(f"no such file: {args.page}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = check(args.page, args.out)
    path = args.out / f"report_browser_{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("ok", "sections_missing", "console_errors", "images", "filled_cells_per_section")
            },
            indent=1,
        )
    )
    print(f"wrote {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
