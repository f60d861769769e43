// Package wal is a segmented, checksummed, append-only write-ahead log: the
// only thing between an acknowledged reading and its loss. It imports only
// the standard library and knows nothing of what its records hold.
//
// # Use
//
// Open a directory, Append records (one, or a batch at contiguous
// positions), read them back from any position with a Reader that tails
// the log as it grows, and RemoveBefore the position a consumer has
// committed. Every record gets a Position: 1 for the first record ever
// written, one more for each after. Readers see contiguous positions except
// where damage, a missing file or AdvanceTo left a gap; a position is
// handed out again only when the append that had it failed.
//
// # Durability
//
// Append returns when the record is durable under the SyncPolicy:
//
//   - SyncAlways: written and fsynced. Appenders that arrive while a write
//     is in progress queue up; the next write takes all of them with one
//     write and one fsync (group commit). Readers see only fsynced records.
//   - SyncInterval: written to the OS (a process crash loses nothing);
//     fsynced in the background every Options.SyncInterval, so a power loss
//     may lose up to that much.
//   - SyncNone: written to the OS; fsynced only when a segment is sealed
//     (rotation, Close) and at Open. A power loss may lose the active segment.
//
// New segments are created durably (header fsynced, directory fsynced)
// before a record goes in; the directory is fsynced after every create,
// rename and delete; the segment being sealed is fsynced on rotation. After
// a failed write or fsync, the callers of that batch get the error (the OS
// error is wrapped: errors.Is(err, syscall.ENOSPC) works), the records
// queued behind it take over its positions, and writing continues in a
// fresh segment, never in the one that failed.
//
// # On-disk format
//
// A log is a directory of segment files plus a LOCK file (flock'ed, holding
// the holder's PID, name and start time). A segment is named by its
// sequence number and the position of its first record, both as 16 hex
// digits, so that names sort in log order:
//
//	0000000000000003-00000000000a2f41.wal
//	└── sequence ──┘ └─ first pos. ─┘
//
// With Options.Preallocate, the next segment is a spare file named
// next.wal.tmp, renamed into place at rotation, so that appends overwrite
// allocated blocks and fdatasync has no metadata to commit. The spare is a
// segment RemoveBefore would have deleted (recycled), or else a file
// zero-filled in the background. The active segment is then longer than
// its records, with zeros or the recycled file's old records (positions
// below the segment's first) after them; sealing cuts it to its records.
// Open removes a leftover next.wal.tmp.
//
// All integers are little-endian. A segment starts with a 40-byte header
// and holds whole records back to back:
//
//	segment header (40 bytes)
//	+---------+---------+---------+---------+---------+-----------+
//	| magic   | version | crc32c  | seq     | first   | prevLast  |
//	| 8 bytes | u32 = 1 | u32     | u64     | u64     | u64       |
//	+---------+---------+---------+---------+---------+-----------+
//	magic is "FPWALSG\n"; crc32c (Castagnoli) covers the other 36 bytes.
//	prevLast is the last position before this segment when it was made:
//	positions in (prevLast, first) were skipped on purpose (AdvanceTo);
//	positions <= prevLast missing from the segments before are a gap.
//
//	record (16-byte header + payload)
//	+---------+---------+-----------+-------------------+
//	| crc32c  | length  | position  | payload           |
//	| u32     | u32     | u64       | length bytes      |
//	+---------+---------+-----------+-------------------+
//	crc32c covers length, position and payload, so a zeroed header is
//	never a valid record, and a record carries its own position: recovery
//	can tell a stale or shifted record from the one expected, and find the
//	records that follow damage.
//
// # Recovery
//
// Open reads every segment (a length is checked against the bytes left and
// MaxRecordSize before anything is read or allocated):
//
//   - A torn tail of the newest segment (bad bytes with nothing readable
//     after them, as a crash leaves) is cut at the last good record, and
//     the segment is fsynced. Writing continues in a new segment. Zeros, or
//     a recycled file's old records, after the last good record are space
//     never written: cut the same way, and not damage, in the newest segment
//     and in an older one whose successor's prevLast says nothing is missing.
//   - Damage with readable records after it, or at the end of a sealed
//     segment, is corruption: a *CorruptionError naming file and offset is
//     logged, counted (Stats.Corruptions) and kept in Problems; readers
//     skip the damaged bytes and get every intact record before and after.
//     The file is left as it is, as evidence, and renamed to *.broken
//     instead of being deleted when RemoveBefore reaches it.
//   - A segment whose header is bad is renamed to *.broken; a newest
//     segment whose header is all zeros or missing (a crash while rotating)
//     is removed. Files whose names are not segment names are left alone
//     and logged. Missing positions are reported as *GapError and counted
//     (Stats.Gaps).
//   - Records in a segment at or past the first position of the next
//     segment were left by a failed write and are ignored.
//
// Opening never fails on file contents; only on I/O errors.
package wal
