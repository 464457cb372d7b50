"""The journal of a Pipeline run: each source item's final outcome, kept at the sink.

With ``journal=``, every item travels through the flow tagged with its source
index (:class:`Tagged`); each stage's function sees and returns plain values, and
the tag follows what it returns. A :class:`FlowJournal` counts, per source item,
the items of it still alive in the flow: a ``flat_map`` adds some, a ``filter``
that drops it or a failure that skips or dead-letters it ends one, and one that
reaches the consumer ends one. When none is left, the source item is finished:
its outputs (and the dead letters it made) are committed as one journal row,
before the consumer sees the last of them.

A resumed run reads the source up to the last finished item and checks it against
the journal (in the source's thread, before the first item goes in), hands the
finished items' stored outputs to the consumer first, then what the flow makes of
the others. ``batch`` stages, which merge items of several source items into one,
are not journaled.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from ._channel import Channel
from ._exceptions import JournalError
from ._journal import (
    DEAD,
    FAILED,
    OK,
    Row,
    check_journal_setting,
    check_resume,
    check_resumed_input,
    digest_in,
    encode,
    identity_of,
    open_journal,
)
from ._result import Result
from ._sync import is_async_callable

__all__ = [
    "FlowJournal",
    "Tagged",
    "check_flow_journal",
    "check_no_batch",
    "flow_identity",
    "tagged_job",
]

# How often the consumer, waiting for the source to check a resumed input, looks
# whether the flow was stopped meanwhile.
_READY_POLL_SECONDS = 0.1


class Tagged:
    """An item in a journaled flow: its value and the index of the source item it came from."""

    __slots__ = ("index", "value")

    def __init__(self, index: int, value: Any) -> None:
        self.index = index
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return Tagged, (self.index, self.value)

    def __repr__(self) -> str:
        return f"Tagged({self.index}, {self.value!r})"


# -- what a stage's workers run in a journaled flow: the user's function on the value --


class _TaggedMap:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, item: Tagged) -> Tagged:
        return Tagged(item.index, self.fn(item.value))


class _AsyncTaggedMap(_TaggedMap):
    async def __call__(self, item: Tagged) -> Tagged:  # type: ignore[override]
        return Tagged(item.index, await self.fn(item.value))


class _TaggedKeep(_TaggedMap):
    def __call__(self, item: Tagged) -> tuple[Tagged, bool]:  # type: ignore[override]
        return item, bool(self.fn(item.value))


class _AsyncTaggedKeep(_TaggedMap):
    async def __call__(self, item: Tagged) -> tuple[Tagged, bool]:  # type: ignore[override]
        return item, bool(await self.fn(item.value))


class _TaggedSpread(_TaggedMap):
    def __call__(self, item: Tagged) -> tuple[int, list[Any]]:  # type: ignore[override]
        return item.index, list(self.fn(item.value))


class _AsyncTaggedSpread(_TaggedMap):
    async def __call__(self, item: Tagged) -> tuple[int, list[Any]]:  # type: ignore[override]
        return item.index, list(await self.fn(item.value))


_JOBS = {
    "map": (_TaggedMap, _AsyncTaggedMap),
    "filter": (_TaggedKeep, _AsyncTaggedKeep),
    "flat_map": (_TaggedSpread, _AsyncTaggedSpread),
}


def tagged_job(kind: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The function a journaled stage's workers run for ``fn``: see :meth:`FlowJournal.shaped`."""
    sync, asynchronous = _JOBS[kind]
    return asynchronous(fn) if is_async_callable(fn) else sync(fn)


def flow_identity(stages: Iterable[tuple[str, Callable[..., Any] | None]]) -> str:
    """What names a flow across runs: its stages' kinds and functions."""
    return "pipeline " + " | ".join(
        f"{kind} {identity_of(fn) if fn is not None else ''}".strip() for kind, fn in stages
    )


class FlowJournal:
    """The journal side of one Pipeline run (see the module's docstring).

    Opened when the run is made: raises JournalError at once if the journal cannot
    be used for this flow (see :meth:`Journal.begin`).
    """

    def __init__(self, setting: object, *, resume: bool, identity: str) -> None:
        self.journal, self._owned = open_journal(setting)
        try:
            self._finished = self.journal.begin(identity, resume=resume)
        except BaseException:
            if self._owned:
                self.journal.close()
            raise
        self._last_finished = max(self._finished, default=-1)
        self._lock = threading.Lock()
        self._alive: dict[int, int] = {}  # a source item absent here has one item alive
        self._outputs: dict[int, list[Any]] = {}
        self._failures: dict[int, list[tuple[Result[Any], bool]]] = {}
        self._digests: dict[int, int] = {}
        self._done: list[Row] = []  # finished, not yet committed
        self._ready = threading.Event()  # the source has checked a resumed input
        self._source_error: BaseException | None = None
        self._closed = False

    @property
    def _where(self) -> str:
        return f"journal {str(self.journal.path)!r}"

    # -- the source's side ------------------------------------------------------------

    def tagged(self, iterator: Iterator[Any]) -> Iterator[Tagged]:
        """The source's unfinished items, tagged, in order; checks a resumed input first."""
        try:
            prefix: list[Any] = []
            if self._last_finished >= 0:
                for item in iterator:
                    prefix.append(item)
                    if len(prefix) > self._last_finished:
                        break
            holes = self._check(prefix)
        except BaseException as error:
            self._source_error = error
            raise
        finally:
            self._ready.set()
        for index in holes:
            yield self._tag(index, prefix[index])
        del prefix
        yield from map(self._tag, range(self._last_finished + 1, 1 << 62), iterator)

    async def atagged(self, source: AsyncIterator[Any]) -> AsyncIterator[Tagged]:
        """Async twin of :meth:`tagged`."""
        try:
            prefix: list[Any] = []
            if self._last_finished >= 0:
                async for item in source:
                    prefix.append(item)
                    if len(prefix) > self._last_finished:
                        break
            holes = self._check(prefix)
        except BaseException as error:
            self._source_error = error
            raise
        finally:
            self._ready.set()
        try:
            for index in holes:
                yield self._tag(index, prefix[index])
            index = self._last_finished + 1
            async for item in source:
                yield self._tag(index, item)
                index += 1
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def _check(self, prefix: list[Any]) -> list[int]:
        """Check the items read against the journal; the indices of the unfinished ones."""
        path = self.journal.path
        return check_resumed_input(path, self._finished, prefix, noun="item", source="source")

    def _tag(self, index: int, item: Any) -> Tagged:
        self._digests[index] = digest_in(self.journal.path, index, item, "item")
        return Tagged(index, item)

    # -- the stages' side -------------------------------------------------------------

    def shaped(self, kind: str, batch: list[Any]) -> list[Tagged]:
        """What a stage passes on, from what its tagged job returned (see tagged_job)."""
        if kind == "map":
            return batch
        outputs: list[Tagged] = []
        with self._lock:
            if kind == "filter":
                for item, keep in batch:
                    if keep:
                        outputs.append(item)
                    else:
                        self._end_one(item.index)
            else:
                for index, values in batch:
                    outputs.extend(Tagged(index, value) for value in values)
                    self._alive[index] = self._alive.get(index, 1) + len(values) - 1
                    if not values:
                        self._end_one(index, already=True)
        return outputs

    def failed(self, result: Result[Any], *, dead: bool) -> None:
        """An item failed for good and was skipped or dead-lettered: it ends here.

        ``result.job`` is the item's value (see :meth:`untag`).
        """
        index = result.index
        with self._lock:
            self._failures.setdefault(index, []).append((result, dead))
            self._end_one(index)

    @staticmethod
    def untag(result: Result[Any]) -> Result[Any]:
        """A failed job's Result as the user sees it: its input's value, and the
        source index as ``index``."""
        tagged = result.job
        if isinstance(tagged, Tagged):
            result.job, result.index = tagged.value, tagged.index
        return result

    def _end_one(self, index: int, *, already: bool = False) -> None:
        """One item of source item ``index`` left the flow (under the lock)."""
        alive = self._alive.get(index, 1) - (0 if already else 1)
        if alive > 0:
            self._alive[index] = alive
            return
        self._alive.pop(index, None)
        outputs = self._outputs.pop(index, [])
        failures = self._failures.pop(index, [])
        digest = self._digests.pop(index, 0)
        if failures:
            status = DEAD if any(dead for _, dead in failures) else FAILED
            encoding, stored = encode((outputs, [result for result, _ in failures]))
            traceback = failures[0][0].traceback
        else:
            status, traceback = OK, None
            try:
                encoding, stored = encode(outputs)
            except TypeError as error:
                raise JournalError(
                    f"{self._where}: the outputs of source item {index:,} cannot be stored: {error}"
                ) from None
        self._done.append(Row(index, digest, status, encoding, stored, 1, 0.0, traceback))

    # -- the consumer's side ------------------------------------------------------------

    def wait_ready(self, stopped: Callable[[], bool]) -> None:
        """Block until the source has checked a resumed input; raise what it found."""
        while not self._ready.wait(_READY_POLL_SECONDS):
            if stopped():
                return
        if self._source_error is not None:
            raise self._source_error

    def delivered(self, items: list[Tagged]) -> list[Any]:
        """Items reaching the consumer: commit the source items they finish, then
        return their values. Raises JournalError if the commit fails."""
        with self._lock:
            outputs = self._outputs
            for item in items:
                outputs.setdefault(item.index, []).append(item.value)
                self._end_one(item.index)
        self.commit()
        return [item.value for item in items]

    def commit(self) -> None:
        """Commit the source items finished so far (the consumer's thread)."""
        with self._lock:
            rows, self._done = self._done, []
        if rows:
            self.journal.commit(rows)

    def replays(self) -> Iterator[tuple[list[Any], list[Result[Any]]]]:
        """The finished source items' stored outputs and dead letters, in source order."""
        for row in self.journal.replay(self._finished):
            stored = self.journal.outcome(row, "source item")
            if row.status == OK:
                yield stored, []
                continue
            outputs, failures = stored
            for result in failures:
                result.replayed = True
            yield outputs, failures if row.status == DEAD else []

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned:
            self.journal.close()


def check_flow_journal(journal: object, resume: object, source: object) -> None:
    """Refuse what a journaled flow cannot do, when the Pipeline is made."""
    check_resume(resume)
    if check_journal_setting(journal) is not None and isinstance(source, Channel):
        raise TypeError(
            "a journaled Pipeline reads its source again when it resumes: give it an "
            "iterable or an async iterable, not a Channel"
        )


def check_no_batch(journal: object, kind: str) -> None:
    if journal is not None and kind == "batch":
        raise ValueError(
            "a journaled Pipeline cannot have a batch stage yet: a batch merges items of "
            "several source items, which the journal keeps one by one"
        )
