"""report.html in a real headless browser (Debian's chromium): it opens and every image renders.

Without chromium the test skips locally but FAILS under CI=1, so CI cannot pass it silently.
The screenshot is kept under $SAGAN_TEST_ARTIFACTS (default: the test's tmp dir) for a human look.
"""
from __future__ import annotations

import re

from PIL import Image

from helpers import make_report, run_chromium
from sagan import paths
from sagan.report import figures

WINDOW = (1200, 3000)
BANNER_RGB = (0xFF, 0xF3, 0xCD)  # .banner background in sagan.report.document's style
# Appended to a copy of the report: after load, record every image's natural width in the DOM.
WIDTH_PROBE = ('<script>window.addEventListener("load", () => document.body.setAttribute("data-widths", '
               'Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0).join(",")));</script>')


def test_report_html_renders_every_image_in_chromium(chromium, tmp_path, report_store, artifacts):
    root = make_report(tmp_path / "project", report_store)
    report = root / paths.REPORT_HTML

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", f"{WIDTH_PROBE}</body>"))
    dom = run_chromium(chromium, tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom",
                       probe.as_uri())
    widths = re.search(r'data-widths="([\d,]*)"', dom)
    assert widths, "the width probe did not run: the page did not finish loading"
    expected = []
    for name in (figures.FIG4, figures.FIG5, figures.FIG6, figures.FIG7):
        with Image.open(root / paths.FIGURES_DIR / name) as img:
            expected.append(img.width)
    assert [int(w) for w in widths.group(1).split(",")] == expected
    assert all(w > 0 for w in expected)

    screenshot = artifacts / "report.png"
    run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={screenshot}",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", report.as_uri())
    with Image.open(screenshot) as shot:
        assert shot.size == WINDOW
        colours = {colour for _, colour in shot.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert BANNER_RGB in colours, "the stand-in banner is not visible in the screenshot"
    assert (255, 0, 0) in colours and (0, 0, 255) in colours, "the first/last epoch samples are not drawn"
