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
the others. A ``batch`` stage's list is one item of several source items: those
are finished together, once none of them has an item left in the flow, and the
list is stored once, with the first of them.
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
    "flow_identity",
    "tagged_job",
]

# How often the consumer, waiting for the source to check a resumed input, looks
# whether the flow was stopped meanwhile.
_READY_POLL_SECONDS = 0.1


class Tagged:
    """An item in a journaled flow: its value and the index of the source item it came from.

    A ``batch`` stage's list is one item of several source items: its ``index`` is
    then the tuple of theirs (one entry per item in the list).
    """

    __slots__ = ("index", "value")

    def __init__(self, index: int | tuple[int, ...], value: Any) -> None:
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
    def __call__(  # type: ignore[override]
        self, item: Tagged
    ) -> tuple[int | tuple[int, ...], list[Any]]:
        return item.index, list(self.fn(item.value))


class _AsyncTaggedSpread(_TaggedMap):
    async def __call__(  # type: ignore[override]
        self, item: Tagged
    ) -> tuple[int | tuple[int, ...], list[Any]]:
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
        # Source items whose values met in one batch list are finished together (so a
        # resume never sees the list without one of them): groups of them, by a root.
        self._root: dict[int, int] = {}
        self._failed_sources: dict[int, tuple[int, ...]] = {}  # by id() of their Result
        self._members: dict[int, list[int]] = {}
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
                        self._leave(item.index)
            else:
                for index, values in batch:
                    outputs.extend(Tagged(index, value) for value in values)
                    for source in _sources(index):
                        self._alive[source] = self._alive.get(source, 1) + len(values)
                    self._leave(index)
        return outputs

    def batched(self, items: list[Tagged]) -> Tagged:
        """A batch stage's list of ``items``, as one item of all their source items."""
        sources = tuple(source for item in items for source in _sources(item.index))
        return Tagged(sources, [item.value for item in items])

    def failed(self, result: Result[Any], *, dead: bool) -> None:
        """An item failed for good and was skipped or dead-lettered: it ends here.

        ``result.job`` is the item's value (see :meth:`untag`).
        """
        with self._lock:
            self._failures.setdefault(result.index, []).append((result, dead))
            self._leave(self._failed_sources.pop(id(result), result.index))

    def untag(self, result: Result[Any]) -> Result[Any]:
        """A failed job's Result as the user sees it: its input's value, and the
        source index as ``index``."""
        tagged = result.job
        if isinstance(tagged, Tagged):
            result.job, result.index = tagged.value, min(_sources(tagged.index))
            if isinstance(tagged.index, tuple):  # a batch list's: it ends for all of them
                self._failed_sources[id(result)] = tagged.index
        return result

    def _leave(self, index: int | tuple[int, ...]) -> None:
        """An item of the source item(s) ``index`` left the flow (under the lock)."""
        sources = _sources(index)
        if len(sources) > 1:
            self._join(sources)
        for source in sources:
            alive = self._alive.get(source, 1) - 1
            self._alive[source] = alive
            if alive == 0:
                self._finish_group(source)

    def _join(self, sources: tuple[int, ...]) -> None:
        """Put ``sources`` (and the groups they are in) into one group."""
        roots = {self._root.get(source, source) for source in sources}
        root = min(roots)
        members = self._members.setdefault(root, [root])
        for other in roots - {root}:
            members.extend(self._members.pop(other, [other]))
        for source in sources:
            if source not in members:
                members.append(source)
        for member in members:
            self._root[member] = root

    def _finish_group(self, source: int) -> None:
        """Finish ``source``'s group once none of its members has an item in the flow."""
        root = self._root.get(source, source)
        members = self._members.get(root, [source])
        if any(self._alive.get(member, 1) for member in members):
            return
        for member in members:
            self._finish(member)
            self._alive.pop(member, None)
            self._root.pop(member, None)
        self._members.pop(root, None)

    def _finish(self, index: int) -> None:
        """Source item ``index`` is finished: its row, to commit (under the lock)."""
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
                # A batch list is stored once, with the first of its source items.
                outputs.setdefault(min(_sources(item.index)), []).append(item.value)
                self._leave(item.index)
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


def _sources(index: int | tuple[int, ...]) -> tuple[int, ...]:
    return index if isinstance(index, tuple) else (index,)
