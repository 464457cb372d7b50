"""The example programs run, exit 0 within their time budget and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUDGET = 5.0  # seconds each example may take (they take well under a second)


def run_example(name: str, *args: str) -> str:
    """Run examples/<name> in a fresh interpreter with warnings as errors; its stdout."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr}"
    assert done.stderr == "", f"{name} wrote to stderr:\n{done.stderr}"
    assert elapsed < BUDGET, f"{name} took {elapsed:.1f} s (budget {BUDGET} s)"
    return done.stdout


def sections(output: str) -> dict[str, list[str]]:
    """Split the output at the numbered headings ("1. ...", "2. ..."): lines per number."""
    parts: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        heading = re.match(r"(\d)\. ", line)
        if heading:
            current = parts.setdefault(heading.group(1), [])
        current.append(line)
    return parts


def job_lines(lines: list[str]) -> dict[int, str]:
    """The "Job N completed/failed" line of each job; fails if a job reports twice."""
    found: dict[int, str] = {}
    for line in lines:
        match = re.match(r"Job (\d+) (completed|failed)", line)
        if match:
            job = int(match.group(1))
            assert job not in found, f"job {job} reported twice: {found[job]!r}, {line!r}"
            found[job] = line
    return found


def test_worker_pool_example() -> None:
    parts = sections(run_example("worker_pool.py"))
    assert sorted(parts) == ["1", "2", "3"]

    pooled = job_lines(parts["1"])
    assert sorted(pooled) == list(range(1, 10)), "every job comes out exactly once"
    for job in (4, 8):  # corrupt: ValueError is not retried
        assert pooled[job] == (
            f"Job {job} failed: ValueError: image{job}.png is corrupt (attempts 1)"
        )
    assert pooled[5] == "Job 5 completed: Processed: image5.png (attempts 2)"  # flaky, retried
    for job in (1, 2, 3, 6, 7, 9):
        assert pooled[job] == f"Job {job} completed: Processed: image{job}.png (attempts 1)"
    assert "summary: 7 done, 2 failed, 9 jobs" in parts["1"]
    assert any(
        line.startswith("stats: submitted=9 completed=7 failed=2 retried=1 in_flight=0 ")
        for line in parts["1"]
    ), parts["1"]

    mapped = [line for line in parts["2"] if line.startswith("map ")]
    assert mapped == [
        "map -> Processed: image1.png",
        "map -> Processed: image2.png",
        "map -> Processed: image3.png",
        "map raised ValueError: image4.png is corrupt",
    ]

    raw = job_lines(parts["3"])
    assert sorted(raw) == list(range(1, 10))
    assert {job for job, line in raw.items() if "failed" in line} == {4, 5, 8}
    assert "summary: 6 done, 3 failed, 9 jobs" in parts["3"]


def test_fan_out_fan_in_example() -> None:
    parts = sections(run_example("fan_out_fan_in.py"))
    assert sorted(parts) == ["1", "2"]
    for lines in parts.values():
        processed = sorted(line for line in lines if line.startswith("Result: "))
        assert processed == [f"Result: image{i}.png resized" for i in (1, 2, 3, 5, 6)]
        errors = [line for line in lines if line.startswith("Error: ")]
        assert errors == ["Error: image4.png: ValueError('image4.png: corrupt header')"]
        assert "fan-in: 5 processed, 1 failed" in lines
        assert sum(line.endswith("processing image4.png") for line in lines) == 1


def test_demo() -> None:
    parts = sections(run_example("demo.py"))
    assert sorted(parts) == ["3", "4", "5"]  # the first section is headed "1-2."
    assert "   [4, 9, 16]" in parts["4"]
    pool = parts["5"]
    assert "   values: [2, 4, 6, 8, 10, 12, 16, 18, 20, 22, 24]" in pool
    assert "   dead letter: job 7 after 2 attempts: job 7: connection reset" in pool
    assert any(line.startswith("   stats: 11 completed, 1 failed, 3 retried") for line in pool)


def test_image_resize_example(tmp_path: Path) -> None:
    parts = sections(run_example("image_resize.py", "12", str(tmp_path)))
    assert sorted(parts) == ["1", "2", "3"]
    assert parts["1"][0].startswith("1. generated 12 images of 1200x900")
    rows = [line.split() for line in parts["2"][1:]]
    assert [row[0] for row in rows] == ["plain", "fan-out,", "WorkerPool(process,"]
    assert all(row[-1] == "images/s" for row in rows)
    for way in ("loop", "fan-out", "pool"):  # the example checked every size itself
        assert len(list((tmp_path / way).glob("*.jpg"))) == 12
    assert parts["3"][0].startswith("3. speedup over the loop: loop 1.00x, fan-out ")


def test_pipeline_example() -> None:
    parts = sections(run_example("pipeline.py"))
    assert sorted(parts) == ["1", "2", "3"]
    assert parts["1"][1:] == ["4", "9", "16"]
    assert parts["3"][1:] == ["4", "9", "16"]
    mixed = parts["2"]
    assert "stored 21 items in 5 batches" in mixed
    assert "dead letter from stage 'store': cannot store [8, 10, 11, 13, 14]: it holds 13" in mixed
    assert any(line.startswith("digest") for line in mixed)
    assert any("bottleneck (*):" in line for line in mixed)


def test_fan_in_example() -> None:
    parts = sections(run_example("fan_in.py"))
    assert sorted(parts) == ["1", "2", "3"]
    for lines in (parts["1"], parts["2"]):
        processing = [re.fullmatch(r"   Worker ([123]) processing (\d+)", line) for line in lines]
        taken = sorted(int(match.group(2)) for match in processing if match)
        assert taken == [1, 2, 3, 4, 5], "each number reaches exactly one worker"
        results = sorted(int(line.split()[-1]) for line in lines if line.startswith("   Result: "))
        assert results == [2, 4, 6, 8, 10], "the merged channel delivers each result once"
        assert "   fan-in: 5 results, sum 30, sorted [2, 4, 6, 8, 10]" in lines
    javascript = parts["3"]
    assert "   Results: [2, 4, 6, 8, 10]" in javascript  # in input order, as Promise.all
    processed = sorted(line for line in javascript if " processed " in line)
    assert processed == [f"   Worker {i} processed {i}" for i in range(1, 6)]
    timing = next(line for line in javascript if "jobs of 0.1 s took" in line)
    took = re.search(r"took ([\d.]+) s together", timing)
    assert took is not None, timing
    assert float(took.group(1)) < 0.45, f"the five jobs did not run at once: {timing}"
