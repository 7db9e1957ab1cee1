"""
Checking the audit trail's hash chain.

Each ``AuditEntry`` stores ``prev_hash`` (the hash of the entry before it, by
id) and ``hash`` (SHA-256 over ``prev_hash`` and its own content, see
``AuditEntry.compute_hash``). Walking the entries in id order therefore finds:

* an **edited** entry: its content no longer gives its hash;
* a **deleted** entry: the next one's ``prev_hash`` is not the hash of the
  entry now before it;
* **reordered** entries (rows whose contents were swapped): the same broken link.

What a chain without an outside anchor cannot show: the newest entries being
cut off the end, or someone with write access recomputing every hash after a
change. Keep the last hash that ``verify_audit`` prints somewhere else (a
ticket, a log shipped off the machine) to catch those.
"""

from dataclasses import dataclass

from runs.models import AuditEntry


@dataclass(frozen=True)
class ChainReport:
    """The outcome of a walk: how many entries checked out, and the first problem."""

    verified: int
    last_id: int | None = None
    last_hash: str = ""
    broken_id: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_id is None


def verify_audit_chain(*, chunk_size: int = 2000) -> ChainReport:
    """Walk every audit entry in id order (streamed) and report the first break."""
    previous_id, previous_hash, verified = None, "", 0
    entries = AuditEntry.objects.order_by("id").iterator(chunk_size=chunk_size)
    for entry in entries:
        if entry.compute_hash() != entry.hash:
            return _broken(
                verified,
                previous_id,
                previous_hash,
                entry,
                "its content does not match its hash: the entry was edited after it was written",
            )
        if entry.prev_hash != previous_hash:
            if previous_id is None:
                problem = (
                    "it is the first entry but links to an earlier one: "
                    "the entries before it were deleted"
                )
            else:
                problem = (
                    f"it does not link to entry #{previous_id} before it (prev_hash differs "
                    "from that entry's hash): an entry between them was deleted, "
                    "or entries were reordered"
                )
            return _broken(verified, previous_id, previous_hash, entry, problem)
        previous_id, previous_hash = entry.pk, entry.hash
        verified += 1
    return ChainReport(verified=verified, last_id=previous_id, last_hash=previous_hash)


def _broken(verified, previous_id, previous_hash, entry, problem) -> ChainReport:
    return ChainReport(
        verified=verified,
        last_id=previous_id,
        last_hash=previous_hash,
        broken_id=entry.pk,
        problem=problem,
    )
