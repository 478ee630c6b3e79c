"""`sagan report`: Table 1 as published beside our FID, figures, MLflow run history, banner, errors.

The fixture writes the upstream outputs by hand (metrics.json, losses.csv, sample PNGs, run.json)
and a real MLflow sqlite store with runs created through the MLflow API.
"""
from __future__ import annotations

import html
import itertools
import json
import re
import urllib.parse
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from helpers import (REPORT_EVALS, REPORT_EXPERIMENT, STANDIN_SHA256, evaluation, make_report, make_store,
                     project_dir, report_params, run_record, write_inputs, write_params)
from sagan import paths
from sagan.errors import SaganError
from sagan.params import MlflowParams, TrainParams
from sagan.report import build, figures, history
from sagan.report.document import Document, Figure, Labelled, Section, Table, to_html, to_markdown

# Table 1 of the paper, spelled out here independently of sagan.report.paper.
PAPER_ROWS = [
    ("BEGAN-CS", "34.13", "Park et al., Electronics 9 (2020) [paper ref 29]"),
    ("PR-BigGAN", "22.45", "no citation given in the paper; as reported by Bury 2024"),
    ("DualGAN", "13.95", 'Wei et al., ECCV 2022 [paper ref 30, "DuelGAN"]'),
    ("Proposed architecture (paper)", "21.88", "Bury, IVUS 2024"),
]
# The official Inception weights' sha256 (torch-fidelity's weights-inception-2015-12-05-6726825d.pth),
# spelled out here independently of sagan.metrics.extractor; any other digest is not the official file.
OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


def md_table(md: str, section: str) -> list[list[str]]:
    """The first Markdown table after the `## section` heading, as rows of cells (header first)."""
    return md_table_after(md.split(f"## {section}\n", 1)[1])


def md_table_after(text: str) -> list[list[str]]:
    """The first Markdown table in `text`, as rows of cells (header first)."""
    lines = list(itertools.takewhile(lambda line: line.startswith("|"),
                                     itertools.dropwhile(lambda line: not line.startswith("|"), text.splitlines())))
    rows = [[md_text(cell.strip()) for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return [rows[0]] + rows[2:]  # drop the |---| rule


def md_text(source: str) -> str:
    """Markdown source text as a reader sees it: CommonMark's backslash escapes of ASCII punctuation and
    its entities resolved."""
    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", source))


@pytest.fixture(scope="module")
def standin_report(tmp_path_factory, report_store) -> Path:
    """A smoke-like run: stand-in Inception weights and synthetic data."""
    return make_report(tmp_path_factory.mktemp("standin"), report_store)


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory, report_store) -> Path:
    """A run comparable with the paper: official weights, real CelebA."""
    return make_report(tmp_path_factory.mktemp("paper"), report_store, fid=21.004, weights_kind="official",
                       weights_sha256=OFFICIAL_SHA256, synthetic_metrics=False, synthetic_run=False)


def read(root: Path) -> tuple[str, str]:
    return (root / paths.REPORT_MD).read_text(), (root / paths.REPORT_HTML).read_text()


# -- Table 1 ------------------------------------------------------------------------------------
def test_paper_rows_appear_exactly_in_md_and_html(standin_report):
    md, html_text = read(standin_report)
    table = md_table(md, "Table 1: FID on CelebA")
    assert table[0] == ["Model", "FID (CelebA)", "Source", "Protocol"]
    assert [row[:3] for row in table[1:5]] == [list(r) for r in PAPER_ROWS]
    for model, fid, source in PAPER_ROWS:
        escaped_source = source.replace('"', "&quot;")
        assert f"<tr><td>{model}</td><td>{fid}</td><td>{escaped_source}</td>" in html_text


def test_this_runs_fid_is_the_one_in_metrics_json(standin_report):
    md, html_text = read(standin_report)
    ours = md_table(md, "Table 1: FID on CelebA")[5]
    fid_in_metrics = json.loads((standin_report / paths.RUN.metrics).read_text())["fid"]
    assert ours[0] == "This run"
    assert float(ours[1]) == round(fid_in_metrics, 2) == 123.46
    assert ours[3] == ("256 generated vs 400 reference images (val split); centre crop 160 px, resized to "
                       "32 px; extractor inception-v3-compat; weights standin")
    assert "<tr><td>This run</td><td>123.46</td>" in html_text


# -- banner -------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights_kind,weights_sha256,synthetic_metrics,synthetic_run,expected", [
    ("official", OFFICIAL_SHA256, False, False, []),
    ("standin", STANDIN_SHA256, False, False, [build.STANDIN_WARNING]),
    ("official", OFFICIAL_SHA256, True, False, [build.SYNTHETIC_WARNING]),
    ("official", OFFICIAL_SHA256, False, True, [build.SYNTHETIC_WARNING]),
    ("standin", STANDIN_SHA256, True, True, [build.STANDIN_WARNING, build.SYNTHETIC_WARNING]),
    # The label is an editable word; the digest is what evaluate hashed and loaded, and it decides.
    ("official", STANDIN_SHA256, False, False, [build.STANDIN_WARNING]),
    ("official", OFFICIAL_SHA256[:8], False, False, [build.STANDIN_WARNING]),  # a prefix is not the file
    ("standin", OFFICIAL_SHA256, False, False, []),
])
def test_comparability_warnings(weights_kind, weights_sha256, synthetic_metrics, synthetic_run, expected):
    measured = evaluation("run", weights_kind=weights_kind, weights_sha256=weights_sha256,
                          synthetic_data=synthetic_metrics)
    assert build.comparability_warnings(measured, run_record("run", synthetic_data=synthetic_run)) == expected


def test_the_gap_closed_is_measured_only_on_a_scale():
    """How far a run got from the untrained generator towards real images, where the bounds give a scale."""
    measured = evaluation("run")  # FID 123.46 between 20 and 300, SWD 80 between 30 and 230
    assert measured.gap_closed("fid") == pytest.approx((300 - 123.456789) / (300 - 20))
    assert measured.gap_closed("swd") == 0.75
    assert evaluation("run", kid_mean=None, kid_std=None).gap_closed("kid_mean") is None  # fid.kid off
    for ceiling in (20.0, 10.0):  # the FID cannot tell the untrained generator from real images
        assert evaluation("run", ceiling={"fid": ceiling, "n_gen": 256}).gap_closed("fid") is None


def test_the_official_digest_is_the_official_files():
    """sagan.metrics.official's full digest agrees with this file's spelling and with the prefix in the
    official file's name, the one check torch hub's convention gives."""
    from sagan.metrics import extractor, official

    assert official.OFFICIAL_SHA256 == OFFICIAL_SHA256
    assert OFFICIAL_SHA256.startswith(extractor.OFFICIAL_SHA256_PREFIX)


def test_a_protocol_that_says_official_over_stand_in_weights_keeps_the_banner(tmp_path, report_store):
    """`weights_kind: official` written over stand-in weights' digest in metrics_protocol.json (its
    metrics_sha256 still matches: only metrics.json is hashed) must not make the numbers comparable."""
    md, html_text = read(make_report(tmp_path, report_store, weights_kind="official", weights_sha256=STANDIN_SHA256,
                                     synthetic_metrics=False, synthetic_run=False))
    assert f"> **These numbers cannot be compared with the paper's.**\n>\n> - {build.STANDIN_WARNING}\n" in md
    banner = html_text.split("<h2>", 1)[0]
    assert 'class="banner"' in banner and f"<ul><li>{build.STANDIN_WARNING}</li></ul></div>" in banner
    assert md_table(md, "Table 1: FID on CelebA")[5][3].endswith("; weights standin")
    assert dict(md_table(md, "Metadata")[1:])["FID weights"] == f"standin (sha256 {STANDIN_SHA256})"


def test_banner_tops_the_report_when_a_stand_in_was_used(standin_report):
    md, html_text = read(standin_report)
    assert build.STANDIN_WARNING == "stand-in extractor: not comparable with published FID"
    assert build.SYNTHETIC_WARNING == "synthetic data: not CelebA"
    head = md.split("## ", 1)[0]  # before the first section
    assert f"> - {build.STANDIN_WARNING}" in head and f"> - {build.SYNTHETIC_WARNING}" in head
    banner = html_text.split("<h2>", 1)[0]
    assert 'class="banner"' in banner
    assert f"<li>{build.STANDIN_WARNING}</li><li>{build.SYNTHETIC_WARNING}</li>" in banner


def test_no_banner_when_comparable_with_the_paper(paper_report):
    md, html_text = read(paper_report)
    for text in (md, html_text):
        assert "cannot be compared" not in text
        assert build.STANDIN_WARNING not in text and build.SYNTHETIC_WARNING not in text
    assert 'class="banner"' not in html_text
    assert md_table(md, "Table 1: FID on CelebA")[5][:2] == ["This run", "21.00"]


# -- run history --------------------------------------------------------------------------------
def test_history_is_sorted_by_fid_with_differing_params_as_columns(standin_report):
    md, _ = read(standin_report)
    table = md_table(md, "Run history")
    assert table[0] == ["Run", "train.loss", "train.lr_d", "FID", "KID", "steps", "wall time (s)", "img/s"]
    assert table[1:] == [
        ["beta (this run)", "bce", "0.0002", "12.25", "0.01100", "200", "25.0", "480.0"],
        ["alpha", "bce", "0.0004", "30.50", "0.02100", "100", "12.5", "512.0"],
        ["delta", "bce", "0.0004", "50.00", "–", "–", "–", "–"],
        ["gamma", "hinge", "0.0004", "–", "–", "50", "–", "–"],
    ]


def test_history_keeps_the_best_history_max_runs(tmp_path, report_store):
    md, _ = read(make_report(tmp_path, report_store, report_params(report_store, history_max_runs=2)))
    assert "2 of 4 runs" in md
    table = md_table(md, "Run history")
    assert [row[0] for row in table[1:]] == ["beta (this run)", "alpha"]
    assert table[0][1:3] == ["train.lr_d", "FID"]  # train.loss is bce in both: not a column


def _row(name: str, fid: float | None, **params: str) -> history.HistoryRow:
    return history.HistoryRow(run_id=name, run_name=name, params=params,
                              metrics={} if fid is None else {history.METRIC_FID: fid})


def test_sort_by_fid_puts_runs_without_fid_last():
    rows = [_row("a", None), _row("b", 3.0), _row("c", float("nan")), _row("d", 1.5)]
    assert [r.run_name for r in history.sort_by_fid(rows)] == ["d", "b", "a", "c"]


def test_differing_params_counts_an_unlogged_param_as_different():
    rows = [_row("a", 1.0, x="1", y="2", z="5"), _row("b", 2.0, x="1", y="3"), _row("c", 3.0, x="1", y="2", z="5")]
    assert history.differing_params(rows) == ["y", "z"]
    assert history.differing_params(rows[:1]) == []


# -- figures and metadata -----------------------------------------------------------------------
def test_fig4_plots_mean_losses_per_epoch(standin_report):
    import pandas as pd

    per_epoch = figures.mean_losses_per_epoch(pd.read_csv(standin_report / paths.RUN.losses_csv))
    assert list(per_epoch.index) == [1, 2, 10]
    np.testing.assert_allclose(per_epoch["g_loss"], [0.7, 0.9, 0.85])
    np.testing.assert_allclose(per_epoch["d_loss"], [1.4, 1.1, 1.1])
    with Image.open(standin_report / paths.FIGURES_DIR / figures.FIG4) as fig4:
        assert fig4.format == "PNG" and fig4.size == (640, 400)


def test_fig4_ticks_whole_epochs_only():
    import matplotlib.pyplot as plt
    import pandas as pd

    losses = pd.DataFrame({"epoch": [1, 2, 3], "g_loss": [0.7, 0.8, 0.9], "d_loss": [1.4, 1.2, 1.1]})
    fig = figures.loss_figure(losses)
    try:
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    finally:
        plt.close(fig)
    assert ticks == [1.0, 2.0, 3.0]


def test_fig4_is_byte_identical_for_the_same_losses(standin_report, tmp_path):
    import pandas as pd

    losses = pd.read_csv(standin_report / paths.RUN.losses_csv)
    figures.plot_losses(losses, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (standin_report / paths.FIGURES_DIR / figures.FIG4).read_bytes()


def test_fig5_and_fig6_are_the_first_and_last_epochs_samples(standin_report):
    out = standin_report / paths.FIGURES_DIR
    assert sorted(p.name for p in out.iterdir()) == [figures.FIG4, figures.FIG5, figures.FIG6, figures.FIG7]
    for name, colour in ((figures.FIG5, (255, 0, 0)), (figures.FIG6, (0, 0, 255))):
        with Image.open(out / name) as img:
            assert img.convert("RGB").getpixel((5, 5)) == colour


def test_md_links_the_figures_and_html_embeds_them(standin_report):
    md, html_text = read(standin_report)
    for name in (figures.FIG4, figures.FIG5, figures.FIG6):
        assert f"](figures/{name})" in md
    assert html_text.count('<img src="data:image/png;base64,') == 4  # Figs. 4-7
    assert "figures/" not in html_text  # self-contained: no links to files beside it


def test_every_metric_sits_between_its_floor_and_ceiling(standin_report):
    md, html_text = read(standin_report)
    table = md_table(md, "Metrics with a scale")
    assert table[0] == ["", "FID", "KID", "precision", "recall", "SWD (x1e3)"]
    assert table[1:] == [["Floor: 256 real training images", "20.00", "0.00100", "0.750", "0.750", "30.0"],
                         ["This run", "123.46", "0.01230", "0.500", "0.250", "80.0"],
                         ["Ceiling: the untrained generator", "300.00", "0.30000", "0.000", "0.000", "230.0"]]
    # (300 - 123.46) / (300 - 20) = 63%, (230 - 80) / (230 - 30) = 75%
    assert "This run closes 63% of the FID gap, 75% of the SWD gap between the untrained generator" in md
    assert "KID: KID-PROTOCOL. Precision and recall: PRC-PROTOCOL." in md and "SWD-PROTOCOL, on 256 images" in md
    assert "Metrics with a scale" in html_text


def test_metadata_and_params_diff_against_the_paper(standin_report, report_store):
    md, _ = read(standin_report)
    facts = dict(md_table(md, "Metadata")[1:])
    assert facts["Git commit"] == "0123abc"
    assert facts["Data fingerprint (sha256 of the manifest)"] == "f" * 64
    assert facts["MLflow run id"] == report_store.run_ids["beta"]
    assert facts["DVC experiment"] == "rabid-plop"  # so the report and `dvc exp show` can be matched
    diff_table = md_table_after(md.split("Params that differ from the paper's configuration", 1)[1])
    assert diff_table[0] == ["Param", "Paper", "This run"]
    diff = {key: (paper, ours) for key, paper, ours in diff_table[1:]}
    assert diff["train.lr_d"] == ("0.0004", "0.0002")
    assert diff["mlflow.experiment"] == ("sagan-celeba", REPORT_EXPERIMENT)
    assert "train.lr_g" not in diff


def test_report_files_are_logged_to_the_training_run(standin_report, report_store):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=report_store.uri)
    run_id = report_store.run_ids["beta"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "report")) == [
        "report/figures", "report/report.html", "report/report.md"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "report/figures")) == [
        f"report/figures/{n}" for n in (figures.FIG4, figures.FIG5, figures.FIG6, figures.FIG7)]


def test_outputs_leave_no_temporary_files(standin_report):
    leftovers = [p.name for p in (standin_report / paths.REPORTS_DIR).rglob(".*")]
    assert leftovers == []


def test_html_escapes_all_text(tmp_path, report_store):
    params = report_params(report_store, title='<script>alert("x")</script> & co')
    md, html_text = read(make_report(tmp_path, report_store, params))
    assert "<script>" not in html_text
    assert "<title>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co</title>" in html_text
    assert md.startswith('# &lt;script&gt;alert("x")&lt;/script&gt; &amp; co\n')  # shown, not rendered, in Markdown


# -- user-named text is shown, never rendered, in Markdown -------------------------------------
# CommonMark with GFM's tables and strikethrough: how GitHub, GitLab and most viewers read report.md.
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# Names a user chooses (a title, a run, an experiment, a study or cell, a param value) that Markdown
# would otherwise turn into a link, an image, raw HTML, inline markup or a block of its own.
HOSTILE = [
    "[x](javascript:alert(1))",
    "![x](http://remote/p.png)",
    "<http://remote/a> <img src=http://remote/q.png> &amp; &#42;",
    "*em* _em_ __strong__ `code` ~~del~~ ~del~ a*b*c",
    "# heading #",
    "a | b \\| c \\",
    "- item",
    "+ item",
    "1. item",
    "2) item",
    "> quote",
    "[ref]: http://remote/r",
    "---",
    "line one\n# line two\n[ref]: http://remote/r",
]


def rendered_tags(page: str) -> Counter:
    return Counter(re.findall(r"<(\w+)", page))


def rendered_texts(page: str, tag: str) -> list[str]:
    """The text of every `tag` element of a rendered page, as a reader sees it."""
    return [html.unescape(re.sub(r"<[^>]*>", "", inner)) for inner in re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)]


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_shows_user_named_text_literally(tmp_path, text):
    """Every place of the document model that carries a name: the title, a banner line, a section title
    (a study's), a paragraph, a table cell (a run, a cell, a param value), a labelled paragraph, a
    figure's caption and its path (under a study's directory)."""
    png = tmp_path / "fig.png"
    Image.new("RGB", (4, 4)).save(png)

    def document(name: str) -> Document:
        return Document(title=name, warnings=[name], sections=[Section(name, [
            name, Table([name], [[name]]), Labelled(name, name), Figure(png, f"studies/{name}/fig.png", name)])])

    page = MARKDOWN.render(to_markdown(document(text)))
    assert rendered_tags(page) == rendered_tags(MARKDOWN.render(to_markdown(document("plain"))))
    shown = " ".join(text.splitlines())  # Markdown is read on one line per block
    for tag in ("h1", "h2", "li", "th", "td"):
        assert rendered_texts(page, tag) == [shown], tag
    assert shown in rendered_texts(page, "p") and f"{shown} {shown}" in rendered_texts(page, "p")
    [(src, alt)] = re.findall(r'<img src="([^"]*)" alt="([^"]*)"', page)
    assert urllib.parse.unquote(html.unescape(src)) == f"studies/{text}/fig.png" and html.unescape(alt) == shown
    page = to_html(document(text))
    assert "<a " not in page and '<img src="http' not in page
    assert rendered_texts(page, "h1") == [text]


def test_user_named_text_in_the_report_is_never_a_link_image_or_markup(tmp_path_factory):
    """A title, run names, the experiment's name and param values as an attacker would pick them, in
    report.md as a Markdown viewer renders it and in report.html."""
    experiment = "exp [e](javascript:alert(1))"
    run_names = ["[x](javascript:alert(1))", "![x](http://remote/p.png)"]
    hostile = make_store(tmp_path_factory.mktemp("hostile-mlflow"), experiment, [
        ("beta", {"train.loss": "bce"}, {"fid": 12.0}),
        (run_names[0], {"train.loss": "*hinge* | <b>x</b>"}, {"fid": 20.0}),
        (run_names[1], {"train.loss": "`bce`"}, {"fid": 30.0}),
    ])
    title = "# [t](javascript:alert(1)) ![t](http://remote/t.png) <http://remote/a> _t_ #"
    md, html_text = read(make_report(tmp_path_factory.mktemp("hostile"), hostile, report_params(hostile, title=title)))

    page = MARKDOWN.render(md)
    assert "<a " not in page and "<code>" not in page and "<del>" not in page
    assert [src.split("/")[0] for src in re.findall(r'<img src="([^"]*)"', page)] == ["figures"] * 4
    assert rendered_tags(page)["em"] == 4 and rendered_tags(page)["strong"] == 1  # captions; the banner
    assert rendered_texts(page, "h1") == [title]
    assert any(f"runs in MLflow experiment '{experiment}', sorted by FID" in p for p in rendered_texts(page, "p"))
    runs = md_table(md, "Run history")
    assert [row[:2] for row in runs[1:]] == [["beta (this run)", "bce"], [run_names[0], "*hinge* | <b>x</b>"],
                                             [run_names[1], "`bce`"]]
    params = {key: ours for key, _, ours in md_table_after(md.split("Params that differ", 1)[1])[1:]}
    assert params["mlflow.experiment"] == experiment
    assert '<a href="javascript:' not in html_text and '<img src="http://remote' not in html_text
    assert f"<h1>{html.escape(title)}</h1>" in html_text


# -- missing or bad inputs ----------------------------------------------------------------------
@pytest.mark.parametrize("remove,message", [
    (paths.RUN.metrics, f"{paths.RUN.metrics}: not found; it is written by `sagan evaluate` "
                    "(hint: run `sagan evaluate`, or the whole pipeline: `dvc repro`)"),
    (paths.RUN.losses_csv, f"{paths.RUN.losses_csv}: not found; it is written by `sagan train` "
                       "(hint: run `sagan train`, or the whole pipeline: `dvc repro`)"),
    (paths.RUN.run_record, f"{paths.RUN.run_record}: not found; it is written by `sagan train` "
                       "(hint: run `sagan train`, or the whole pipeline: `dvc repro`)"),
])
def test_a_missing_input_is_named_with_the_stage_that_makes_it(tmp_path, report_store, remove, message):
    write_inputs(tmp_path, report_store)
    (tmp_path / remove).unlink()
    with project_dir(tmp_path), pytest.raises(SaganError) as exc:
        build.build_report(report_params(report_store), paths.RUN, [])
    assert str(exc.value) == message
    assert not (tmp_path / paths.REPORT_MD).exists() and not (tmp_path / paths.REPORT_HTML).exists()


def test_missing_samples_and_bad_columns_are_named(tmp_path, report_store):
    write_inputs(tmp_path, report_store)
    for png in (tmp_path / paths.RUN.samples_dir).iterdir():
        png.unlink()
    with project_dir(tmp_path), pytest.raises(SaganError, match=r"^reports/train/samples/epoch_\*\.png: "
                                                                 r"no sample grids found; it is written by `sagan train`"):
        build.build_report(report_params(report_store), paths.RUN, [])
    write_inputs(tmp_path, report_store)
    (tmp_path / paths.RUN.losses_csv).write_text("step,epoch,d_loss\n1,1,0.5\n")
    with project_dir(tmp_path), pytest.raises(SaganError, match=r"^reports/train/losses.csv: lacks columns run_id, g_loss;"):
        build.build_report(report_params(report_store), paths.RUN, [])


def _rewrite_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("mix, message", [
    ("metrics", r"^reports/metrics_protocol\.json: measures run 0{32}, but reports/train/run\.json is from run \w{32}; "
                r"it is written by `sagan evaluate`"),
    ("losses", r"^reports/train/losses\.csv: is from run 0{32}, but reports/train/run\.json is from run \w{32}; "
               r"it is written by `sagan train`"),
])
def test_inputs_of_two_runs_are_refused(tmp_path, report_store, mix, message):
    """A killed run's losses, or metrics evaluated before the newest run finished, must not end up
    beside another run's numbers."""
    write_inputs(tmp_path, report_store)
    if mix == "metrics":
        _rewrite_json(tmp_path / paths.RUN.metrics_protocol, run_id="0" * 32)
    else:
        csv = tmp_path / paths.RUN.losses_csv
        csv.write_text(csv.read_text().replace(report_store.run_ids["beta"], "0" * 32))
    with project_dir(tmp_path), pytest.raises(SaganError, match=message):
        build.build_report(report_params(report_store), paths.RUN, [])
    assert not (tmp_path / paths.REPORT_MD).exists()


def test_the_params_shown_are_the_runs_not_params_yaml(tmp_path, report_store):
    trained_with = replace(report_params(report_store), train=TrainParams(lr_d=1e-3))
    write_inputs(tmp_path, report_store, params=trained_with)
    with project_dir(tmp_path):
        build.build_report(report_params(report_store), paths.RUN, [])  # params.yaml of now: lr_d 2e-4
    md, _ = read(tmp_path)
    diff_rows = md_table_after(md.split("Params that differ from the paper's configuration", 1)[1])
    assert ["train.lr_d", "0.0004", "0.001"] in diff_rows


def test_a_non_number_fid_is_one_line(tmp_path, report_store):
    write_inputs(tmp_path, report_store)
    _rewrite_json(tmp_path / paths.RUN.metrics, fid="nan?")
    with project_dir(tmp_path), pytest.raises(SaganError, match=r"^reports/metrics\.json: 'fid' is 'nan\?', "
                                                                 r"not a finite number; it is written by"):
        build.build_report(report_params(report_store), paths.RUN, [])


def test_a_failing_report_leaves_the_previous_one_whole(tmp_path, report_store):
    make_report(tmp_path, report_store)
    before = {p: (tmp_path / p).read_bytes() for p in (paths.REPORT_MD, paths.REPORT_HTML)}
    figures_before = sorted((tmp_path / paths.FIGURES_DIR).iterdir())
    missing_run = "0" * 32  # consistent inputs of a run the MLflow store does not have
    for path in (paths.RUN.metrics_protocol, paths.RUN.run_record):
        key = "run_id" if path == paths.RUN.metrics_protocol else "mlflow_run_id"
        _rewrite_json(tmp_path / path, **{key: missing_run})
    for csv in (tmp_path / paths.RUN.losses_csv, tmp_path / paths.RUN.evals_csv):
        csv.write_text(csv.read_text().replace(report_store.run_ids["beta"], missing_run))
    with project_dir(tmp_path), pytest.raises(SaganError, match=f"MLflow run {missing_run} from"):
        build.build_report(report_params(report_store), paths.RUN, [])
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    assert sorted((tmp_path / paths.FIGURES_DIR).iterdir()) == figures_before


def test_an_unknown_experiment_is_named(tmp_path, report_store):
    params = replace(report_params(report_store),
                     mlflow=MlflowParams(tracking_uri=report_store.uri, experiment="nope"))
    write_inputs(tmp_path, report_store)
    with project_dir(tmp_path), pytest.raises(SaganError, match=r"^MLflow experiment 'nope' \(mlflow.experiment\) "
                                                                 r"not found in sqlite:///"):
        build.build_report(params, paths.RUN, [])


def test_cli_prints_a_missing_input_as_one_line(tmp_path, capsys):
    from sagan.cli import main

    write_params(tmp_path / "params.yaml", report={"history_max_runs": 5})
    with project_dir(tmp_path):
        assert main(["report"]) == 1
    assert capsys.readouterr().err == ("sagan report: error: reports/train/samples/epoch_*.png: no sample grids "
                                       "found; it is written by `sagan train` (hint: run `sagan train`, or the "
                                       "whole pipeline: `dvc repro`)\n")


def test_fig7_plots_fid_and_swd_over_steps_and_names_the_scored_generator(standin_report):
    import matplotlib.pyplot as plt
    import pandas as pd

    md, _ = read(standin_report)
    assert "Fig. 7 (not in the paper): FID and SWD during training, 64 generated images per point" in md
    assert "Scored: the generator after the last step (as in the paper)." in md
    fig = figures.evals_figure(pd.read_csv(standin_report / paths.RUN.evals_csv))
    try:
        fid_ax, swd_ax = fig.axes
        assert [tuple(xy) for xy in fid_ax.lines[0].get_xydata()] == [(s, f) for s, f, _ in REPORT_EVALS]
        assert [tuple(xy) for xy in swd_ax.lines[0].get_xydata()] == [(s, w) for s, _, w in REPORT_EVALS]
    finally:
        plt.close(fig)


def test_without_evaluations_there_is_no_fig7_and_best_is_said_to_be_optimistic(tmp_path, report_store):
    write_inputs(tmp_path, report_store)
    header = (tmp_path / paths.RUN.evals_csv).read_text().splitlines()[0]
    (tmp_path / paths.RUN.evals_csv).write_text(header + "\n")  # train.eval_every: 0
    _rewrite_json(tmp_path / paths.RUN.metrics_protocol, generator="best")
    with project_dir(tmp_path):
        build.build_report(report_params(report_store), paths.RUN, [])
    md, _ = read(tmp_path)
    assert figures.FIG7 not in {p.name for p in (tmp_path / paths.FIGURES_DIR).iterdir()}
    assert "No evaluations during training (train.eval_every: 0), so no Fig. 7." in md
    assert ("Scored: the best generator during training (lowest FID, at step 200); it was selected on the same "
            "reference set it is scored on, so its FID is optimistic.") in md


def test_table_1_carries_the_spread_over_seeds_beside_the_single_run():
    row = ["This configuration over 3 seeds", "28.83 [24.47, 33.20]", "study 'attention', variant sagan-after3",
           "the same protocol"]
    table = build.table1_section(evaluation("run"), run_record("run"), row).blocks[0]
    assert table.rows[-2][0] == build.THIS_RUN and table.rows[-1] == row
    assert build.table1_section(evaluation("run"), run_record("run")).blocks[0].rows[-1][0] == build.THIS_RUN
