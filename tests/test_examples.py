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


def until_blank(lines: list[str]) -> list[str]:
    """A section's lines before its first blank one (the last section of an example is
    followed by a blank line and "all done in ... s")."""
    return lines[: lines.index("")] if "" in lines else lines


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
    assert sorted(parts) == ["1", "2", "3", "4"]

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

    waited = until_blank(parts["4"])
    runs = "\n".join(waited[1:]).split("   Results: [2, 4, 6, 8, 10]")
    assert len(runs) == 3 and runs[2] == "", waited  # two runs, each with all 5 results
    for run in runs[:2]:
        processed = re.findall(r"Worker [123] processing job (\d)", run)
        assert sorted(processed) == ["1", "2", "3", "4", "5"], "each job reaches one worker"
    assert "results capacity 5: the workers finished before anyone read" in runs[0]
    assert (
        "results capacity 2: wg.wait(0.3) timed out, 2 results buffered, "
        "workers blocked sending (Go: deadlock)"
    ) in runs[1]


def test_fan_out_fan_in_example() -> None:
    parts = sections(run_example("fan_out_fan_in.py"))
    assert sorted(parts) == ["1", "2", "3"]
    for lines in parts.values():
        processed = sorted(line for line in lines if line.startswith("Result: "))
        assert processed == [f"Result: image{i}.png resized" for i in (1, 2, 3, 5, 6)]
        errors = [line for line in lines if line.startswith("Error: ")]
        assert errors == ["Error: image4.png: ValueError('image4.png: corrupt header')"]
        assert "fan-in: 5 processed, 1 failed" in lines
        assert sum(line.endswith("processing image4.png") for line in lines) == 1
    one_each = [line for line in parts["3"] if line.startswith(("Result: ", "Error: "))]
    assert one_each[3] == "Error: image4.png: ValueError('image4.png: corrupt header')"
    assert one_each == sorted(one_each, key=lambda line: line.split()[1]), "input order"
    timing = next(line for line in parts["3"] if "images of 0.05 s took" in line)
    took = re.fullmatch(r"6 images of 0.05 s took ([\d.]+) s together", timing)
    assert took is not None, timing
    assert float(took.group(1)) < 0.2, f"the images did not run at once: {timing}"


def test_primitives_tour() -> None:
    parts = sections(run_example("primitives_tour.py"))
    assert sorted(parts) == ["3", "4", "5"]  # the first section is headed "1-2."
    assert "   [4, 9, 16]" in parts["4"]
    pool = parts["5"]
    assert "   values: [2, 4, 6, 8, 10, 12, 16, 18, 20, 22, 24]" in pool
    assert "   dead letter: job 7 after 2 attempts: job 7: connection reset" in pool
    assert any(line.startswith("   stats: 11 completed, 1 failed, 3 retried") for line in pool)


def test_image_resize_example(tmp_path: Path) -> None:
    # 6 images: the example is CPU-bound, and must keep to its budget on a busy machine
    parts = sections(run_example("image_resize.py", "6", str(tmp_path)))
    assert sorted(parts) == ["1", "2", "3"]
    assert parts["1"][0].startswith("1. generated 6 images of 1200x900")
    rows = [line.split() for line in parts["2"][1:]]
    assert [row[0] for row in rows] == ["plain", "fan-out,", "WorkerPool(process,"]
    assert all(row[-1] == "images/s" for row in rows)
    for way in ("loop", "fan-out", "pool"):  # the example checked every size itself
        assert len(list((tmp_path / way).glob("*.jpg"))) == 6
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


# -- rate limits ------------------------------------------------------------------------------

INTERVAL = 0.05  # examples/rate_limit.py: one token per 50 ms
LATE = 0.3  # how late a request may start after its slot on a busy machine


def times_of(lines: list[str], pattern: str) -> list[tuple[str, float]]:
    """(the pattern's first group, the seconds of the "+0.123 s" group) for matching lines."""
    found = [re.fullmatch(pattern, line) for line in lines]
    return [(match.group(1), float(match.group(2))) for match in found if match]


def assert_paced(times: list[float], burst: int) -> None:
    """Request k (from 1) starts no earlier than its slot, ``(k - burst) * INTERVAL`` after
    the start (exact: a limiter that lets one request through early fails), and not
    more than ``LATE`` after it."""
    assert times == sorted(times), times
    for k, at in enumerate(times, 1):
        slot = max(0.0, (k - burst) * INTERVAL)
        assert at >= slot - 0.0005, f"request {k} started at {at} s, before its slot {slot} s"
        assert at <= slot + LATE, f"request {k} started at {at} s, long after its slot {slot} s"


def test_rate_limit_example() -> None:
    parts = sections(run_example("rate_limit.py"))
    assert sorted(parts) == ["1", "2", "3", "4"]

    ticks = times_of(parts["1"], r"   Processing request (\d) at \+([\d.]+) s")
    assert [request for request, _ in ticks] == ["1", "2", "3", "4", "5"]
    assert_paced([at for _, at in ticks], burst=0)  # a tick per interval, the first after one
    assert parts["1"][-1] == (
        "   after a pause of 3.5 intervals: 1 tick waiting, not 3 (missed, not queued)"
    )

    tasks = times_of(parts["2"], r"   Processing task (\d) at \+([\d.]+) s")
    assert [task for task, _ in tasks] == [str(i) for i in range(1, 9)]
    assert_paced([at for _, at in tasks], burst=3)  # 3 at once, then one per interval
    assert parts["2"][-1] == "   8 tasks ran, each once: True"

    starts = times_of(parts["3"], r"   start \d: job (\d) at \+([\d.]+) s")
    assert sorted(job for job, _ in starts) == ["1", "2", "3", "3", "4", "5", "6", "7", "8"]
    assert_paced([at for _, at in starts], burst=1)  # across 4 workers, the retry included
    assert parts["3"][-1] == "   8 jobs done, 1 retried, 9 starts"

    assert until_blank(parts["4"])[1:] == [
        "   request 1: accepted",
        "   request 2: accepted",
        "   request 3: accepted",
        "   request 4: rejected (429 Too Many Requests)",
        "   request 5: rejected (429 Too Many Requests)",
        "   request 6: rejected (429 Too Many Requests)",
        "   acquire(timeout=1.0) -> False, without waiting: True",
    ]


# -- URL fetch ----------------------------------------------------------------------------------

FETCH_TIMEOUT = 0.5  # examples/url_fetch.py
PAGES = [f"ok /pages/{name} 200 <h1>{name}</h1>" for name in ("google", "github", "golang")]


def outcomes(lines: list[str]) -> list[str]:
    """The result lines of a section, their spacing collapsed."""
    kinds = ("ok ", "timed out ", "failed ")
    return [" ".join(line.split()) for line in lines if line.strip().startswith(kinds)]


def assert_concurrent(lines: list[str]) -> None:
    """The fetches waited for their timeouts together: once, not once per slow page."""
    summary = next(line for line in lines if "total execution time" in line)
    took = re.search(r"^   7 URLs, 2 timed out, total execution time ([\d.]+) s$", summary)
    assert took is not None, summary
    assert FETCH_TIMEOUT <= float(took.group(1)) < 2 * FETCH_TIMEOUT, summary


def test_url_fetch_example() -> None:
    parts = sections(run_example("url_fetch.py"))
    assert sorted(parts) == ["1", "2", "3"]
    expected = [
        *PAGES,
        "timed out /slow/1 ReadTimeout",
        "timed out /slow/2 ReadTimeout",
        "failed /flaky HTTPStatusError 503",
        "failed /refused ConnectError",
    ]
    assert sorted(outcomes(parts["1"])) == sorted(expected), "each URL exactly once"
    assert outcomes(parts["2"]) == expected, "afan_out: input order, as Promise.all"
    assert sorted(outcomes(parts["3"])) == sorted(
        [
            *(f"{page} (attempts 1)" for page in PAGES),
            "ok /flaky 200 <h1>flaky</h1> (attempts 2)",  # the 503 was retried
            "timed out /slow/1 JobTimeout (attempts 1)",  # the pool's timeout: no retry
            "timed out /slow/2 JobTimeout (attempts 1)",
            "failed /refused ConnectError (attempts 1)",  # not an HTTPStatusError: no retry
        ]
    )
    for part in ("1", "2", "3"):
        assert_concurrent(parts[part])
    assert "   stats: completed=4 failed=3 retried=1 timed_out=2 in_flight=0" in parts["3"]


# -- bounded parallelism ---------------------------------------------------------------------


def peak_of(lines: list[str]) -> int:
    line = next(line for line in lines if line.startswith("   at most "))
    match = re.fullmatch(r"   at most (\d+) jobs at once \(limit 3\)", line)
    assert match is not None, line
    return int(match.group(1))


def test_bounded_parallelism_example() -> None:
    parts = sections(run_example("bounded_parallelism.py"))
    assert sorted(parts) == ["1", "2", "3"]
    assert "   Results: [2, 4, 6, 8, 10] (sorted; they arrive as jobs finish)" in parts["1"]
    assert peak_of(parts["1"]) == 3  # asyncio: the first three start in one loop turn
    assert "   Results: [2, 4, 6, 8, 10] (sorted)" in parts["2"]
    assert 1 <= peak_of(parts["2"]) <= 3
    processes = until_blank(parts["3"])
    assert processes[1:7] == [
        *(f"   job {job} -> {2 * job}, in a worker process: True" for job in range(1, 6)),
        "   job 6 failed: WorkerCrashed",  # the crash is charged to its job alone
    ]
    assert 1 <= peak_of(processes) <= 3


# -- WaitGroup, errgroup, contexts ----------------------------------------------------------------


def test_wait_group_example() -> None:
    parts = sections(run_example("wait_group.py"))
    assert sorted(parts) == ["1", "2", "3", "4", "5"]

    launched = parts["1"]
    assert sorted(launched[1:-1]) == sorted(
        [f"   Worker {i} {what}" for i in (1, 2, 3) for what in ("starting", "done")]
    )
    assert launched[-1] == "   All workers completed"  # after every worker is done

    failed = parts["2"]
    assert sorted(failed[1:4]) == [f"   Worker {i} starting" for i in (1, 2, 3)]
    assert sorted(failed[4:6]) == ["   Worker 1 done", "   Worker 3 done"]
    assert failed[6:] == [
        "   All workers completed",
        "   Worker 2 failed: OSError: worker 2: disk full",
    ]

    grouped = parts["3"]
    assert sorted(line for line in grouped if "Worker" in line) == [
        "   Worker 1 starting",
        "   Worker 1 stopped early: Cancelled",
        "   Worker 2 starting",
        "   Worker 3 starting",
        "   Worker 3 stopped early: Cancelled",
    ]
    assert grouped[-2:] == [
        "   the group raised OSError: worker 2: disk full",
        "   the others did not sleep their 5.0 s: True",
    ]

    timed = parts["4"]
    assert sorted(line for line in timed if "Worker" in line and "starting" not in line) == [
        "   Worker 1 done",
        "   Worker 2 done",
        "   Worker 3 stopped: DeadlineExceeded",
    ]
    assert timed[-1] == (
        "   the group raised DeadlineExceeded: context deadline exceeded (a TimeoutError: True)"
    )

    tasks = until_blank(parts["5"])
    assert sorted(line for line in tasks if "Task" in line and "starting" not in line) == [
        "   Task 1 done",
        "   Task 2 cancelled, cleaning up",
        "   Task 3 cancelled, cleaning up",
    ]
    assert tasks[-2:] == ["   wait_for timed out", "   tasks still running: 0"]


# -- executor swap ------------------------------------------------------------------------------


def test_executor_swap_example() -> None:
    parts = sections(run_example("executor_swap.py"))
    assert sorted(parts) == ["1", "2", "3", "4", "5"]

    swap = parts["1"]
    outcomes = [line.split(": ", 1) for line in swap if line.startswith("   ") and "[" in line]
    assert [name for name, _ in outcomes] == [
        "   ThreadPoolExecutor(4)",
        "   cf.PoolExecutor(4)",
        '   cf.PoolExecutor(2, backend="process")',
    ]
    stdlib = outcomes[0][1]
    assert stdlib.endswith("], then ValueError: empty text"), stdlib
    assert all(outcome == stdlib for _, outcome in outcomes), "same values and errors everywhere"
    assert "   identical values and errors: True" in swap

    lazy = parts["2"]
    assert "   [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in lazy  # in order, from an endless input
    taken = next(line for line in lazy if line.startswith("   inputs taken: "))
    match = re.fullmatch(r"   inputs taken: (\d+) \(10 yielded \+ at most 8 ahead\)", taken)
    assert match is not None, taken
    assert 10 <= int(match.group(1)) <= 18, f"buffersize=8 was not obeyed: {taken}"
    assert until_blank(lazy)[-1] == (
        "   next() after shutdown: RuntimeError: cannot schedule new futures after shutdown"
    )

    assert parts["3"][1:5] == [
        "   fast job: waited 0.05 s",  # the other job is unaffected by the slow one's timeout
        "   slow job: JobTimeout, a TimeoutError: True",
        "   it failed within 2x the timeout: True",
        "   stats: completed=1 timed_out=1",
    ]

    assert parts["4"][1:4] == [
        "   ThreadPoolExecutor(4): ConnectionError: call 1: connection reset",
        "   cf.PoolExecutor(4, retries=3, backoff=0.01): 42 after 3 calls",
        "   stats: retried=2",
    ]

    assert until_blank(parts["5"])[1:] == [
        *(f"   run_in_executor: {key} on chanflow-worker-<n>" for key in "abc"),
        "   asyncio.to_thread: d on chanflow-worker-<n>",  # the default executor is ours
    ]


def test_durable_run_example() -> None:
    output = run_example("durable_run.py")
    held = re.search(r"the journal holds ([\d,]+) finished jobs", output)
    assert held is not None, output
    finished = int(held.group(1).replace(",", ""))
    assert 0 < finished < 2000, "the kill lands half-way"
    resumed = re.search(r"([\d,]+) outcomes came back from the journal, ([\d,]+) jobs ran", output)
    assert resumed is not None, output
    replayed, ran = (int(group.replace(",", "")) for group in resumed.groups())
    assert replayed == finished and replayed + ran == 2000
    twice = re.search(r"(\d+) jobs ran twice", output)
    assert twice is not None and int(twice.group(1)) <= 8 + 64, output  # running, or in a batch
