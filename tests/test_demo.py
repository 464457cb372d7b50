"""``chanflow demo``: the real command end to end, and its image server on a real socket."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from chanflow._demo import MISSING
from chanflow._demo._compare import APPROACHES, Measured
from chanflow._demo._flow import read_dead_letters
from chanflow._demo._images import SIZE, THUMBNAIL, Download, generate, resize, thumbnail_name
from chanflow._demo._plan import (
    FETCH,
    RESIZE,
    Kind,
    Settings,
    expected_failures,
    expected_successes,
    kind_of,
)
from chanflow._demo._server import ImageServer
from chanflow._demo._verdict import (
    CHART_MISSING,
    RECORD_NAME,
    chart_line,
    draw_comparison,
    verdict_lines,
)
from helpers import exited_within, wait_until

# What one real `chanflow demo` measured (its comparison.json; see tests/data/README.md).
RECORDED_COMPARISON = Path(__file__).with_name("data") / "demo_comparison.json"

# Seconds the runs may take here, where other test runs may share the two cores; the
# designed times are about 8 s with --quick and 11 s with --images 14.
BUDGET = {"quick": 30.0, "images": 40.0}


def demo(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -W error -m chanflow demo ARGS``; the finished process and its seconds."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "chanflow", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


def check_outputs(out: Path, stdout: str, settings: Settings) -> None:
    """Thumbnails and dead letters are exactly the plan's, and stdout shows both tables."""
    ids = range(settings.images)
    written = sorted(path.name for path in (out / "thumbnails").iterdir())
    assert written == sorted(thumbnail_name(image_id) for image_id in expected_successes(ids))
    with Image.open(out / "thumbnails" / written[0]) as thumbnail:
        assert thumbnail.size == THUMBNAIL
    letters = read_dead_letters(out / "dead_letters.jsonl")
    assert sorted(letters) == sorted(expected_failures(ids).items())  # each exactly once
    assert {stage for _, stage in letters} == {FETCH, RESIZE}

    assert "Pipeline report" in stdout
    assert re.search(r"^stage +in +out +failed +retried +dead +busy +latency$", stdout, re.M)
    check_comparison(out, stdout, settings)


def check_comparison(out: Path, stdout: str, settings: Settings) -> None:
    """The comparison's table, its answer, its record and its chart are all there."""
    compared = range(settings.compared)
    planned = (len(expected_successes(compared)), len(expected_failures(compared)))
    assert f"The first {settings.compared} images, four ways" in stdout
    for approach in APPROACHES:
        row = re.search(rf"│ {approach} +│(.*)│ +(\d+) │ +(\d+) │$", stdout, re.M)
        assert row is not None, f"no row for {approach} in:\n{stdout}"
        assert (int(row.group(2)), int(row.group(3))) == planned
    assert "Which is better, and why (from the numbers above):" in stdout
    assert re.search(r"^  Better here: the (worker pool|pipeline), ", stdout, re.M)
    record = json.loads((out / RECORD_NAME).read_text())
    assert [row["approach"] for row in record["rows"]] == list(APPROACHES)
    assert f"Chart:        {out / 'comparison.svg'} and comparison.png" in stdout
    assert svg_texts(out / "comparison.svg")  # drawn next to the thumbnails
    assert png_size(out / "comparison.png")[0] > 0


@pytest.mark.timeout(90)
def test_quick_demo_writes_the_planned_thumbnails_and_dead_letters(tmp_path: Path) -> None:
    done, seconds = demo("--quick", "--out", str(tmp_path), timeout=80)

    assert done.returncode == 0, done.stderr
    check_outputs(tmp_path, done.stdout, Settings.choose(300, quick=True))
    assert str(tmp_path / "thumbnails") in done.stdout
    assert seconds < BUDGET["quick"]


@pytest.mark.timeout(90)
def test_compare_runs_only_the_comparison_and_draws_its_chart(tmp_path: Path) -> None:
    done, _ = demo("--quick", "--compare", "--out", str(tmp_path), timeout=80)

    assert done.returncode == 0, done.stderr
    assert "Pipeline report" not in done.stdout
    check_comparison(tmp_path, done.stdout, Settings.choose(300, quick=True))


@pytest.mark.timeout(120)
def test_images_sets_how_many_images_are_served_and_compared(tmp_path: Path) -> None:
    done, seconds = demo("--images", "14", "--out", str(tmp_path), timeout=110)

    assert done.returncode == 0, done.stderr
    settings = Settings.choose(14, quick=False)
    assert (settings.images, settings.compared) == (14, 14)
    check_outputs(tmp_path, done.stdout, settings)
    assert "14 images served by http://127.0.0.1:" in done.stdout
    assert seconds < BUDGET["images"]


def test_the_demo_says_what_it_needs_when_httpx_is_missing() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"  # makes `import httpx` fail
        "from chanflow._demo import run_demo; sys.exit(run_demo(quick=True))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (2, "", MISSING + "\n")


def live_processes() -> dict[int, tuple[int, int]]:
    """Every live (not zombie) process: pid -> (parent pid, process group), from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, parent, group = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z":
            found[int(entry)] = (int(parent), int(group))
    return found


def descendants(pid: int) -> set[int]:
    """The live descendants of process ``pid``."""
    processes = live_processes()
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        children = [child for child, (ppid, _) in processes.items() if ppid == parent]
        found.update(children)
        pending.extend(children)
    return found


def leftovers(group: int, tree: set[int]) -> set[int]:
    """Processes of ``tree`` still alive, and any still in process group ``group``."""
    processes = live_processes()
    return {pid for pid in tree if pid in processes} | {
        pid for pid, (_, pgid) in processes.items() if pgid == group
    }


def in_the_pipeline(demo_pid: int, out: Path) -> bool:
    """The demo's pipeline runs, its worker processes started: a thumbnail is written.

    (Not earlier: a Ctrl-C while a process pool starts makes chanflow print tracebacks.)
    """
    thumbnails = out / "thumbnails"
    return thumbnails.is_dir() and any(thumbnails.iterdir())


def in_the_comparison(demo_pid: int, out: Path) -> bool:
    """The comparison's pipeline runs: the measured child has started worker processes."""
    measurers = [
        pid
        for pid in descendants(demo_pid)
        if b"chanflow._demo._compare" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return bool(measurers) and len(descendants(measurers[0])) >= 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("moment", [in_the_pipeline, in_the_comparison])
def test_ctrl_c_stops_the_demo_promptly_and_leaves_no_process(
    tmp_path: Path, moment: Callable[[int, Path], bool]
) -> None:
    demo = ["-X", "faulthandler", "-m", "chanflow", "demo", "--quick"]
    with subprocess.Popen(
        [sys.executable, *demo, "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        try:
            wait_until(lambda: moment(child.pid, tmp_path), timeout=30.0)
            tree = descendants(child.pid)
            os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            _, stderr = exited_within(child, 5.0, "Ctrl-C")
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    assert child.returncode == 130, stderr
    assert "chanflow demo: interrupted" in stderr
    assert "Traceback" not in stderr
    wait_until(lambda: not leftovers(child.pid, tree), timeout=5.0)


MEASURE = """
import json, subprocess, sys, time
from chanflow._demo._measure import become_subreaper, measure

def work():
    # A grandchild that outlives the child: the subreaper must wait for it and count it.
    subprocess.Popen([sys.executable, "-c", "sum(range(60_000_000))"])
    data = b"x" * (80 << 20)
    time.sleep(0.2)  # hold the 80 MB across several of the 20 ms samples
    return {"size": len(data)}

become_subreaper()
usage = measure(work, limit=30)
print(json.dumps([usage.status, usage.result, usage.cpu, usage.peak_kib]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper and /proc")
def test_measure_counts_the_cpu_and_memory_of_everything_the_work_started() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=30, check=True
    )
    status, result, cpu, peak_kib = json.loads(done.stdout)
    assert (status, result) == (0, {"size": 80 << 20})
    assert cpu > 0.4  # the grandchild's sum, finished after the child had exited
    assert peak_kib > 80 * 1024


# -- the server on its own ----------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer(20) as serving:
        yield serving


def test_the_plan_covers_every_kind_in_the_first_sixteen_images() -> None:
    kinds = {kind_of(image_id) for image_id in range(16)}
    assert kinds == set(Kind)
    assert expected_failures(range(16)) == {3: FETCH, 5: FETCH, 13: RESIZE}
    assert expected_successes(range(16)) == set(range(16)) - {3, 5, 13}


def test_server_serves_a_generated_image(server: ImageServer) -> None:
    response = httpx.get(server.url("a", 0), timeout=5)

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == generate(0)
    assert 100_000 < len(response.content) < 1_000_000
    assert resize(Download(0, response.content)).image_id == 0
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == SIZE


def test_server_answers_500_always_for_a_failing_image(server: ImageServer) -> None:
    statuses = [httpx.get(server.url("a", 3), timeout=5).status_code for _ in range(3)]
    assert statuses == [500, 500, 500]


def test_server_answers_500_once_per_run_for_a_flaky_image(server: ImageServer) -> None:
    first_run = [httpx.get(server.url("a", 8), timeout=5).status_code for _ in range(2)]
    second_run = [httpx.get(server.url("b", 8), timeout=5).status_code for _ in range(2)]
    assert first_run == second_run == [500, 200]


def test_server_answers_a_slow_image_late(server: ImageServer) -> None:
    started = time.monotonic()
    response = httpx.get(server.url("a", 6), timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.1


def test_server_serves_a_truncated_image_that_resize_refuses(server: ImageServer) -> None:
    response = httpx.get(server.url("a", 13), timeout=5)
    assert response.status_code == 200
    with pytest.raises(OSError, match="truncated"):
        resize(Download(13, response.content))


@pytest.mark.parametrize("path", ["/a/20.jpg", "/a/x.jpg", "/nothing"])
def test_server_answers_404_outside_its_images(server: ImageServer, path: str) -> None:
    assert httpx.get(server.base_url + path, timeout=5).status_code == 404


def test_closing_the_server_releases_a_hanging_request() -> None:
    threads_before = set(threading.enumerate())
    outcome: list[BaseException] = []
    server = ImageServer(20).start()

    def fetch() -> None:
        try:
            httpx.get(server.url("a", 5), timeout=30)
        except httpx.HTTPError as error:
            outcome.append(error)

    client = threading.Thread(target=fetch)
    client.start()
    wait_until(lambda: server.requests[Kind.HANGING] == 1)
    started = time.monotonic()
    server.close()
    client.join(5)

    assert time.monotonic() - started < 2.0
    assert not client.is_alive()
    assert [type(error) for error in outcome] == [httpx.RemoteProtocolError]
    assert set(threading.enumerate()) <= threads_before
    server.close()  # idempotent


def test_a_server_never_started_closes_at_once() -> None:
    ImageServer(1).close()


def test_dead_letters_read_back_with_their_stage(tmp_path: Path) -> None:
    path = tmp_path / "dead_letters.jsonl"
    records = [
        {"job": "'http://127.0.0.1:1/pipeline/3.jpg'", "stage": FETCH},
        {"job": "Download(image 13, 1000 bytes)", "stage": RESIZE},
    ]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert read_dead_letters(path) == [(3, FETCH), (13, RESIZE)]
    assert read_dead_letters(tmp_path / "none.jsonl") == []


# -- the comparison's answer and chart, from one recorded run ---------------------------------


def svg_texts(path: Path) -> list[str]:
    """Every text of an SVG, which must parse as XML."""
    svg = "{http://www.w3.org/2000/svg}"
    root = ET.parse(path).getroot()
    assert root.tag == f"{svg}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{svg}text")]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, which must start as one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def recorded_rows() -> list[Measured]:
    return [Measured(**row) for row in json.loads(RECORDED_COMPARISON.read_text())["rows"]]


def test_the_verdict_names_the_better_way_and_why_from_the_numbers() -> None:
    rows = recorded_rows()
    settings = Settings.choose(300, quick=False)
    lines = verdict_lines(rows, settings)

    text = " ".join(line.strip() for line in lines)  # as one paragraph: lines wrap anywhere
    loop = next(row for row in rows if row.approach == "sequential")
    fastest = min((row for row in rows if row is not loop), key=lambda row: row.wall)
    assert lines[0] == "Which is better, and why (from the numbers above):"
    assert f"Speed: the {fastest.approach} is fastest, {fastest.wall:.2f} s" in text
    assert f"sequential loop's {loop.wall:.2f} s" in text
    assert "1.5 s of attempts at the one that never answers" in text  # 3 attempts of 0.5 s
    assert "Fan-out holds every image at once" in text
    assert re.search(r"Better here: the (worker pool|pipeline), \d+\.\dx the loop's", text)
    assert all(len(line) <= 88 for line in lines)


def test_no_verdict_without_the_loop_to_compare_with() -> None:
    rows = [row for row in recorded_rows() if row.approach != "sequential"]
    assert verdict_lines(rows, Settings.choose(300, quick=False)) == []


def test_the_comparison_chart_is_drawn_from_its_record(tmp_path: Path) -> None:
    record = tmp_path / RECORD_NAME
    shutil.copy(RECORDED_COMPARISON, record)
    svg, png = draw_comparison(record)

    assert (svg, png) == (tmp_path / "comparison.svg", tmp_path / "comparison.png")
    texts = svg_texts(svg)
    compared = json.loads(record.read_text())["compared"]
    assert f"chanflow demo: the first {compared} images, four ways" in texts
    for label in ("sequential (a plain loop)", "fan-out (a task per image)", "pipeline"):
        assert any(label in text for text in texts)
    assert any("(baseline)" in text for text in texts)
    assert any("Peak memory" in text for text in texts)
    width, height = png_size(png)
    assert width >= 1000 and height >= 400


def test_without_matplotlib_the_demo_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    line = chart_line(recorded_rows(), Settings.choose(300, quick=False), tmp_path)

    assert line == f"Chart:        {CHART_MISSING}; the numbers are in {tmp_path / RECORD_NAME}"
    assert "pip install 'chanflow[demo]'" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == [RECORD_NAME]
