"""The benchmark charts (benchmarks/charts.py), drawn from numbers a real run measured.

tests/data/bench_results.json is a copy of a results file that ``benchmarks/run.py``
wrote (its samples thinned to keep it small; see tests/data/README.md): no benchmark
runs here, and no number is made up. Each section is drawn into a temporary
directory; the SVG must parse as XML and hold the section's title and every
contestant's name as text, the PNG must be a PNG of a sensible size.
"""

from __future__ import annotations

import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.append(str(BENCHMARKS))  # the benchmarks are scripts beside the package, not in it

import charts  # noqa: E402
from bench_channel import Contestant, Scenario  # noqa: E402

RECORDED = Path(__file__).with_name("data") / "bench_results.json"
SECTIONS = charts.load_results(RECORDED)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path: Path) -> list[str]:
    """Every text of the SVG (it must parse as XML), one string per text element."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's header (which must be a PNG's)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def contains(texts: list[str], wanted: str) -> bool:
    return any(wanted in text for text in texts)


Drawn = tuple[Path, dict[str, list[Path]]]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Drawn:
    """Every recorded section drawn once: the directory, and the files of each section."""
    directory = tmp_path_factory.mktemp("charts")
    written = {name: charts.render_section(name, s, directory) for name, s in SECTIONS.items()}
    return directory, written


def test_the_recorded_file_has_every_charted_section() -> None:
    expected = {"channel", "pool", "process", "pipeline", "retry", "executor", "scaling"}
    assert expected <= set(SECTIONS)
    for section in SECTIONS.values():
        assert section.mode == "full"
        assert all(row.samples for panel in section.panels for row in panel.rows)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_section_draws_a_valid_svg_and_png_with_its_labels(name: str, drawn: Drawn) -> None:
    directory, files = drawn
    section, written = SECTIONS[name], files[name]

    stems = charts.chart_stems(name, section, directory)
    assert sorted(written) == sorted(
        stem.with_suffix(s) for stem in stems for s in (".svg", ".png")
    )
    for stem in stems:
        texts = svg_texts(stem.with_suffix(".svg"))
        assert contains(texts, section.title)
        assert contains(texts, section.machine["cpu"])
        assert contains(texts, section.date)
        width, height = png_size(stem.with_suffix(".png"))
        assert width >= 1000 and 300 <= height <= 4000
    svgs = {stem.name: svg_texts(stem.with_suffix(".svg")) for stem in stems}
    everything = [text for texts in svgs.values() for text in texts]
    for panel in section.panels:
        assert contains(everything, panel.title)
        for row in panel.rows:
            assert contains(everything, row.name), f"{row.name!r} missing from {name}"


def test_a_bar_names_its_ratio_to_the_baseline(drawn: Drawn) -> None:
    p1 = next(panel for panel in SECTIONS["pool"].panels if panel.key == "P1")
    assert p1.baseline == "ThreadPoolExecutor(8).map"

    texts = svg_texts(drawn[0] / "pool.svg")
    assert contains(texts, "(baseline)")
    assert contains(texts, "x lower)")  # chanflow's map is cheaper than the executor's
    assert contains(texts, "log scale")  # 0.5 against 23 us a job: a log axis


def test_the_scaling_curves_are_labelled_with_durations_and_references(drawn: Drawn) -> None:
    duration = svg_texts(drawn[0] / "scaling-duration.svg")
    for tick in ("1 us", "100 us", "10 ms"):
        assert tick in duration
    assert contains(duration, "relative to the plain loop")
    assert contains(duration, "cores busy")
    workers = svg_texts(drawn[0] / "scaling-workers.svg")
    assert "1,000" in workers
    assert contains(workers, "ideal: 20 ms / workers")


def test_a_rerender_of_the_same_numbers_is_byte_for_byte_the_same(
    tmp_path: Path, drawn: Drawn
) -> None:
    charts.render_section("retry", SECTIONS["retry"], tmp_path)

    assert (tmp_path / "retry.svg").read_bytes() == (drawn[0] / "retry.svg").read_bytes()


def test_saving_a_section_keeps_the_others_and_reads_back(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    charts.save_results(results, {"pool": SECTIONS["pool"]})
    charts.save_results(results, {"retry": SECTIONS["retry"]})

    loaded = charts.load_results(results)
    assert set(loaded) == {"pool", "retry"}
    assert loaded["pool"] == SECTIONS["pool"]
    assert loaded["retry"] == SECTIONS["retry"]


def test_a_results_file_of_another_format_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    results.write_text('{"format": 99, "sections": {}}')
    with pytest.raises(ValueError, match="format 99"):
        charts.load_results(results)


def test_scenario_panels_bring_a_baseline_from_another_scenario() -> None:
    """Scenario 3 (batches) is measured against scenario 1's queue.Queue: both in its panel."""
    recorded = {panel.key: panel for panel in SECTIONS["channel"].panels}
    batches, queue = recorded["3"].rows[0], "queue.Queue(1024)"
    queue_samples = next(row.samples for row in recorded["1"].rows if row.name == queue)

    def unused(n: int) -> float:
        raise AssertionError("nothing is measured here")

    scenarios = [
        Scenario("1", "threads", 1, [Contestant(queue, unused)], ("1", queue)),
        Scenario("3", "batches", 1, [Contestant(batches.name, unused)], ("1", queue)),
    ]
    results = {("1", queue): queue_samples, ("3", batches.name): batches.samples}
    panels = charts.scenario_panels(scenarios, results, "us/item")

    assert [row.name for row in panels[1].rows] == [batches.name, queue]
    assert panels[1].baseline == queue
    assert [row.chanflow for row in panels[1].rows] == [True, False]


@pytest.mark.parametrize(
    ("name", "chanflow"),
    [
        ("chanflow.Channel(1024)", True),
        ("Channel(1024) send_many/recv_many(256)", True),
        ("WorkerPool(8, thread).map", True),
        ("PoolExecutor(8): submit(noop, i).result()", True),
        ("Pipeline: 3 x map(thread), defaults", True),
        ("middle map(spin, backend=process)", True),
        ("ThreadPoolExecutor(8).map", False),
        ("ProcessPoolExecutor(2).map (chunksize=1)", False),
        ("mpire.WorkerPool(2).map", False),
        ("multiprocessing.Pool(2).imap(chunksize=1000)", False),
        ("queue.Queue(1024)", False),
        ("pypeln: 3 x pl.thread.map(workers=1)", False),
    ],
)
def test_chanflow_contestants_are_known_by_name(name: str, chanflow: bool) -> None:
    assert charts.is_chanflow(name) is chanflow


def test_charts_only_draws_again_from_a_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import run

    results = tmp_path / "results.json"
    charts.save_results(results, {"retry": SECTIONS["retry"]})
    out = tmp_path / "charts"

    assert run.main(["--charts-only", "--results", str(results), "--charts", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["retry.png", "retry.svg"]
    assert "charts: 2 files" in capsys.readouterr().out
