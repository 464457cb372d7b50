"""Run chanflow's benchmarks and print the machine, tables and the targets.

Seven sections: ``channel`` (handoffs through channels, bench_channel.py),
``pool`` (the worker pool on threads and asyncio, bench_pool.py), ``process``
(the process backend, bench_process.py), ``pipeline`` (multi-stage flows,
bench_pipeline.py), ``retry`` (what a retry costs beyond its backoff on every
backend, bench_retry.py; its Dask rows are skipped when distributed is missing),
``executor`` (cf.PoolExecutor against ThreadPoolExecutor, ProcessPoolExecutor and
multiprocessing.Pool, bench_executor.py) and ``dask`` (the Dask backend against
Dask's own client.map, bench_dask.py; only with ``--only dask``, and skipped when
distributed is missing).
Usage::

    .venv/bin/python benchmarks/run.py               # every section, about 9-10 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --only pool   # one section (channel, pool, process...)
    .venv/bin/python benchmarks/run.py --only retry  # retry latency per backend (~10 s)
    .venv/bin/python benchmarks/run.py --only executor  # cf.PoolExecutor vs the stdlib (~1.5 min)
    .venv/bin/python benchmarks/run.py --only dask   # the Dask section, never run by default
    .venv/bin/python benchmarks/run.py --quick       # small counts: a smoke test, seconds
    .venv/bin/python benchmarks/run.py --rounds 7    # more rounds, steadier medians

See benchmarks/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

try:
    import chanflow
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import chanflow

from bench_channel import (
    GoBench,
    Results,
    Scenario,
    build_scenarios,
    measure_all,
    median,
    targets,
)
from bench_executor import (
    build_executor_scenarios,
    executor_table_lines,
    executor_target_lines,
    warm_up,
)
from bench_pipeline import (
    build_pipeline_scenarios,
    go_pipeline,
    measure_pipeline_memory,
    pipeline_memory_lines,
    pipeline_table_lines,
    pipeline_target_lines,
)
from bench_pool import (
    build_pool_scenarios,
    measure_memory,
    memory_lines,
    pool_table_lines,
    pool_target_lines,
)
from bench_process import (
    build_process_scenarios,
    measure_crashes,
    measure_startup,
    process_lines,
    process_target_lines,
)
from bench_retry import (
    JOBS,
    QUICK_JOBS,
    load_line,
    measure_retry,
    retry_lines,
    retry_target_lines,
)

QUICK_SCALE = 0.05
QUICK_ROUNDS = 2
FULL_ROUNDS = 7
SECTIONS = ("channel", "pool", "process", "pipeline", "retry", "executor", "dask")


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
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, not {args.rounds}")
    return args


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def run_channel(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
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


def run_pool(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
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


def run_process(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
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


def run_pipeline(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
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


def run_retry(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
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


def run_executor(args: argparse.Namespace, rounds: int, scale: float, mode: str) -> None:
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    scale = QUICK_SCALE if args.quick else 1.0
    mode = "quick" if args.quick else "full"
    print("\n".join(machine_lines()), flush=True)
    if args.only in (None, "channel"):
        run_channel(args, rounds, scale, mode)
    if args.only in (None, "pool"):
        run_pool(args, rounds, scale, mode)
    if args.only in (None, "process"):
        run_process(args, rounds, scale, mode)
    if args.only in (None, "pipeline"):
        run_pipeline(args, rounds, scale, mode)
    if args.only in (None, "retry"):
        run_retry(args, rounds, scale, mode)
    if args.only in (None, "executor"):
        run_executor(args, rounds, scale, mode)
    if args.only == "dask":  # minutes of clusters starting: only when asked for
        run_dask(args, rounds, scale, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
