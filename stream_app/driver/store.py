"""Local state: one RocksDB instance per owned partition, holding only committed writes.

A processor stages its writes (`stage`); reads see the staged value first, then RocksDB. The driver
turns the staged writes into changelog records inside the open transaction and, only after the
transaction committed, applies them to RocksDB in one `WriteBatch` together with the changelog offset
they reflect (`apply_staged`). So the local copy never holds an uncommitted write, and after any stop a
partition replays only the changelog tail past its stored offset (`driver/restore.py`). After an abort
the staged writes are dropped (`discard_staged`).

Beside each profile the store keeps its schedule entry (engine/schedule_entry.py: what a rebuild of
the partition's due schedule needs of it), in a column family of its own, written in the same
`WriteBatch` as the profile, and carried in the changelog record's header so that a restore or a standby
copy has it too. The entries are vouched for (`entries_vouched`) only while they are complete: a
store is vouched for when it opens with the same changelog position in both families; while it is,
every write of this code puts or deletes each profile's entry with the profile and moves both
positions. A write by a release without entries moves the profiles' position alone, and a store that
is not vouched for moves it alone too, so the two stay apart until a rebuild has read every profile
and replaced the whole family (`keep_schedule_entries(complete=True)`); meanwhile `schedule_entries`
says the entries cannot be used.

All instances share one memory budget (`StoreBudget`): one LRU block cache, with every memtable charged
to it by one write-buffer manager, so RocksDB's memory is bounded by a single figure however many
partitions a process owns.

When the disk fails (docs/reliability.md, "Disk full" and "A corrupted local store"):
- a write or an open refused because the disk is full, read-only or not permitted raises
  `LocalStateUnwritable`: the process stops and the local copy is kept exactly as it is (it is never
  deleted for this; the changelog holds whatever it misses);
- a copy RocksDB reports corrupt (`Corruption: ...`) when it is opened, or when every block is read
  once with its checksum right after, is moved aside to `<folder>.corrupt` and an empty one is
  opened in its place: the restore then reads the partition's whole changelog. Corruption found while
  running moves the copy aside the same way and raises `LocalStateCorrupt` (the next start restores it).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import rocksdict

log = logging.getLogger(__name__)
MIB = 1 << 20
# local bookkeeping, never sent to the changelog: the next changelog offset to restore from
OFFSET_KEY = b"\x00\x00driver:changelog-next-offset"
ENTRIES_FAMILY = "schedule-entries"  # the column family of the profiles' schedule entries
# in that family: the changelog position its entries are complete for (equal to OFFSET_KEY's, else unusable)
ENTRIES_OFFSET_KEY = OFFSET_KEY
ENTRIES_PER_WRITE = 20_000  # schedule entries a rebuild computed, per WriteBatch
CORRUPT_SUFFIX = ".corrupt"  # where a corrupt copy is moved: the partition's folder name plus this


class StoreBudget:
    """One block cache and one write-buffer manager for every partition store of a process."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.cache = rocksdict.Cache(budget_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(budget_bytes // 2, False, self.cache)
        # small memtables: each partition's flush at 1/32 of the budget, so the memtables reach their
        # working size in the first minutes instead of creeping up for an hour
        self.write_buffer_size = max(1 * MIB, min(8 * MIB, budget_bytes // 32))
        self.entries_write_buffer_size = self.write_buffer_size // 4

    def options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)  # the schedule entries' family, in a store from before it
        # paranoid_checks stays at RocksDB's default (on, per the OPTIONS file); rocksdict's explicit
        # set_paranoid_checks(True) made a write on a full disk block for good (measured on a full tmpfs,
        # rocksdict 0.3.29) instead of failing. A corrupt file fails the open, and a corrupt block is found
        # by the check at open (PartitionStore._open_verified)
        options.set_max_open_files(256)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(2)
        options.set_target_file_size_base(16 * MIB)
        options.set_write_buffer_manager(self.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(10, True)
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options

    def entries_options(self) -> rocksdict.Options:
        """The schedule entries' family: as the profiles', with memtables a quarter of their size (an
        entry is about a third of a profile), so that the second family adds little to the memtables'
        slack above the budget's flush point."""
        options = self.options()
        options.set_write_buffer_size(self.entries_write_buffer_size)
        return options

    def usage(self) -> dict[str, int]:
        """Bytes in the shared cache (blocks and the memtables charged to it) and in memtables."""
        return {"cache": self.cache.get_usage(), "memtables": self.write_buffers.get_usage()}


class LocalStateUnwritable(Exception):
    """The disk holding a partition store refused to write: it is full (`full`), or read-only or not
    permitted. The store is kept as it is; the process cannot go on until the disk is fixed."""

    def __init__(self, path: Path, partition: int, full: bool, detail: str) -> None:
        self.path, self.partition, self.full, self.detail = path, partition, full, detail
        problem = "the disk is full" if full else "the disk is read-only or the folder is not writable"
        super().__init__(f"partition {partition}: RocksDB could not write its local state at {path}: {problem} ({detail})")


class LocalStateCorrupt(Exception):
    """RocksDB found a partition store corrupt while the process ran; it has been moved aside, so the next
    start restores the partition from its changelog."""


class LocalStateInUse(Exception):
    """Another process holds the partition store's RocksDB lock: two workers share one data folder."""

    def __init__(self, path: Path, partition: int, detail: str) -> None:
        self.path, self.partition = path, partition
        super().__init__(f"partition {partition}'s local state at {path} is in use by another process ({detail}). Each "
                         "worker process needs a data folder of its own: give each one its own STREAM_APP_DATA_DIR, or "
                         "run one `stream-app worker --processes N`, which gives each of its processes one")


def in_use(exc: BaseException) -> bool:
    """RocksDB's answer when another process (or another handle in this one) holds the folder's LOCK file."""
    text = str(exc)
    return "/LOCK" in text and ("lock hold by" in text or "Resource temporarily unavailable" in text or "While lock file" in text)


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def disk_refused(exc: BaseException) -> bool | None:
    """True when `exc` says the disk is full, False when it is read-only or not permitted, None for any
    other error. RocksDB and rocksdict raise a plain Exception whose text carries the system's message
    ("IO error: No space left on device: While appending to file: ...", "No space left on device (os
    error 28)"); Python raises OSError."""
    codes = {exc.errno} if isinstance(exc, OSError) and exc.errno is not None else set()
    text = str(exc)
    for code in DISK_FULL | NOT_WRITABLE:
        if os.strerror(code) in text or f"(os error {code})" in text:
            codes.add(code)
    if codes & DISK_FULL:
        return True
    if codes & NOT_WRITABLE:
        return False
    return None


def is_corruption(exc: BaseException) -> bool:
    """RocksDB's Status::Corruption: a checksum mismatch, a bad or truncated file, a missing table file,
    an unreadable CURRENT or MANIFEST. Never a full or read-only disk (those keep the store)."""
    return str(exc).startswith("Corruption:") and disk_refused(exc) is None


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


class PartitionStore:
    """A partition's profiles: str keys, bytes values, committed in RocksDB plus staged writes.

    `fault_hook` (tests only; the driver passes its own, which only code building a driver can set) is
    called with "local_open" and "local_write" just before RocksDB opens the folder or writes a batch,
    inside the error handling: raising there what RocksDB raises on a full disk acts as one."""

    def __init__(self, path: Path, budget: StoreBudget, changelog_topic: str, partition: int,
                 fault_hook: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.changelog_topic = changelog_topic
        self.partition = partition
        self.fault_hook = fault_hook
        self._options = budget.options()
        self._entries_options = budget.entries_options()
        self.closed = False
        # the entries' column family: its view (reads) and its handle (writes). Both hold the database
        # open (and its LOCK) until dropped, so they are never kept in a local variable that a traceback
        # could keep alive: use `_entries_family()` and `_entries_handle()`
        self._entries_view: rocksdict.Rdict | None = None
        self._entries_cf: rocksdict.ColumnFamily | None = None
        self.entries_vouched = False
        self.db = self._open_verified()
        self.staged: dict[str, bytes | None] = {}  # None = delete
        self.staged_entries: dict[str, bytes] = {}  # the schedule entries of staged profiles (absent: none)

    # -- the engine's view --------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        if key in self.staged:
            return self.staged[key]
        try:
            return self.db.get(_key(key))
        except Exception as exc:
            raise self._failure(exc) from exc

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every profile, staged writes included (one pass; used when a partition is assigned and when
        definitions change). rocksdict's own `items()` ends early, without an error, where it meets a
        corrupt block; this one checks the iterator's status at the end."""
        staged = self.staged
        iterator = self.db.iter()
        iterator.seek_to_first()
        while iterator.valid():
            raw_key = iterator.key()
            if raw_key != OFFSET_KEY:
                key = raw_key.decode("utf-8", "surrogatepass")
                if key not in staged:
                    yield key, iterator.value()
            iterator.next()
        error = _iteration_error(iterator)
        del iterator  # the database can only be closed once its iterators are gone
        if error is not None:
            raise self._failure(error) from error
        for key, value in list(staged.items()):
            if value is not None:
                yield key, value

    def schedule_entries(self) -> Iterator[tuple[str, bytes]] | None:
        """Every profile's key with its schedule entry (b"" where it has none), or None when the entries
        cannot be vouched for (`entries_vouched`), or writes are staged. Used when a partition is
        assigned, before anything is staged."""
        if self.staged or not self.entries_vouched:
            return None
        return self._iterate_entries()

    def _iterate_entries(self) -> Iterator[tuple[str, bytes]]:
        iterator = self._entries_family().iter()
        iterator.seek_to_first()
        while iterator.valid():
            raw_key = iterator.key()
            if raw_key != ENTRIES_OFFSET_KEY:
                yield raw_key.decode("utf-8", "surrogatepass"), iterator.value()
            iterator.next()
        error = _iteration_error(iterator)
        del iterator
        if error is not None:
            raise self._failure(error) from error

    def keep_schedule_entries(self, entries: dict[str, bytes], complete: bool) -> None:
        """Store schedule entries a rebuild computed (local only: they are derived from the committed
        profiles). `complete`: they are every profile's (the stored ones could not be vouched for), so
        they replace the whole family and are vouched for from now on."""
        if self.staged:
            return  # computed from staged profiles: not the committed state
        if complete:
            self.entries_vouched = False
            self._entries_view = self._entries_cf = None
            try:
                self.db.drop_column_family(ENTRIES_FAMILY)
                self.db.create_column_family(ENTRIES_FAMILY, self._entries_options)
                self._attach_entries(self.db)
            except Exception as exc:
                raise self._failure(exc) from exc
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, entry in entries.items():
            batch.put(_key(key), entry, self._entries_handle())
            if batch.len() >= ENTRIES_PER_WRITE:
                self._write(batch)
                batch = rocksdict.WriteBatch(raw_mode=True)
        position = self.next_changelog_offset() if complete else None
        if position is not None:  # last: entries written only in part are never vouched for
            batch.put(ENTRIES_OFFSET_KEY, str(position).encode(), self._entries_handle())
        if not batch.is_empty():
            self._write(batch)
        if complete:
            self.entries_vouched = True

    # -- the driver's side ----------------------------------------------------------------------------
    def stage(self, writes: dict[str, bytes | None], entries: dict[str, bytes] | None = None) -> None:
        """Writes for the open transaction, with the schedule entries of the profiles written."""
        self.staged.update(writes)
        staged_entries = self.staged_entries
        for key in writes:
            entry = entries.get(key) if entries is not None else None
            if entry is None:
                staged_entries.pop(key, None)
            else:
                staged_entries[key] = entry

    def discard_staged(self) -> None:
        self.staged = {}
        self.staged_entries = {}

    def changelog_records(self) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
        """(key, profile or None for a delete, its schedule entry or None) per staged write."""
        entries = self.staged_entries
        for key, value in self.staged.items():
            yield _key(key), value, entries.get(key)

    def apply_staged(self, next_changelog_offset: int | None) -> None:
        """After the commit: the staged writes, their schedule entries and the changelog position, in one
        atomic write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        entries = self.staged_entries
        for key, value in self.staged.items():
            self._add_profile(batch, _key(key), value, entries.get(key))
        if next_changelog_offset is not None:
            self._add_position(batch, next_changelog_offset)
        if not batch.is_empty():
            self._write(batch)
        self.staged = {}
        self.staged_entries = {}

    def next_changelog_offset(self) -> int | None:
        try:
            raw = self.db.get(OFFSET_KEY)
        except Exception as exc:
            raise self._failure(exc) from exc
        return int(raw) if raw is not None else None

    def write_restored(self, records: list[tuple[bytes, bytes | None, bytes | None]], next_offset: int) -> None:
        """Restore: a chunk of raw changelog records (key, profile or None, the schedule entry from its
        header or None) and the position after them, in one write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value, entry in records:
            self._add_profile(batch, key, value, entry)
        self._add_position(batch, next_offset)
        self._write(batch)

    def _add_profile(self, batch: rocksdict.WriteBatch, key: bytes, value: bytes | None, entry: bytes | None) -> None:
        """A profile's write or delete, and its schedule entry's (b"" for a profile without one: never an
        older entry left beside a newer profile)."""
        if value is None:
            batch.delete(key)
            batch.delete(key, self._entries_handle())
        else:
            batch.put(key, value)
            batch.put(key, entry or b"", self._entries_handle())

    def _add_position(self, batch: rocksdict.WriteBatch, next_offset: int) -> None:
        """The changelog position; in the entries' family too while they are vouched for."""
        position = str(next_offset).encode()
        batch.put(OFFSET_KEY, position)
        if self.entries_vouched:
            batch.put(ENTRIES_OFFSET_KEY, position, self._entries_handle())

    def wipe(self) -> None:
        """Forget the local copy (it does not match the changelog any more); restore starts from zero.
        Only for that reason: a full or read-only disk or a corrupt copy never comes here."""
        self._close_db(self.db)
        rocksdict.Rdict.destroy(str(self.path))
        self.db = self._open()

    def close(self) -> None:
        """Close RocksDB. Never raises: after a failed write RocksDB refuses to close cleanly ("Writer has
        previous error"), and a stop must not hide the error that caused it."""
        if self.closed:
            return
        self.closed = True
        try:
            self._close_db(self.db)
        except Exception as exc:  # noqa: BLE001 - reported; the process is stopping or the copy is set aside
            log.warning("partition %d: closing the local store at %s: %s", self.partition, self.path, exc)

    # -- failures -------------------------------------------------------------------------------------
    def _hook(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    def _write(self, batch: rocksdict.WriteBatch) -> None:
        try:
            self._hook("local_write")
            self.db.write(batch)
        except Exception as exc:
            raise self._failure(exc) from exc

    def _open(self) -> rocksdict.Rdict:
        """Open (or create) the folder's RocksDB; a disk that refuses raises `LocalStateUnwritable`."""
        try:
            self._hook("local_open")
            self.path.mkdir(parents=True, exist_ok=True)
            # every family named with the budget's options: without `column_families`, rocksdict opens an
            # existing store with the options of its OPTIONS file, whose block cache is not the shared one
            db = rocksdict.Rdict(str(self.path), self._options, column_families={ENTRIES_FAMILY: self._entries_options})
        except Exception as exc:
            if in_use(exc):
                raise LocalStateInUse(self.path, self.partition, _one_line(exc)) from exc
            full = disk_refused(exc)
            if full is None:
                raise
            raise LocalStateUnwritable(self.path, self.partition, full, str(exc)) from exc
        try:
            self._attach_entries(db)
            self.entries_vouched = db.get(OFFSET_KEY) == self._entries_family().get(ENTRIES_OFFSET_KEY)
        except Exception:
            self._close_quietly(db)
            raise
        self.closed = False
        return db

    def _attach_entries(self, db: rocksdict.Rdict) -> None:
        """The schedule entries' column family (created at the open when missing: a new copy, or one
        written by a release without entries, whose positions then differ)."""
        self._entries_view = db.get_column_family(ENTRIES_FAMILY)
        self._entries_cf = db.get_column_family_handle(ENTRIES_FAMILY)

    def _entries_family(self) -> rocksdict.Rdict:
        if self._entries_view is None:
            raise RuntimeError(f"partition {self.partition}: the schedule entries' column family is not open")
        return self._entries_view

    def _entries_handle(self) -> rocksdict.ColumnFamily:
        """For a `WriteBatch`; never None (a None handle would write to the profiles' family)."""
        if self._entries_cf is None:
            raise RuntimeError(f"partition {self.partition}: the schedule entries' column family is not open")
        return self._entries_cf

    def _close_db(self, db: rocksdict.Rdict) -> None:
        """Close RocksDB: the column family's objects hold the database (and its lock) until dropped."""
        self._entries_view = self._entries_cf = None
        self.entries_vouched = False
        db.close()

    def _open_verified(self) -> rocksdict.Rdict:
        """Open the store and read every key once with checksums verified, bypassing the shared cache (about
        0.04-0.25 s per 100,000 profiles), so that a corrupt copy is found before its changelog tail is
        restored onto it. A corrupt copy is moved aside and an empty store is opened instead."""
        try:
            db = self._open()
        except (LocalStateUnwritable, LocalStateInUse):
            raise
        except Exception as exc:
            if not is_corruption(exc):
                raise
            self._set_aside(exc)
            return self._open()
        read = rocksdict.ReadOptions()
        read.set_verify_checksums(True)
        read.fill_cache(False)
        error = None
        for family in (db, self._entries_family()):
            iterator = family.iter(read)
            iterator.seek_to_first()
            while iterator.valid():
                iterator.next()
            error = _iteration_error(iterator)
            del iterator
            if error is not None:
                break
        family = None  # the family objects hold the database open
        if error is None:
            return db
        self._close_quietly(db)
        if not is_corruption(error):
            raise error
        self._set_aside(error)
        return self._open()

    def _failure(self, exc: Exception) -> Exception:
        """The exception to raise for a failed RocksDB call while running: a disk that refuses writes
        (`LocalStateUnwritable`, the copy kept), corruption (`LocalStateCorrupt`, the copy moved aside so
        that the next start restores it), or the error itself."""
        if isinstance(exc, (LocalStateUnwritable, LocalStateCorrupt)):
            return exc
        full = disk_refused(exc)
        if full is not None:
            return LocalStateUnwritable(self.path, self.partition, full, str(exc))
        if not is_corruption(exc):
            return exc
        self.closed = True
        self._close_quietly(self.db)
        aside = self._set_aside(exc, "will be rebuilt from the changelog when the worker starts again")
        return LocalStateCorrupt(f"partition {self.partition}: the local copy of its state was found corrupt while running "
                                 f"({_one_line(exc)}) and moved to {aside}; the next start rebuilds it from the changelog "
                                 f"{self.changelog_topic}")

    def _close_quietly(self, db: rocksdict.Rdict) -> None:
        try:
            self._close_db(db)
        except Exception:  # noqa: BLE001 - a corrupt or failed store may refuse to close; it is set aside anyway
            pass

    def _set_aside(self, exc: BaseException, rebuilt: str = "is being rebuilt from the changelog") -> Path:
        """Move the corrupt copy to `<folder>.corrupt` (replacing an older one: one per partition, so
        repeated corruption cannot fill the disk); the partition's folder is then free for a new copy."""
        aside = self.path.with_name(self.path.name + CORRUPT_SUFFIX)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(self.path, aside)
        log.warning("partition %d: the local copy of its state at %s is corrupt (%s). It was moved to %s and the "
                    "partition %s (%s). A disk that corrupts files may be failing: check it. Delete %s once it is "
                    "no longer needed (to inspect it, or for a bug report)",
                    self.partition, self.path, _one_line(exc), aside, rebuilt, self.changelog_topic, aside)
        return aside


def _iteration_error(iterator: rocksdict.RdictIter) -> Exception | None:
    """Why an iteration ended early: rocksdict's iterators stop at an error (a corrupt block) without
    raising, and only their status tells. The error is returned without its traceback, which would keep
    the iterator alive, and the database open (RocksDB's lock held) with it."""
    try:
        iterator.status()
    except Exception as exc:  # noqa: BLE001 - RocksDB's errors are plain Exceptions
        return exc.with_traceback(None)
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
