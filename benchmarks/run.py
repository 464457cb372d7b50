"""Run chanflow's benchmarks and print the machine, tables and the targets.

Nine sections: ``channel`` (handoffs through channels, bench_channel.py),
``pool`` (the worker pool on threads and asyncio, bench_pool.py), ``process``
(the process backend, bench_process.py), ``pipeline`` (multi-stage flows,
bench_pipeline.py), ``retry`` (what a retry costs beyond its backoff on every
backend, bench_retry.py; its Dask rows are skipped when distributed is missing),
``executor`` (cf.PoolExecutor against ThreadPoolExecutor, ProcessPoolExecutor and
multiprocessing.Pool, bench_executor.py), ``scaling`` (cost per job against job
duration and against worker count, bench_scaling.py), ``journal`` (what
``journal=`` costs a pool call and how fast a resume starts, bench_journal.py) and
``dask`` (the Dask backend
against Dask's own client.map, bench_dask.py; only with ``--only dask``, and skipped
when distributed is missing).

Every run records what it measured (machine, date, each contestant's samples) in a
results file, ``benchmarks/results/latest.json`` (a ``--quick`` run: under
``benchmarks/results/quick/``), replacing the sections it ran and keeping the
others, then draws the charts from that file: a figure per section and the scaling
curves, SVG and PNG, into ``docs/charts/`` (see charts.py).
Usage::

    .venv/bin/python benchmarks/run.py               # every section, about 11-12 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --only pool   # one section (channel, pool, process...)
    .venv/bin/python benchmarks/run.py --only retry  # retry latency per backend (~10 s)
    .venv/bin/python benchmarks/run.py --only executor  # cf.PoolExecutor vs the stdlib (~1.5 min)
    .venv/bin/python benchmarks/run.py --only scaling   # the scaling curves (~80 s)
    .venv/bin/python benchmarks/run.py --only journal   # journal= costs, a 1M-job resume (~1 min)
    .venv/bin/python benchmarks/run.py --charts-only    # draw the charts again from the file
    .venv/bin/python benchmarks/run.py --only dask   # the Dask section, never run by default
    .venv/bin/python benchmarks/run.py --quick       # small counts: a smoke test, seconds
    .venv/bin/python benchmarks/run.py --rounds 7    # more rounds, steadier medians

See benchmarks/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

try:
    import chanflow
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import chanflow

import charts
from bench_channel import (
    GoBench,
    Results,
    Scenario,
    build_scenarios,
    measure_all,
    median,
    targets,
)
from bench_executor import UNITS as EXECUTOR_UNITS
from bench_executor import (
    build_executor_scenarios,
    executor_table_lines,
    executor_target_lines,
    warm_up,
)
from bench_journal import (
    J1_HAND,
    J1_PLAIN,
    J1_POOL,
    J2_PLAIN,
    J2_POOL,
    J3,
    JournalResults,
    journal_lines,
    measure_journal,
)
from bench_pipeline import FLOW as PIPELINE_FLOW
from bench_pipeline import UNITS as PIPELINE_UNITS
from bench_pipeline import (
    PipelineMemoryRow,
    build_pipeline_scenarios,
    go_pipeline,
    measure_pipeline_memory,
    pipeline_memory_lines,
    pipeline_table_lines,
    pipeline_target_lines,
)
from bench_pool import (
    MEMORY_NAMES,
    MemoryRow,
    build_pool_scenarios,
    measure_memory,
    memory_lines,
    pool_table_lines,
    pool_target_lines,
)
from bench_pool import UNITS as POOL_UNITS
from bench_process import (
    CrashRun,
    build_process_scenarios,
    measure_crashes,
    measure_startup,
    process_lines,
    process_target_lines,
)
from bench_retry import (
    JOBS,
    QUICK_JOBS,
    RetryRow,
    load_line,
    measure_retry,
    retry_lines,
    retry_target_lines,
)
from bench_scaling import (
    build_scaling_scenarios,
    scaling_lines,
    scaling_panels,
    scaling_rounds,
)
from bench_scaling import warm_up as warm_up_scaling
from charts import PanelRecord, SectionRecord, samples_panel, scenario_panels

QUICK_SCALE = 0.05
QUICK_ROUNDS = 2
FULL_ROUNDS = 7
SECTIONS = (
    "channel",
    "pool",
    "process",
    "pipeline",
    "retry",
    "executor",
    "scaling",
    "journal",
    "dask",
)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
CHARTS = ROOT / "docs" / "charts"
# A --quick run's numbers are a smoke test: they never overwrite the committed ones.
QUICK_DIRECTORY = ROOT / "benchmarks" / "results" / "quick"
TITLES = {
    "channel": "Channels: one item from a producer to a consumer",
    "pool": "Worker pool: no-op jobs, 20 ms waits, memory",
    "process": "Process backend: overhead, CPU-bound jobs, start-up, crashes",
    "pipeline": "Pipelines: stage overhead, the seeds' pipeline, CPU stages, memory",
    "retry": "Retry latency: what a retry costs beyond its backoff",
    "executor": "cf.PoolExecutor against the executors it replaces",
    "scaling": "Scaling",
    "journal": "Journal: what journal= costs a pool call, and how fast a resume starts",
}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what platform knows elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines() -> list[str]:
    return [
        f"CPU:      {cpu_model()}",
        f"cores:    {os.cpu_count()}",
        f"Python:   {sys.version.split()[0]} ({platform.python_implementation()})",
        f"OS:       {platform.platform()}",
        f"chanflow: {chanflow.__version__}, janus {_version('janus')}, "
        f"culsans {_version('culsans')}, aiometer {_version('aiometer')}, "
        f"pypeln {_version('pypeln')}",
        f"date:     {time.strftime('%Y-%m-%d %H:%M')}",
    ]


def machine_info() -> dict[str, str]:
    """The machine, as the charts' captions name it."""
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "system": platform.system(),
        "os": platform.platform(),
        "chanflow": chanflow.__version__,
    }


def _record(name: str, rounds: int, mode: str, panels: list[PanelRecord]) -> SectionRecord:
    """One section's record: its panels, with the machine, the date and how it ran."""
    date = time.strftime("%Y-%m-%d %H:%M")
    title = TITLES.get(name, name.capitalize())
    return SectionRecord(title, date, mode, rounds, machine_info(), panels)


def _go_line(go: GoBench | None) -> str:
    if go is None:
        return "not used (--no-go)"
    return go.version if go.available else go.note


def _ratio(results: Results, scenario: Scenario, name: str) -> str:
    if scenario.baseline is None:
        return "-"
    baseline = median(results, scenario.baseline)
    value = median(results, (scenario.key, name))
    if baseline is None or value is None:
        return "-"
    if scenario.baseline == (scenario.key, name):
        return "1.00x (baseline)"
    return f"{baseline / value:.2f}x"


def table_lines(scenarios: list[Scenario], results: Results) -> list[str]:
    header = ("scenario", "contestant", "median us/item", "min us/item", "vs baseline")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for scenario in scenarios:
        label = f"{scenario.key}. {scenario.title}"
        for contestant in scenario.contestants:
            samples = results[(scenario.key, contestant.name)]
            rows.append(
                (
                    label,
                    contestant.name,
                    f"{median(results, (scenario.key, contestant.name)):.3f}",
                    f"{min(samples):.3f}",
                    _ratio(results, scenario, contestant.name),
                )
            )
            label = ""
        notes.extend(f"  [{scenario.key}] {note}" for note in scenario.notes)
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        left = [cell.ljust(width) for cell, width in zip(cells[:2], widths[:2], strict=True)]
        right = [cell.rjust(width) for cell, width in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule]
    for row in rows:
        if row[0] and out[-1] != rule:
            out.append("")
        out.append(line(row))
    out.append(rule)
    out.append("vs baseline: baseline median / this median (above 1 = faster than the baseline)")
    if notes:
        out.append("notes:")
        out.extend(notes)
    return out


def target_lines(results: Results) -> list[str]:
    out = ["TARGETS (from the medians above):"]
    for target in targets():
        value = median(results, target.contestant)
        baseline = median(results, target.baseline)
        if value is None or baseline is None:
            out.append(f"  [n/a ] {target.label}: not measured")
            continue
        met = value * target.factor <= baseline
        verdict = "MET " if met else "MISS"
        paired = _paired_ratios(results[target.baseline], results[target.contestant])
        out.append(
            f"  [{verdict}] {target.label}: {baseline / value:.2f}x "
            f"(same-round ratios {min(paired):.2f}x to {max(paired):.2f}x)"
        )
    return out


def _paired_ratios(baseline: list[float], contestant: list[float]) -> list[float]:
    """Ratios of two measurements taken in the same round."""
    return [b / c for b, c in zip(baseline, contestant, strict=True)]


def sample_lines(scenarios: list[Scenario], results: Results) -> list[str]:
    out = ["samples (us/item, in the order measured):"]
    for scenario in scenarios:
        for contestant in scenario.contestants:
            samples = " ".join(f"{x:.3f}" for x in results[(scenario.key, contestant.name)])
            out.append(f"  {scenario.key}. {contestant.name}: {samples}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small item counts and 2 rounds (smoke test)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"rounds to run (default {FULL_ROUNDS})"
    )
    parser.add_argument(
        "--only", choices=SECTIONS, default=None, help="run one section (default: all)"
    )
    parser.add_argument("--no-go", action="store_true", help="skip the Go comparison")
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the memory scenarios in subprocesses (pool P4, about a minute; pipeline F3)",
    )
    parser.add_argument(
        "--samples", action="store_true", help="also print every measurement, not just medians"
    )
    parser.add_argument(
        "--charts-only",
        action="store_true",
        help="measure nothing: draw the charts again from the results file",
    )
    parser.add_argument("--no-charts", action="store_true", help="record, but draw no charts")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"the results file (default {RESULTS.relative_to(ROOT)}; --quick: under "
        f"{QUICK_DIRECTORY.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--charts",
        type=Path,
        default=None,
        help=f"where the charts go (default {CHARTS.relative_to(ROOT)}; --quick: under "
        f"{QUICK_DIRECTORY.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, not {args.rounds}")
    return args


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def run_channel(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The channel section: handoffs, with Go when it builds."""
    go = None if args.no_go else GoBench()
    try:
        print(f"Go:       {_go_line(go)}")
        scenarios = build_scenarios(scale, go)
        print(f"\n== channels: {mode} run, {rounds} interleaved rounds...", flush=True)
        started = time.perf_counter()
        results = measure_all(scenarios, rounds, _progress)
        elapsed = time.perf_counter() - started
    finally:
        if go is not None:
            go.close()
    print(f"measured in {elapsed:.0f} s\n")
    print("\n".join(table_lines(scenarios, results)))
    print()
    print("\n".join(target_lines(results)))
    if args.samples:
        print()
        print("\n".join(sample_lines(scenarios, results)))
    return _record("channel", rounds, mode, scenario_panels(scenarios, results, "us/item"))


def run_pool(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The worker pool section: overhead and I/O in rounds, then memory in subprocesses."""
    scenarios = build_pool_scenarios(scale)
    print(f"\n== worker pool: {mode} run, {rounds} interleaved rounds...", flush=True)
    started = time.perf_counter()
    results = measure_all(scenarios, rounds, _progress)
    memory = None if args.no_memory else measure_memory(scale, _progress)
    elapsed = time.perf_counter() - started
    print(f"measured in {elapsed:.0f} s\n")
    print("\n".join(pool_table_lines(scenarios, results)))
    if memory is not None:
        print()
        print("\n".join(memory_lines(memory)))
    print()
    print("\n".join(pool_target_lines(scenarios, results, memory)))
    if args.samples:
        print()
        print("\n".join(sample_lines(scenarios, results)))
    panels = scenario_panels(scenarios, results, POOL_UNITS)
    if memory is not None:
        panels.append(pool_memory_panel(memory))
    return _record("pool", rounds, mode, panels)


def pool_memory_panel(memory: list[MemoryRow]) -> PanelRecord:
    """P4 as bars: the peak RSS of each child (one sample each)."""
    peaks = {
        f"{MEMORY_NAMES[row.kind]} over {row.items:,} items": [row.peak_kib / 1024]
        for row in memory
    }
    return samples_panel("P4", "peak RSS of map over a lazy input, fresh process", "MB", peaks)


def run_process(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The process backend section: overhead and CPU in rounds, start-up, crashes."""
    scenarios, notes = build_process_scenarios(scale)
    print(f"\n== process backend: {mode} run, {rounds} interleaved rounds...", flush=True)
    started = time.perf_counter()
    results = measure_all(scenarios, rounds, _progress)
    startup = measure_startup(max(1, rounds // 2))
    crashes = measure_crashes(max(1, rounds // 2), scale)
    print(f"measured in {time.perf_counter() - started:.0f} s\n")
    print("\n".join(process_lines(scenarios, results, startup, crashes)))
    for note in notes:
        print(f"note: {note}")
    print()
    print("\n".join(process_target_lines(results, crashes)))
    panels = scenario_panels(scenarios, results, {"R1": "us/job", "R2": "s wall"})
    panels += process_extra_panels(startup, crashes)
    return _record("process", rounds, mode, panels)


def process_extra_panels(
    startup: dict[str, list[float]], crashes: list[tuple[CrashRun, CrashRun]]
) -> list[PanelRecord]:
    """R3 (start-up per start method) and R4 (wall time with and without crashes) as bars."""

    def chanflow_only(name: str) -> bool:
        return True

    methods = {f"start method {method}": values for method, values in startup.items()}
    without = "no crashes"
    runs = {
        without: [run.seconds for run, _ in crashes],
        "2% of jobs call os._exit(1)": [run.seconds for _, run in crashes],
    }
    return [
        samples_panel(
            "R3",
            "WorkerPool(2, process) to its first result, fresh interpreter",
            "s",
            methods,
            chanflow=chanflow_only,
        ),
        samples_panel(
            "R4",
            "jobs of ~0.2 ms on WorkerPool(2, process), with and without crashes",
            "s wall",
            runs,
            baseline=without,
            chanflow=chanflow_only,
        ),
    ]


def run_pipeline(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The pipeline section: F1, F2 (with Go when it builds), F4 in rounds, then memory."""
    go = None if args.no_go else go_pipeline()
    try:
        print(f"Go:       {_go_line(go)}")
        scenarios, reports = build_pipeline_scenarios(scale, go)
        print(f"\n== pipelines: {mode} run, {rounds} interleaved rounds...", flush=True)
        started = time.perf_counter()
        results = measure_all(scenarios, rounds, _progress)
    finally:
        if go is not None:
            go.close()
    memory = None if args.no_memory else measure_pipeline_memory(scale, _progress)
    print(f"measured in {time.perf_counter() - started:.0f} s\n")
    print("\n".join(pipeline_table_lines(scenarios, results, reports)))
    if memory is not None:
        print()
        print("\n".join(pipeline_memory_lines(memory)))
    print()
    print("\n".join(pipeline_target_lines(results, memory)))
    if args.samples:
        print()
        print("\n".join(sample_lines(scenarios, results)))
    panels = scenario_panels(scenarios, results, PIPELINE_UNITS)
    if memory is not None:
        panels.append(pipeline_memory_panel(memory))
    return _record("pipeline", rounds, mode, panels)


def pipeline_memory_panel(memory: list[PipelineMemoryRow]) -> PanelRecord:
    """F3 as bars: the peak RSS of each child (one sample each)."""
    peaks = {
        f"{PIPELINE_FLOW}, first {row.items:,} of count()": [row.peak_kib / 1024] for row in memory
    }
    return samples_panel("F3", "peak RSS over an endless input, fresh process", "MB", peaks)


def run_retry(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The retry section: each backend's retry overhead beyond its backoff, fresh pools."""
    jobs = QUICK_JOBS if args.quick else JOBS
    print(f"\n== retry latency: {mode} run, {rounds} interleaved rounds...", flush=True)
    print(f"before: {load_line()}")
    started = time.perf_counter()
    rows = measure_retry(rounds, args.quick, _progress)
    print(f"measured in {time.perf_counter() - started:.0f} s; after: {load_line()}\n")
    print("\n".join(retry_lines(rows, rounds, jobs)))
    print()
    print("\n".join(retry_target_lines(rows)))
    return _record("retry", rounds, mode, [retry_panel(rows, jobs)])


def retry_panel(rows: list[RetryRow], jobs: int) -> PanelRecord:
    """T1 as bars: every retry's overhead, per backend (all of them chanflow's)."""
    overheads = {f"{row.backend} ({row.workers})": row.overheads for row in rows if row.overheads}
    return samples_panel(
        "T1",
        f"retry overhead beyond the backoff: every retry of {jobs} jobs x 2 a round",
        "ms",
        overheads,
        chanflow=lambda name: True,
    )


def run_executor(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The executor section: PoolExecutor's map and submit on threads and processes."""
    scenarios = build_executor_scenarios(scale)
    print(f"\n== executor: {mode} run, {rounds} interleaved rounds...", flush=True)
    print(f"before: {load_line()}")
    started = time.perf_counter()
    warm_up()
    results = measure_all(scenarios, rounds, _progress)
    print(f"measured in {time.perf_counter() - started:.0f} s; after: {load_line()}\n")
    print("\n".join(executor_table_lines(scenarios, results)))
    print()
    print("\n".join(executor_target_lines(results)))
    if args.samples:
        print()
        print("\n".join(sample_lines(scenarios, results)))
    return _record("executor", rounds, mode, scenario_panels(scenarios, results, EXECUTOR_UNITS))


def run_scaling(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The scaling section: cost per job against job duration and against worker count."""
    rounds = scaling_rounds(rounds)
    scenarios, points = build_scaling_scenarios(args.quick, scale)
    print(f"\n== scaling: {mode} run, {rounds} interleaved rounds...", flush=True)
    print(f"before: {load_line()}")
    started = time.perf_counter()
    warm_up_scaling()
    results = measure_all(scenarios, rounds, _progress)
    print(f"measured in {time.perf_counter() - started:.0f} s; after: {load_line()}\n")
    print("\n".join(scaling_lines(scenarios, points, results)))
    if args.samples:
        print()
        print("\n".join(sample_lines(scenarios, results)))
    return _record("scaling", rounds, mode, scaling_panels(scenarios, points, results))


def run_journal(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> SectionRecord:
    """The journal section: journal= on no-op and 1 ms jobs, and a 1M-job resume."""
    print(f"\n== journal: {mode} run, {rounds} interleaved rounds...", flush=True)
    print(f"before: {load_line()}")
    started = time.perf_counter()
    results = measure_journal(rounds, scale)
    print(f"measured in {time.perf_counter() - started:.0f} s; after: {load_line()}\n")
    print("\n".join(journal_lines(results)))
    return _record("journal", rounds, mode, journal_panels(results))


def journal_panels(results: JournalResults) -> list[PanelRecord]:
    def micros(*labels: str) -> dict[str, list[float]]:
        return {label: [value * 1e6 for value in results[label]] for label in labels}

    panels = [
        samples_panel(
            "J1",
            "no-op jobs, 8 threads",
            "us/job",
            micros(J1_POOL, J1_PLAIN, J1_HAND),
            baseline=J1_PLAIN,
        ),
        samples_panel(
            "J2", "1 ms jobs, 8 threads", "us/job", micros(J2_POOL, J2_PLAIN), baseline=J2_PLAIN
        ),
    ]
    if J3 in results:
        panels.append(samples_panel("J3", "resume of 1M jobs, 999k done", "s", {J3: results[J3]}))
    return panels


def run_dask(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
    """The Dask section: overhead and throughput on clusters of 1, 2 and 4 workers."""
    try:
        from bench_dask import dask_lines, measure_dask
    except ImportError as error:  # distributed is an optional extra
        print(f"\n== dask backend: skipped ({error})")
        return
    print(f"distributed: {_version('distributed')}")
    print(f"\n== dask backend: {mode} run, {rounds} interleaved rounds per cluster...", flush=True)
    started = time.perf_counter()
    measured = measure_dask(rounds, scale, _progress)
    print(f"measured in {time.perf_counter() - started:.0f} s\n")
    print("\n".join(dask_lines(measured)))


Runner = Callable[[argparse.Namespace, int, float, str], SectionRecord | None]
RUNNERS: dict[str, Runner] = {
    "channel": run_channel,
    "pool": run_pool,
    "process": run_process,
    "pipeline": run_pipeline,
    "retry": run_retry,
    "executor": run_executor,
    "scaling": run_scaling,
    "journal": run_journal,
    "dask": run_dask,  # not charted: minutes of clusters starting, only with --only dask
}
BY_DEFAULT = [name for name in RUNNERS if name != "dask"]


def output_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The results file and the charts' directory for this run (or for --charts-only)."""
    results = args.results or (QUICK_DIRECTORY / "results.json" if args.quick else RESULTS)
    directory = args.charts or (QUICK_DIRECTORY if args.quick else CHARTS)
    return results, directory


def draw_charts(results: Path, directory: Path) -> None:
    """Draw every section of ``results`` into ``directory``; a note if matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        print(f"\n{charts.MISSING}")
        return
    written = charts.render_all(results, directory)
    shown = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
    print(f"\ncharts: {len(written)} files in {shown} (from {results.name})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_file, charts_dir = output_paths(args)
    if args.charts_only:
        draw_charts(results_file, charts_dir)
        return 0
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    scale = QUICK_SCALE if args.quick else 1.0
    mode = "quick" if args.quick else "full"
    print("\n".join(machine_lines()), flush=True)
    recorded = False
    for name in [args.only] if args.only else BY_DEFAULT:
        section = RUNNERS[name](args, rounds, scale, mode)
        if section is not None:  # saved at once: a run stopped later keeps this section
            charts.save_results(results_file, {name: section})
            recorded = True
    if recorded and not args.no_charts:
        draw_charts(results_file, charts_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
