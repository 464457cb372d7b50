"""Dead-letter sinks: channel, callable and JSON Lines file."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from chanflow._channel import Channel
from chanflow._deadletters import (
    CallableSink,
    ChannelSink,
    DeadLetterSink,
    JsonLinesSink,
    make_dead_letter_sink,
)
from chanflow._exceptions import ChannelClosed
from chanflow._result import Result

RECORD_KEYS = {
    "job",
    "index",
    "error_type",
    "message",
    "traceback",
    "attempts",
    "elapsed",
    "timestamp",
}


class CustomError(Exception):
    class Nested(Exception):
        pass


def raised(error: BaseException) -> BaseException:
    """``error`` with a real traceback, as a job's failure would have."""
    try:
        raise error
    except BaseException as caught:
        return caught


def failure(job: Any = "job", index: int = 0, error: BaseException | None = None) -> Result[Any]:
    return Result(
        job=job,
        index=index,
        error=error if error is not None else ValueError("bad job"),
        attempts=3,
        elapsed=1.25,
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the factory --------------------------------------------------------------------


def test_none_means_no_sink() -> None:
    assert make_dead_letter_sink(None) is None


def test_a_sink_passes_through() -> None:
    sink = CallableSink(print)
    assert make_dead_letter_sink(sink) is sink


def test_a_channel_makes_a_channel_sink() -> None:
    channel: Channel[Result[Any]] = Channel(1)
    sink = make_dead_letter_sink(channel)
    assert isinstance(sink, ChannelSink)
    assert sink.channel is channel


@pytest.mark.parametrize("kind", [str, Path])
def test_a_path_makes_a_lazy_json_lines_sink(tmp_path: Path, kind: type) -> None:
    target = tmp_path / "dead.jsonl"
    sink = make_dead_letter_sink(kind(target))
    assert isinstance(sink, JsonLinesSink)
    assert not target.exists()  # opened on the first dead letter only
    sink.put(failure())
    assert target.exists()
    sink.close()


def test_callables_make_callable_sinks() -> None:
    class Collector:
        def __call__(self, result: Result[Any]) -> None:
            pass

    for function in (print, lambda result: None, Collector()):
        sink = make_dead_letter_sink(function)
        assert isinstance(sink, CallableSink)
        assert sink.function is function


@pytest.mark.parametrize("bad", [42, b"dead.jsonl", object(), ["a"]])
def test_anything_else_is_a_type_error_naming_it(bad: object) -> None:
    with pytest.raises(TypeError, match=r"dead_letters must be .*Channel.*callable.*path") as info:
        make_dead_letter_sink(bad)
    assert repr(bad) in str(info.value)


def test_a_missing_directory_fails_up_front(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dead.jsonl"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dead_letter_sink(target)
    assert not target.parent.exists()


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory"):
        make_dead_letter_sink(tmp_path)


# -- every sink ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["channel", "callable", "file"])
def test_successful_results_and_non_results_are_refused(tmp_path: Path, kind: str) -> None:
    spec: object = {
        "channel": Channel(10),
        "callable": lambda result: None,
        "file": tmp_path / "dead.jsonl",
    }[kind]
    sink = make_dead_letter_sink(spec)
    assert sink is not None
    with pytest.raises(ValueError, match="only failed results"):
        sink.put(Result(job=1, index=0, value=2))
    with pytest.raises(TypeError, match=r"must be a chanflow\.Result"):
        sink.put("oops")  # type: ignore[arg-type]
    sink.close()
    assert not (tmp_path / "dead.jsonl").exists()


# -- channel sink -------------------------------------------------------------------


def test_channel_sink_sends_the_result_itself() -> None:
    channel: Channel[Result[Any]] = Channel(5)
    sink = ChannelSink(channel)
    results = [failure(index=n) for n in range(3)]
    for result in results:
        sink.put(result)
    sink.close()
    assert not channel.closed  # the channel belongs to the caller
    assert [channel.recv_nowait() for _ in results] == results


def test_a_full_channel_applies_backpressure() -> None:
    channel: Channel[Result[Any]] = Channel(1)
    sink = ChannelSink(channel)
    sink.put(failure(index=0))
    delivered = threading.Event()

    def put_second() -> None:
        sink.put(failure(index=1))
        delivered.set()

    thread = threading.Thread(target=put_second)
    thread.start()
    assert not delivered.wait(0.1)  # blocked: the buffer is full
    assert channel.recv(timeout=1).index == 0
    thread.join(timeout=2)
    assert delivered.is_set()
    assert channel.recv(timeout=1).index == 1


def test_put_unless_gives_up_on_a_full_channel_once_stop_closes() -> None:
    channel: Channel[Result[Any]] = Channel(1)
    stop: Channel[None] = Channel()
    sink = ChannelSink(channel)
    assert sink.put_unless(failure(index=0), stop)  # room: sent
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(sink.put_unless(failure(), stop)))
    thread.start()
    thread.join(0.1)
    assert thread.is_alive()  # waiting for room
    stop.close()
    thread.join(timeout=2)
    assert outcome == [False]
    assert channel.recv_nowait().index == 0 and len(channel) == 0  # nothing more sent


@pytest.mark.parametrize("kind", ["callable", "path"])
def test_put_unless_delivers_at_once_on_sinks_that_never_wait(tmp_path: Path, kind: str) -> None:
    got: list[Result[Any]] = []
    spec = got.append if kind == "callable" else tmp_path / "dead.jsonl"
    sink = make_dead_letter_sink(spec)
    assert sink is not None
    stop: Channel[None] = Channel()
    stop.close()  # even a stopped flow's last dead letter is written: it costs no wait
    assert sink.put_unless(failure(), stop)
    sink.close()
    assert len(got) == 1 if kind == "callable" else len(read_lines(tmp_path / "dead.jsonl")) == 1


def test_a_closed_channel_raises() -> None:
    channel: Channel[Result[Any]] = Channel(1)
    channel.close()
    with pytest.raises(ChannelClosed):
        ChannelSink(channel).put(failure())


def test_aput_on_an_unbuffered_channel_does_not_block_the_loop() -> None:
    channel: Channel[Result[Any]] = Channel()
    sink = ChannelSink(channel)
    result = failure()

    async def main() -> Result[Any]:
        receiver = asyncio.ensure_future(channel.arecv(timeout=2))
        await sink.aput(result)
        return await receiver

    assert asyncio.run(main()) is result


# -- callable sink ------------------------------------------------------------------


def test_callable_sink_calls_with_the_result() -> None:
    seen: list[Result[Any]] = []
    sink = CallableSink(seen.append)
    result = failure()
    sink.put(result)
    asyncio.run(sink.aput(result))
    assert seen == [result, result]


def test_callable_sink_errors_propagate() -> None:
    def explode(result: Result[Any]) -> None:
        raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):
        CallableSink(explode).put(failure())


def test_async_callables_are_awaited_by_aput_and_refused_by_put() -> None:
    seen: list[int] = []

    async def collect(result: Result[Any]) -> None:
        await asyncio.sleep(0)
        seen.append(result.index)

    sink = CallableSink(collect)
    asyncio.run(sink.aput(failure(index=7)))
    assert seen == [7]
    # The coroutine is closed, not leaked: filterwarnings=error would flag it.
    with pytest.raises(TypeError, match="returned an awaitable"):
        sink.put(failure(index=8))
    assert seen == [7]


# -- JSON Lines sink ----------------------------------------------------------------


def test_json_lines_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    sink = JsonLinesSink(target)
    before = datetime.now(timezone.utc)
    with_traceback = failure(job={"url": "https://x"}, index=4, error=raised(KeyError("k")))
    preformatted: Result[Any] = Result(
        job=("a", 1), index=9, error=CustomError.Nested("deep"), traceback="Traceback: given\n"
    )
    bare = failure(job=None, index=2, error=CustomError("no traceback"))
    for result in (with_traceback, preformatted, bare):
        sink.put(result)
    sink.close()
    after = datetime.now(timezone.utc)

    first, second, third = read_lines(target)
    assert all(set(record) == RECORD_KEYS for record in (first, second, third))

    assert first["job"] == repr({"url": "https://x"})
    assert (first["index"], first["attempts"], first["elapsed"]) == (4, 3, 1.25)
    assert first["error_type"] == "builtins.KeyError"
    assert first["message"] == "'k'"
    assert first["traceback"].startswith("Traceback (most recent call last):")
    assert "raise error" in first["traceback"]
    assert first["traceback"].rstrip().endswith("KeyError: 'k'")

    assert second["job"] == "('a', 1)"
    assert second["error_type"] == f"{__name__}.CustomError.Nested"
    assert second["message"] == "deep"
    assert second["traceback"] == "Traceback: given\n"
    assert (second["attempts"], second["elapsed"]) == (1, 0.0)

    assert third["job"] == "None"
    assert third["traceback"] == ""

    for record in (first, second, third):
        stamp = datetime.fromisoformat(record["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert before <= stamp <= after


def test_json_lines_appends_to_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    target.write_text('{"earlier": true}\n', encoding="utf-8")
    for index in range(2):
        sink = JsonLinesSink(str(target))
        sink.put(failure(index=index))
        sink.close()
    records = read_lines(target)
    assert records[0] == {"earlier": True}
    assert [record["index"] for record in records[1:]] == [0, 1]


def test_json_lines_survives_hostile_jobs_and_errors(tmp_path: Path) -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    target = tmp_path / "dead.jsonl"
    sink = JsonLinesSink(target)
    sink.put(failure(job=BadRepr(), error=BadStr()))
    sink.put(failure(job="naïve ☃\n\ud800", error=ValueError("línea\nnueva")))
    sink.close()
    hostile, unicode = read_lines(target)
    assert hostile["job"] == "<BadRepr object: repr() raised RuntimeError>"
    assert hostile["message"] == "<BadStr object: str() raised RuntimeError>"
    assert unicode["job"] == repr("naïve ☃\n\ud800")
    assert unicode["message"] == "línea\nnueva"


def test_json_lines_lines_stay_whole_under_many_threads(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    sink = JsonLinesSink(target)
    threads_count, per_thread = 16, 150
    start = threading.Barrier(threads_count)

    def writer(thread_id: int) -> None:
        start.wait()
        for n in range(per_thread):
            job = {"thread": thread_id, "n": n, "padding": "x" * (n % 50)}
            sink.put(failure(job=job, index=thread_id * per_thread + n))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    records = read_lines(target)
    assert sorted(record["index"] for record in records) == list(range(threads_count * per_thread))


def test_json_lines_each_line_is_flushed_before_close(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    sink = JsonLinesSink(target)
    sink.put(failure(index=1))
    assert [record["index"] for record in read_lines(target)] == [1]
    sink.close()


def test_json_lines_close_is_idempotent_and_final(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    sink = JsonLinesSink(target)
    sink.close()
    sink.close()
    assert not target.exists()
    with pytest.raises(ValueError, match="closed"):
        sink.put(failure())
    opened = JsonLinesSink(target)
    opened.put(failure())
    opened.close()
    opened.close()
    assert len(read_lines(target)) == 1


def test_json_lines_aput_writes_too(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    sink = JsonLinesSink(target)
    asyncio.run(sink.aput(failure(index=5)))
    sink.close()
    assert read_lines(target)[0]["index"] == 5


def test_the_abstract_sink_cannot_be_made() -> None:
    with pytest.raises(TypeError):
        DeadLetterSink()  # type: ignore[abstract]
