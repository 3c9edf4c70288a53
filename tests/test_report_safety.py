"""`tmd-bench report` / `gap` on untrusted run folders: no file outside a run is read, no string can
reorder the page, and every malformed input is one bounded line naming the file."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from tmd_bench.reports.html import REQUIRED_COLUMNS, ReportError, build_report, load_runs, read_results_table
from tmd_bench.reports.paired import GapError, paired_gap
from typer.testing import CliRunner

from tmd_bench.cli import app

SECRET = "TOP-SECRET-7f3a9c-do-not-embed"
RLO = "\u202e"
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def row(row_id="teacher-euler-s2", **extra):
    return {"row_id": row_id, "method": "teacher-euler", "steps": 2, "nfe": 4, "nfe_counted": 4,
            "effective_nfe": 4.0, "latency_total_s": 0.5, "teacher": "shapes", "suite": "p",
            "run_card": f"cards/{row_id}.json", **extra}


def make_run(folder: Path, rows: list[dict], cards: bool = True) -> Path:
    """A run folder as `tmd-bench evaluate` writes it, by hand: results.csv and (when asked) one card per row."""
    (folder / "cards").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    if cards:
        for r in rows:
            if isinstance(r.get("run_card"), str) and r["run_card"].startswith("cards/"):
                (folder / r["run_card"]).write_text(json.dumps({"row_id": r["row_id"], "note": "card of " + r["row_id"]}))
    return folder


def add_samples(folder: Path, row_id: str, prompts: list[str], seeds: list[int]) -> Path:
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    videos = np.linspace(-1, 1, len(prompts) * 3 * 2 * 4 * 4, dtype=np.float32).reshape(len(prompts), 3, 2, 4, 4)
    path = folder / "samples" / f"{row_id}.safetensors"
    save_file({"videos": videos}, str(path), metadata={"prompts": json.dumps(prompts), "seeds": json.dumps(seeds)})
    return path


@pytest.fixture
def secret(tmp_path):
    """A file outside every run folder; valid JSON, so only the path check keeps it out of the report."""
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"secret": SECRET}))
    return path


def build(runs, out):
    warnings = []
    csv_path, html_path = build_report(runs, out, warn=warnings.append)
    return csv_path.read_text(), html_path.read_text(encoding="utf-8"), warnings


# --- paths from a results file stay inside the run folder ------------------------------------------------


def test_run_card_with_relative_traversal_is_not_embedded(tmp_path, secret):
    run = tmp_path / "runs" / "run-a"
    run.mkdir(parents=True)
    near = os.path.relpath(secret, run)  # ../../outside/secret.json
    deep = "../" * 30 + str(secret).lstrip("/")  # far past the root, like ../../../../etc/passwd
    make_run(run, [row("ok"), row("near", run_card=near), row("deep", run_card=deep),
                   row("inner", run_card="cards/../../run-a/../../outside/secret.json")])
    report_csv, html, warnings = build([run], tmp_path / "rep")
    assert SECRET not in html and SECRET not in report_csv
    assert "card of ok" in html  # the card inside the run is shown
    assert len(warnings) == 3 and all("outside the run folder" in w and "not read" in w for w in warnings)
    assert any("'near'" in w and near in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert "Warnings" in html and "outside the run folder" in html
    cards = pd.read_csv(tmp_path / "rep" / "report.csv").set_index("row_id")["run_card"]
    assert (tmp_path / "rep" / cards["ok"]).is_file() and cards[["near", "deep", "inner"]].isna().all()


def test_absolute_run_card_is_not_embedded_and_warns_on_stderr(tmp_path, secret, capsys):
    run = make_run(tmp_path / "run", [row("ok"), row("abs", run_card=str(secret)),
                                      row("etc", run_card="/etc/passwd")])
    _, html_path = build_report([run], tmp_path / "rep")  # default warning sink: stderr
    html = html_path.read_text(encoding="utf-8")
    assert SECRET not in html and "root:" not in html
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("warning: run card of row") for line in err)
    assert all("is an absolute path" in line for line in err)


def test_symlinks_inside_the_run_folder_pointing_outside_are_refused(tmp_path, secret):
    run = make_run(tmp_path / "run", [row("linked"), row("dirlinked", run_card="shared/card.json"), row("ok")])
    (run / "cards" / "linked.json").unlink()
    (run / "cards" / "linked.json").symlink_to(secret)  # a file symlink
    (run / "shared").symlink_to(secret.parent, target_is_directory=True)  # a folder symlink
    shutil.copy(secret, secret.parent / "card.json")
    # samples: a symlink to a real samples file outside, whose prompt must not appear
    outside_samples = add_samples(tmp_path / "elsewhere", "x", [f"prompt {SECRET}"], [3])
    (run / "samples").mkdir()
    (run / "samples" / "ok.safetensors").symlink_to(outside_samples)
    report_csv, html, warnings = build([run], tmp_path / "rep")
    assert SECRET not in html and SECRET not in report_csv
    assert "card of ok" in html and "<h2>Samples</h2>" not in html
    assert len(warnings) == 3 and all("resolves outside the run folder" in w for w in warnings)
    assert any(w.startswith("samples of row 'ok'") for w in warnings)
    # a symlink that stays inside the run folder is fine
    (run / "cards" / "linked.json").unlink()
    (run / "cards" / "linked.json").symlink_to(run / "cards" / "ok.json")
    _, html, warnings = build([run], tmp_path / "rep2")
    assert len(warnings) == 2 and html.count("card of ok") == 2


def test_results_csv_symlinked_outside_the_run_is_refused(tmp_path):
    elsewhere = make_run(tmp_path / "elsewhere", [row("x")])
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").symlink_to(elsewhere / "results.csv")
    with pytest.raises(ReportError, match="results.csv resolves outside the run folder: not read"):
        build_report([run], tmp_path / "rep")


def test_row_id_cannot_steer_the_samples_path_out_of_the_run(tmp_path):
    outside = add_samples(tmp_path / "elsewhere" / "samples", "leak", [f"prompt {SECRET}"], [1])
    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    rel = os.path.relpath(outside.with_suffix(""), run / "samples")  # samples/<row_id>.safetensors → outside
    make_run(run, [row(rel, run_card="")], cards=False)
    _, html, warnings = build([run], tmp_path / "rep")
    assert SECRET not in html and len(warnings) == 1 and "outside the run folder" in warnings[0]


def test_corrupt_cards_and_samples_are_skipped_with_a_warning_naming_the_file(tmp_path):
    run = make_run(tmp_path / "run", [row("ok"), row("badjson"), row("latin1"), row("badsamples")])
    (run / "cards" / "badjson.json").write_text('{"row_id": "badjson", "trunc')
    (run / "cards" / "latin1.json").write_bytes(b'{"caf\xe9": 1}')
    add_samples(run, "ok", ["a prompt"], [0])
    (run / "samples" / "badsamples.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    _, html, warnings = build([run], tmp_path / "rep")
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert any("cards/badjson.json is not a readable JSON file" in w for w in warnings)
    assert any("cards/latin1.json is not a readable JSON file" in w for w in warnings)
    assert any("samples/badsamples.safetensors is unreadable" in w for w in warnings)
    assert "trunc" not in html and "card of ok" in html and "data:image/gif;base64," in html


# --- bidirectional controls -----------------------------------------------------------------------------


def _bidi_run(tmp_path: Path) -> Path:
    row_id = f"tmd{RLO}-s2"
    run = make_run(tmp_path / f"run{RLO}x", [row(row_id, method=f"tmd{RLO}", teacher=f"shapes{RLO}",
                                                 **{f"acc_{RLO}col": 0.5}), row("plain")])
    card = run / "cards" / f"{row_id}.json"
    card.write_text(f'{{"note": "raw {RLO} in a card"}}', encoding="utf-8")
    add_samples(run, row_id, [f"a cat {RLO}sitting", "שלום world"], [1234, 5678])
    add_samples(run, "plain", [f"a cat {RLO}sitting", "שלום world"], [1234, 5678])
    return run


def test_bidi_controls_are_never_emitted_raw(tmp_path):
    run = _bidi_run(tmp_path)
    (run / "cards" / "plain.json").write_text(json.dumps({"note": f"all {BIDI_CONTROLS} controls"}, ensure_ascii=False),
                                              encoding="utf-8")  # every control, in one string
    _, html, _ = build([run], tmp_path / "rep")
    assert not any(c in html for c in BIDI_CONTROLS)
    assert "a cat [U+202E]sitting (1234)" in html and "raw [U+202E] in a card" in html
    assert "[U+202A][U+202B][U+202C][U+202D][U+202E][U+2066][U+2067][U+2068][U+2069][U+200E][U+200F][U+061C]" in html
    assert "acc_[U+202E]col" in html and "run[U+202E]x" in html
    # right-to-left text (no control needed) is isolated in <bdi>
    assert "<bdi>שלום world</bdi>" in html


def _char_lefts(page, selector: str, needle: str):
    """The x of each character of the first occurrence of ``needle`` in a text node under ``selector``."""
    return page.evaluate("""([selector, needle]) => {
      const walker = document.createTreeWalker(document.querySelector(selector), NodeFilter.SHOW_TEXT);
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const i = n.data.indexOf(needle);
        if (i < 0) continue;
        const xs = [];
        for (let k = i; k < i + needle.length; k++) {
          const r = document.createRange(); r.setStart(n, k); r.setEnd(n, k + 1);
          xs.push(r.getBoundingClientRect().left);
        }
        return xs;
      }
      return null;
    }""", [selector, needle])


def _chromium() -> str:
    from conftest import chromium

    return chromium()


def test_bidi_override_in_a_prompt_does_not_reorder_the_page_in_a_real_browser(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    _, html_path = build_report([_bidi_run(tmp_path)], tmp_path / "rep", warn=lambda m: None)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        # the measurement detects reordering: an unisolated U+202E reverses the text after it
        page.set_content(f"<p id='probe'>a cat {RLO}sitting (1234). Teacher</p>")
        xs = _char_lefts(page, "#probe", "1234")
        assert xs == sorted(xs, reverse=True) and xs[0] > xs[-1]
        page.goto(html_path.as_uri())
        page.wait_for_load_state("load")
        cell = page.locator("table.samples td.prompt").first
        assert cell.inner_text() == "a cat [U+202E]sitting (1234)"
        for needle in ("sitting", "1234"):  # the prompt's own text and the seed after it, left to right
            xs = _char_lefts(page, "table.samples td.prompt", needle)
            assert xs == sorted(xs) and xs[0] < xs[-1], (needle, xs)
        # the run name and teacher (with U+202E) in the page's first note: the text after them is in order
        for needle in ("Teacher", "Quality"):
            xs = _char_lefts(page, "p.note", needle)
            assert xs == sorted(xs) and xs[0] < xs[-1], (needle, xs)
        # the next row's prompt (right-to-left text, isolated) leaves its seed after it
        second = page.locator("table.samples td.prompt").nth(1)
        assert second.inner_text() == "שלום world (5678)"
        xs = _char_lefts(page, "table.samples tbody tr:nth-child(2) td.prompt", "5678")
        assert xs == sorted(xs) and xs[0] < xs[-1]
        browser.close()


# --- malformed results.csv: one bounded line naming the file ---------------------------------------------

GOOD_HEADER = "row_id,method,teacher,latency_total_s,effective_nfe\n"


@pytest.mark.parametrize("content,message", [
    (b"", "empty file, no header row"),
    (b"\n\n  \n", "empty file, no header row"),
    (b"row_id,method,latency_total_s\nx,y,1\n", "missing required columns teacher, effective_nfe"),
    (b"a,b\n1,2\n", "missing required columns row_id, method, teacher, latency_total_s, effective_nfe"),
    (GOOD_HEADER.encode() + b"x,m,t,1,2\ny,m,t\n", r"results.csv:3: 3 fields, the header has 5"),
    (GOOD_HEADER.encode() + b"x,m,t,1,2,extra\n", r"results.csv:2: 6 fields, the header has 5"),
    (GOOD_HEADER.encode(), "no result rows"),
    (GOOD_HEADER.encode() + b"x,m,t,fast,2\n", r"results.csv:2: latency_total_s is 'fast', not a number"),
    (GOOD_HEADER.encode() + b" ,m,t,1,2\n", r"results.csv:2: empty row_id"),
    (GOOD_HEADER.encode() + b'x,"m"oops,t,1,2\n', r"results.csv:2: not valid CSV"),
    (b"row_id,row_id,method,teacher,latency_total_s,effective_nfe\n", "column 'row_id' appears twice"),
    (GOOD_HEADER.encode() + "x,caf\u00e9,t,1,2\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset"),
])
def test_malformed_results_csv_is_one_line_naming_the_file(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_bytes(content)
    with pytest.raises(ReportError, match=message) as e:
        build_report([run], tmp_path / "rep")
    text = str(e.value)
    assert "\n" not in text and str(run / "results.csv") in text and len(text) < 600


def test_report_cli_on_a_truncated_row_is_exit_2_without_traceback(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_text(GOOD_HEADER + "x,m,t,1,2\ny,m\n")
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "results.csv:3: 2 fields, the header has 5" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("where", ["value", "header", "metric"])
def test_a_huge_field_is_never_echoed_whole(tmp_path, where):
    huge = "Z" * 100_000
    run = tmp_path / "run"
    run.mkdir()
    metric = None
    if where == "value":
        (run / "results.csv").write_text(GOOD_HEADER + f"x,m,t,{huge},2\n")
    elif where == "header":
        (run / "results.csv").write_text(f"row_id,{huge}\nx,1\n")
    else:
        make_run(run, [row("x")])
        metric = huge
    with pytest.raises(ReportError) as e:
        build_report([run], tmp_path / "rep", metric=metric)
    assert "\n" not in str(e.value) and len(str(e.value)) < 800 and "ZZZ…" in str(e.value)


def test_non_numeric_quality_metric_is_a_report_error(tmp_path):
    run = make_run(tmp_path / "run", [row("a", psnr_teacher="n/a"), row("b", psnr_teacher="30")])
    with pytest.raises(ReportError, match=r"quality metric 'psnr_teacher' is not a number in run run, row 'a': 'n/a'"):
        build_report([run], tmp_path / "rep", metric="psnr_teacher")
    # without --metric, a text column is not a quality axis: the report shows speed only
    _, html, _ = build([run], tmp_path / "rep")
    assert "No quality metric was computed" in html


def test_report_columns_in_a_results_file_are_replaced_with_a_warning(tmp_path):
    run = make_run(tmp_path / "run", [row("a", run="evil", label="<b>x</b>", pareto_latency="maybe")])
    _, html, warnings = build([run], tmp_path / "rep")
    assert len(warnings) == 1 and "run, label, pareto_latency are the report's own" in warnings[0]
    assert "evil" not in html


# --- property-based: the results-table reader ------------------------------------------------------------

_cells = st.one_of(st.sampled_from(list(REQUIRED_COLUMNS) + ["", "1", "0.5", "nan", "True", "-1e309", '"', "cards/x.json",
                                                            "../../etc/passwd", RLO]), st.text(max_size=12))
_raw_rows = st.lists(st.lists(_cells, min_size=1, max_size=7), min_size=0, max_size=5)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _check_error(e: ReportError, path: Path):
    text = str(e)
    assert "\n" not in text and len(text) < 1000 and str(path) in text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda s: s.encode("utf-8"))))
def test_arbitrary_bytes_as_results_csv_load_or_raise_report_error(scratch, data):
    path = scratch / "results.csv"
    path.write_bytes(data)
    try:
        df = read_results_table(path)
    except ReportError as e:
        _check_error(e, path)
    else:
        assert set(REQUIRED_COLUMNS) <= set(df.columns) and len(df) > 0


@settings(max_examples=150, deadline=None)
@given(header=st.just(list(REQUIRED_COLUMNS)) | st.lists(_cells, min_size=1, max_size=7), body=_raw_rows,
       sep=st.sampled_from(["\n", "\r\n", "\r"]))
def test_arbitrary_tables_as_results_csv_load_or_raise_report_error(scratch, header, body, sep):
    """Cells joined without quoting (so quotes, commas and newlines in them make malformed CSV)."""
    run = scratch / "run"
    run.mkdir(exist_ok=True)
    path = run / "results.csv"
    path.write_bytes(sep.join(",".join(r) for r in [header, *body]).encode("utf-8", "surrogatepass"))
    try:
        df = load_runs([run], warn=lambda m: None)
    except ReportError as e:
        _check_error(e, path)
    else:
        assert len(df) > 0 and all(isinstance(i, str) and i.strip() for i in df["row_id"])


_row_ids = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.none())


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(_row_ids, st.text(max_size=10), _numbers, _numbers,
                               st.one_of(st.none(), st.text(max_size=10), st.floats())),
                     min_size=1, max_size=6),
       writer=st.sampled_from(["csv", "pandas"]))
def test_valid_tables_round_trip_their_row_ids(scratch, rows, writer):
    """A correctly written table loads with its row ids (and methods) as written, and report.csv — read
    back with the same reader — keeps them; the report is built whatever the values are."""
    if writer == "pandas":  # what `tmd-bench evaluate` uses; it writes a bare \r unquoted, so no \r here
        rows = [tuple(v.replace("\r", "") if isinstance(v, str) else v for v in r) for r in rows]
        rows = [r for r in rows if r[0].strip()]
        if not rows:
            return
    run = scratch / "rt"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    table = [{"row_id": i, "method": m, "teacher": "t", "latency_total_s": lat, "effective_nfe": nfe,
              "psnr_teacher": q} for i, m, lat, nfe, q in rows]
    if writer == "csv":
        with open(run / "results.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in table])
    else:
        pd.DataFrame(table).to_csv(run / "results.csv", index=False)
    df = load_runs([run], warn=lambda m: None)
    assert list(df["row_id"]) == [r[0] for r in rows]
    assert list(df["method"]) == [r[1] for r in rows]
    csv_path, html_path = build_report([run], scratch / "rt-rep", warn=lambda m: None)
    if not any("\r" in str(v) for r in rows for v in r):  # report.csv is written by pandas too
        assert list(read_results_table(csv_path)["row_id"]) == [r[0] for r in rows]
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# --- `tmd-bench gap`: per-clip CSVs ----------------------------------------------------------------------


def _per_clip(run: Path, row_id: str, content: bytes) -> Path:
    (run / "per_clip").mkdir(parents=True, exist_ok=True)
    path = run / "per_clip" / f"{row_id}.csv"
    path.write_bytes(content)
    return path


GOOD_CLIPS = b"prompt,seed,all_correct\np,0,True\nq,1,False\n"


@pytest.mark.parametrize("content,message", [
    (b"", "empty file, no header row"),
    (b"prompt,seed,all_correct\np,0,True\nq,1\n", r"row.csv:3: 2 fields, the header has 3"),
    (b"prompt,seed,all_correct\np,0,True,x\n", r"row.csv:2: 4 fields, the header has 3"),
    (b"prompt,seed,all_correct\n\xff\xfe,0,True\n", r"not UTF-8 text"),
    (b'prompt,seed,all_correct\n"p"x,0,True\n', r"row.csv:2: not valid CSV"),
    (b"prompt,seed,all_correct\np,zero,True\n", r"row.csv:2: seed is 'zero', not an integer"),
    (b"prompt,seed,all_correct\np,0,\n", r"row.csv:2: all_correct is '', not a number or True/False"),
    (b"prompt,all_correct\np,True\n", r"row.csv: no column seed; columns: prompt, all_correct"),
])
def test_corrupt_per_clip_csv_is_one_line_naming_the_file(tmp_path, content, message):
    run = tmp_path / "run"
    _per_clip(run, "base", GOOD_CLIPS)
    path = _per_clip(run, "row", content)
    with pytest.raises(GapError, match=message) as e:
        paired_gap([run], "base", ["row"])
    assert "\n" not in str(e.value) and str(path) in str(e.value) and len(str(e.value)) < 600
    r = CliRunner().invoke(app, ["gap", str(run), "--baseline", "base", "--rows", "row"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "row.csv" in r.output


def test_gap_bounds_echoed_prompts_and_refuses_per_clip_links_outside(tmp_path, secret):
    huge = "P" * 100_000
    run = tmp_path / "run"
    _per_clip(run, "base", f"prompt,seed,all_correct\n{huge},0,True\n".encode())
    _per_clip(tmp_path / "again", "base", f"prompt,seed,all_correct\n{huge},0,True\n".encode())
    with pytest.raises(GapError, match="appears twice") as e:
        paired_gap([run, tmp_path / "again"], "base", ["base"])
    assert len(str(e.value)) < 1200 and "PPP…" in str(e.value)
    (run / "per_clip" / "row.csv").symlink_to(secret)
    with pytest.raises(GapError, match="row.csv resolves outside the run folder: not read") as e:
        paired_gap([run], "base", ["row"])
    assert SECRET not in str(e.value)
