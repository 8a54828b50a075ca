"""The queue of waiting visitors and who talks to whom, free of I/O.

``Pairing`` keeps these invariants, which the property tests check after every
operation:

- the queue is in arrival order, except that conversations handed back by a
  volunteer who left go to the front;
- a conversation is either waiting in the queue or assigned to exactly one
  volunteer, never both;
- no volunteer has more conversations than their capacity;
- only a volunteer whose "Available" switch is on can accept, or receive a
  conversation by transfer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class PairingError(Exception):
    """An operation the pairing rules reject; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class VolunteerSlot:
    """One volunteer's availability, capacity and conversations, oldest first."""

    capacity: int
    available: bool = False
    conversations: list[str] = field(default_factory=list)

    @property
    def has_room(self) -> bool:
        return len(self.conversations) < self.capacity


class Pairing:
    """First come, first served pairing of waiting visitors with volunteers."""

    def __init__(self) -> None:
        self._queue: list[str] = []
        self._volunteers: dict[int, VolunteerSlot] = {}
        self._assigned: dict[str, int] = {}

    # Visitors

    def enqueue(self, conversation: str) -> int:
        """Append a conversation to the queue; return its position (1 = next)."""
        self._check_new(conversation)
        self._queue.append(conversation)
        return len(self._queue)

    def requeue_front(self, conversations: list[str]) -> None:
        """Put conversations at the front of the queue, keeping their order."""
        for conversation in conversations:
            self._check_new(conversation)
        self._queue[:0] = conversations

    def remove(self, conversation: str) -> int | None:
        """Take a conversation out of the queue or its volunteer's list.

        Returns the id of the volunteer who had it, or None. Unknown ids are
        ignored, so ending twice is harmless.
        """
        if conversation in self._queue:
            self._queue.remove(conversation)
            return None
        volunteer = self._assigned.pop(conversation, None)
        if volunteer is not None:
            self._volunteers[volunteer].conversations.remove(conversation)
        return volunteer

    def position(self, conversation: str) -> int | None:
        """Return the 1-based queue position, or None when not waiting."""
        try:
            return self._queue.index(conversation) + 1
        except ValueError:
            return None

    @property
    def queue(self) -> list[str]:
        """Return a copy of the queue, next first."""
        return list(self._queue)

    def assigned_count(self) -> int:
        """Return how many conversations have a volunteer."""
        return len(self._assigned)

    def volunteer_of(self, conversation: str) -> int | None:
        """Return the volunteer assigned to a conversation, or None."""
        return self._assigned.get(conversation)

    # Volunteers

    def add_volunteer(self, volunteer: int, capacity: int) -> None:
        """Register a volunteer, switched off, unless already known."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if volunteer not in self._volunteers:
            self._volunteers[volunteer] = VolunteerSlot(capacity=capacity)

    def set_available(self, volunteer: int, available: bool) -> None:
        """Switch a volunteer's availability; their current chats stay with them."""
        self._slot(volunteer).available = available

    def is_available(self, volunteer: int) -> bool:
        slot = self._volunteers.get(volunteer)
        return slot is not None and slot.available

    def any_available(self) -> bool:
        """Return True when at least one volunteer has "Available" switched on."""
        return any(slot.available for slot in self._volunteers.values())

    def available_volunteers(self) -> list[int]:
        """Return the volunteers whose "Available" switch is on."""
        return [
            volunteer for volunteer, slot in self._volunteers.items() if slot.available
        ]

    def conversations_of(self, volunteer: int) -> list[str]:
        """Return the conversations assigned to a volunteer, oldest first."""
        slot = self._volunteers.get(volunteer)
        return list(slot.conversations) if slot else []

    def capacity_of(self, volunteer: int) -> int:
        return self._slot(volunteer).capacity

    def assign(self, volunteer: int, conversation: str) -> None:
        """Record an assignment without the availability check.

        Used to restore assignments from storage after a restart; the capacity
        rule still holds.
        """
        slot = self._slot(volunteer)
        if conversation in self._assigned or conversation in self._queue:
            raise PairingError("already_taken", "The conversation is already placed.")
        if not slot.has_room:
            raise PairingError("at_capacity", "The volunteer is at capacity.")
        slot.conversations.append(conversation)
        self._assigned[conversation] = volunteer

    def accept(self, volunteer: int, conversation: str) -> None:
        """Give a waiting conversation to a volunteer.

        Raises ``PairingError`` with ``not_available``, ``at_capacity`` or
        ``already_taken``; on error nothing changes.
        """
        slot = self._slot(volunteer)
        if not slot.available:
            raise PairingError("not_available", "Switch on Available to accept chats.")
        if not slot.has_room:
            raise PairingError(
                "at_capacity",
                f"You already have {len(slot.conversations)} chats, your capacity.",
            )
        if conversation not in self._queue:
            raise PairingError("already_taken", "This visitor is no longer waiting.")
        self._queue.remove(conversation)
        slot.conversations.append(conversation)
        self._assigned[conversation] = volunteer

    def transfer(self, conversation: str, to_volunteer: int) -> int:
        """Move an assigned conversation to another volunteer; return the old one.

        The new volunteer must be available, have room and differ from the
        current one. Raises ``PairingError`` with ``not_found`` (the conversation
        has no volunteer, or the volunteer is unknown), ``same_volunteer``,
        ``not_available`` or ``at_capacity``; on error nothing changes.
        """
        current = self._assigned.get(conversation)
        if current is None:
            raise PairingError("not_found", "This conversation has no volunteer.")
        slot = self._slot(to_volunteer)
        if to_volunteer == current:
            raise PairingError(
                "same_volunteer", "The conversation is already with this volunteer."
            )
        if not slot.available:
            raise PairingError("not_available", "That volunteer is not available.")
        if not slot.has_room:
            raise PairingError("at_capacity", "That volunteer is at capacity.")
        self._volunteers[current].conversations.remove(conversation)
        slot.conversations.append(conversation)
        self._assigned[conversation] = to_volunteer
        return current

    def release(self, volunteer: int) -> list[str]:
        """Hand a departing volunteer's chats back to the front of the queue.

        The volunteer is switched off. Returns the conversations handed back.
        """
        slot = self._volunteers.get(volunteer)
        if slot is None:
            return []
        handed_back = list(slot.conversations)
        slot.conversations.clear()
        slot.available = False
        for conversation in handed_back:
            del self._assigned[conversation]
        self.requeue_front(handed_back)
        return handed_back

    def _slot(self, volunteer: int) -> VolunteerSlot:
        try:
            return self._volunteers[volunteer]
        except KeyError:
            raise PairingError("not_found", f"Unknown volunteer {volunteer}.") from None

    def _check_new(self, conversation: str) -> None:
        if conversation in self._assigned or conversation in self._queue:
            raise PairingError(
                "already_taken", f"Conversation {conversation} is already placed."
            )
