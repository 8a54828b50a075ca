"""Property and example tests of ``relay.pairing``.

The state machine keeps its own model of the queue and of each volunteer, built
from plain lists and dicts, and compares ``Pairing`` with it after every step
through the public methods only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from relay.pairing import Pairing, PairingError

VOLUNTEER_IDS = st.integers(min_value=0, max_value=3)
# Ids the machine never adds, to exercise the unknown volunteer and
# conversation paths.
UNKNOWN_VOLUNTEER = 99
NEVER_ENQUEUED = "never-enqueued"


@dataclass
class ModelVolunteer:
    capacity: int
    available: bool = False
    conversations: list[str] = field(default_factory=list)


class PairingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pairing = Pairing()
        self.queue: list[str] = []
        self.volunteers: dict[int, ModelVolunteer] = {}
        self.arrivals: list[str] = []
        self.ended: set[str] = set()
        self.handed_back: set[str] = set()

    # Model helpers

    def expected_accept_error(self, volunteer: int, conversation: str) -> str | None:
        """Return the code ``accept`` must raise, in the module's documented order."""
        model = self.volunteers.get(volunteer)
        if model is None:
            return "not_found"
        if not model.available:
            return "not_available"
        if len(model.conversations) >= model.capacity:
            return "at_capacity"
        if conversation not in self.queue:
            return "already_taken"
        return None

    def snapshot(self) -> tuple[list[str], dict[int, tuple[bool, list[str]]]]:
        """Return everything observable about ``Pairing`` through its public API."""
        volunteers = {
            volunteer: (
                self.pairing.is_available(volunteer),
                self.pairing.conversations_of(volunteer),
            )
            for volunteer in self.volunteers
        }
        return self.pairing.queue, volunteers

    def model_owner(self, conversation: str) -> int | None:
        for volunteer, model in self.volunteers.items():
            if conversation in model.conversations:
                return volunteer
        return None

    def draw_volunteer(self, data: st.DataObject) -> int:
        """Draw a known volunteer, or now and then one ``Pairing`` never saw."""
        # Known ids are listed four times so most draws exercise real volunteers.
        choices = [*sorted(self.volunteers) * 4, UNKNOWN_VOLUNTEER]
        return data.draw(st.sampled_from(choices), label="volunteer")

    def can_accept_some(self) -> bool:
        return bool(self.queue) and any(
            model.available and len(model.conversations) < model.capacity
            for model in self.volunteers.values()
        )

    @initialize(
        capacities=st.lists(
            st.integers(min_value=1, max_value=3), min_size=1, max_size=3
        ),
        available=st.booleans(),
    )
    def start_with_volunteers(self, capacities: list[int], available: bool) -> None:
        for volunteer, capacity in enumerate(capacities):
            self.add_volunteer(volunteer, capacity)
            self.pairing.set_available(volunteer, available)
            self.volunteers[volunteer].available = available

    # Visitors

    @rule()
    def enqueue(self) -> None:
        conversation = f"c{len(self.arrivals)}"
        position = self.pairing.enqueue(conversation)
        self.arrivals.append(conversation)
        self.queue.append(conversation)
        assert position == len(self.queue)

    @precondition(lambda self: bool(self.arrivals))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        conversation = data.draw(st.sampled_from(self.arrivals), label="conversation")
        owner = self.model_owner(conversation)
        returned = self.pairing.remove(conversation)
        if conversation in self.queue:
            self.queue.remove(conversation)
        if owner is not None:
            self.volunteers[owner].conversations.remove(conversation)
        self.ended.add(conversation)
        assert returned == owner

    # Volunteers

    @rule(volunteer=VOLUNTEER_IDS, capacity=st.integers(min_value=1, max_value=3))
    def add_volunteer(self, volunteer: int, capacity: int) -> None:
        self.pairing.add_volunteer(volunteer, capacity)
        # A volunteer who is already known keeps their capacity and chats.
        self.volunteers.setdefault(volunteer, ModelVolunteer(capacity=capacity))

    @precondition(lambda self: bool(self.volunteers))
    @rule(data=st.data(), available=st.booleans())
    def set_available(self, data: st.DataObject, available: bool) -> None:
        volunteer = self.draw_volunteer(data)
        if volunteer not in self.volunteers:
            with pytest.raises(PairingError) as raised:
                self.pairing.set_available(volunteer, available)
            assert raised.value.code == "not_found"
            return
        self.pairing.set_available(volunteer, available)
        self.volunteers[volunteer].available = available

    @rule(data=st.data())
    def accept_any(self, data: st.DataObject) -> None:
        """Accept with a random volunteer and conversation, valid or not."""
        volunteer = self.draw_volunteer(data)
        conversation = data.draw(
            st.sampled_from([*self.arrivals, NEVER_ENQUEUED]), label="conversation"
        )
        expected_code = self.expected_accept_error(volunteer, conversation)
        before = self.snapshot()
        if expected_code is None:
            self.pairing.accept(volunteer, conversation)
            self.queue.remove(conversation)
            self.volunteers[volunteer].conversations.append(conversation)
            return
        with pytest.raises(PairingError) as raised:
            self.pairing.accept(volunteer, conversation)
        assert raised.value.code == expected_code
        assert self.snapshot() == before

    @precondition(lambda self: self.can_accept_some())
    @rule(data=st.data())
    def accept_valid(self, data: st.DataObject) -> None:
        """Accept a queued conversation with a volunteer who has room."""
        ready = sorted(
            volunteer
            for volunteer, model in self.volunteers.items()
            if model.available and len(model.conversations) < model.capacity
        )
        volunteer = data.draw(st.sampled_from(ready), label="volunteer")
        conversation = data.draw(st.sampled_from(self.queue), label="conversation")
        self.pairing.accept(volunteer, conversation)
        self.queue.remove(conversation)
        self.volunteers[volunteer].conversations.append(conversation)

    def expected_transfer_error(self, conversation: str, volunteer: int) -> str | None:
        """Return the code ``transfer`` must raise, in the documented order."""
        owner = self.model_owner(conversation)
        model = self.volunteers.get(volunteer)
        if owner is None or model is None:
            return "not_found"
        if owner == volunteer:
            return "same_volunteer"
        if not model.available:
            return "not_available"
        if len(model.conversations) >= model.capacity:
            return "at_capacity"
        return None

    @rule(data=st.data())
    def transfer_any(self, data: st.DataObject) -> None:
        """Transfer a random conversation to a random volunteer, valid or not."""
        conversation = data.draw(
            st.sampled_from([*self.arrivals, NEVER_ENQUEUED]), label="conversation"
        )
        volunteer = self.draw_volunteer(data)
        expected_code = self.expected_transfer_error(conversation, volunteer)
        before = self.snapshot()
        if expected_code is None:
            owner = self.model_owner(conversation)
            assert owner is not None
            assert self.pairing.transfer(conversation, volunteer) == owner
            self.volunteers[owner].conversations.remove(conversation)
            self.volunteers[volunteer].conversations.append(conversation)
            return
        with pytest.raises(PairingError) as raised:
            self.pairing.transfer(conversation, volunteer)
        assert raised.value.code == expected_code
        assert self.snapshot() == before

    @precondition(
        lambda self: any(model.conversations for model in self.volunteers.values())
    )
    @rule(data=st.data())
    def transfer_valid(self, data: st.DataObject) -> None:
        """Transfer an assigned conversation to another volunteer with room."""
        assigned = sorted(
            conversation
            for model in self.volunteers.values()
            for conversation in model.conversations
        )
        conversation = data.draw(st.sampled_from(assigned), label="conversation")
        owner = self.model_owner(conversation)
        ready = sorted(
            volunteer
            for volunteer, model in self.volunteers.items()
            if volunteer != owner
            and model.available
            and len(model.conversations) < model.capacity
        )
        if not ready:
            return
        volunteer = data.draw(st.sampled_from(ready), label="volunteer")
        assert self.pairing.transfer(conversation, volunteer) == owner
        assert owner is not None
        self.volunteers[owner].conversations.remove(conversation)
        self.volunteers[volunteer].conversations.append(conversation)

    @precondition(lambda self: bool(self.volunteers))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        volunteer = self.draw_volunteer(data)
        model = self.volunteers.get(volunteer)
        expected = list(model.conversations) if model else []
        returned = self.pairing.release(volunteer)
        if model is not None:
            model.conversations.clear()
            model.available = False
        self.queue[:0] = expected
        self.handed_back.update(expected)
        assert returned == expected

    # Invariants

    @invariant()
    def queue_matches_model(self) -> None:
        assert self.pairing.queue == self.queue

    @invariant()
    def queue_is_handed_back_then_arrival_order(self) -> None:
        queue = self.pairing.queue
        fresh = [c for c in queue if c not in self.handed_back]
        first_fresh = queue.index(fresh[0]) if fresh else len(queue)
        assert all(c in self.handed_back for c in queue[:first_fresh])
        assert queue[first_fresh:] == fresh
        assert fresh == sorted(fresh, key=self.arrivals.index)

    @invariant()
    def volunteers_match_model(self) -> None:
        for volunteer, model in self.volunteers.items():
            assert self.pairing.conversations_of(volunteer) == model.conversations
            assert self.pairing.is_available(volunteer) == model.available
            assert self.pairing.capacity_of(volunteer) == model.capacity

    @invariant()
    def any_available_matches_model(self) -> None:
        expected = any(model.available for model in self.volunteers.values())
        assert self.pairing.any_available() == expected

    @invariant()
    def each_conversation_in_one_place(self) -> None:
        queue = self.pairing.queue
        for conversation in self.arrivals:
            places = queue.count(conversation) + sum(
                self.pairing.conversations_of(volunteer).count(conversation)
                for volunteer in self.volunteers
            )
            expected = 0 if conversation in self.ended else 1
            assert places == expected, conversation

    @invariant()
    def volunteer_of_matches_model(self) -> None:
        for conversation in self.arrivals:
            owner = self.model_owner(conversation)
            assert self.pairing.volunteer_of(conversation) == owner, conversation

    @invariant()
    def capacity_never_exceeded(self) -> None:
        for volunteer in self.volunteers:
            assigned_count = len(self.pairing.conversations_of(volunteer))
            assert assigned_count <= self.pairing.capacity_of(volunteer), volunteer

    @invariant()
    def nobody_lost(self) -> None:
        queue = self.pairing.queue
        for conversation in self.arrivals:
            if conversation in self.ended:
                continue
            queued = conversation in queue
            assigned = self.pairing.volunteer_of(conversation) is not None
            assert queued or assigned, conversation

    @invariant()
    def position_is_one_based_queue_index(self) -> None:
        queue = self.pairing.queue
        for index, conversation in enumerate(queue):
            assert self.pairing.position(conversation) == index + 1
        for conversation in self.arrivals:
            if conversation not in queue:
                assert self.pairing.position(conversation) is None, conversation


PairingMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPairingMachine = PairingMachine.TestCase


# Examples


def test_remove_twice_is_harmless() -> None:
    pairing = Pairing()
    pairing.enqueue("a")
    pairing.enqueue("b")

    first = pairing.remove("a")
    second = pairing.remove("a")

    assert first is None
    assert second is None
    assert pairing.queue == ["b"]


def test_remove_unknown_conversation_returns_none() -> None:
    pairing = Pairing()

    assert pairing.remove("never-seen") is None


def test_remove_assigned_returns_volunteer() -> None:
    pairing = Pairing()
    pairing.add_volunteer(7, capacity=1)
    pairing.set_available(7, True)
    pairing.enqueue("a")
    pairing.accept(7, "a")

    assert pairing.remove("a") == 7
    assert pairing.conversations_of(7) == []
    assert pairing.volunteer_of("a") is None


def test_release_unknown_volunteer_returns_empty() -> None:
    pairing = Pairing()
    pairing.enqueue("a")

    assert pairing.release(99) == []
    assert pairing.queue == ["a"]


def test_release_hands_back_to_front_in_held_order() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=3)
    pairing.set_available(1, True)
    for conversation in ("a", "b", "c", "d"):
        pairing.enqueue(conversation)
    pairing.accept(1, "c")
    pairing.accept(1, "a")

    handed_back = pairing.release(1)

    assert handed_back == ["c", "a"]
    assert pairing.queue == ["c", "a", "b", "d"]


def test_release_switches_volunteer_off() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)
    pairing.set_available(1, True)
    pairing.enqueue("a")

    pairing.release(1)

    assert not pairing.is_available(1)
    with pytest.raises(PairingError) as raised:
        pairing.accept(1, "a")
    assert raised.value.code == "not_available"


def test_enqueue_twice_raises_already_taken() -> None:
    pairing = Pairing()
    pairing.enqueue("a")

    with pytest.raises(PairingError) as raised:
        pairing.enqueue("a")

    assert raised.value.code == "already_taken"
    assert pairing.queue == ["a"]


def test_enqueue_assigned_raises_already_taken() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)
    pairing.set_available(1, True)
    pairing.enqueue("a")
    pairing.accept(1, "a")

    with pytest.raises(PairingError) as raised:
        pairing.enqueue("a")

    assert raised.value.code == "already_taken"
    assert pairing.queue == []


def test_enqueue_returns_position() -> None:
    pairing = Pairing()

    assert pairing.enqueue("a") == 1
    assert pairing.enqueue("b") == 2


def test_enqueue_after_end_is_allowed() -> None:
    pairing = Pairing()
    pairing.enqueue("a")
    pairing.remove("a")

    assert pairing.enqueue("a") == 1


def test_position_not_waiting_returns_none() -> None:
    pairing = Pairing()

    assert pairing.position("never-seen") is None


def test_add_volunteer_capacity_zero_raises() -> None:
    pairing = Pairing()

    with pytest.raises(ValueError, match="capacity"):
        pairing.add_volunteer(1, capacity=0)


def test_add_volunteer_again_keeps_state() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)
    pairing.set_available(1, True)

    pairing.add_volunteer(1, capacity=3)

    assert pairing.capacity_of(1) == 1
    assert pairing.is_available(1)


def test_accept_unknown_volunteer_raises_not_found() -> None:
    pairing = Pairing()
    pairing.enqueue("a")

    with pytest.raises(PairingError) as raised:
        pairing.accept(1, "a")

    assert raised.value.code == "not_found"
    assert pairing.queue == ["a"]


def test_accept_at_capacity_raises() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)
    pairing.set_available(1, True)
    pairing.enqueue("a")
    pairing.enqueue("b")
    pairing.accept(1, "a")

    with pytest.raises(PairingError) as raised:
        pairing.accept(1, "b")

    assert raised.value.code == "at_capacity"
    assert pairing.queue == ["b"]


def test_set_available_off_keeps_chats() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=2)
    pairing.set_available(1, True)
    pairing.enqueue("a")
    pairing.accept(1, "a")

    pairing.set_available(1, False)

    assert pairing.conversations_of(1) == ["a"]


def test_assign_skips_availability_check() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)

    pairing.assign(1, "a")

    assert pairing.conversations_of(1) == ["a"]
    assert pairing.volunteer_of("a") == 1


def test_assign_at_capacity_raises() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)
    pairing.assign(1, "a")

    with pytest.raises(PairingError) as raised:
        pairing.assign(1, "b")

    assert raised.value.code == "at_capacity"
    assert pairing.volunteer_of("b") is None


def test_assign_queued_conversation_raises() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, capacity=1)
    pairing.enqueue("a")

    with pytest.raises(PairingError) as raised:
        pairing.assign(1, "a")

    assert raised.value.code == "already_taken"
    assert pairing.queue == ["a"]


def test_requeue_front_keeps_order() -> None:
    pairing = Pairing()
    pairing.enqueue("c")

    pairing.requeue_front(["a", "b"])

    assert pairing.queue == ["a", "b", "c"]


def test_transfer_moves_to_end_of_new_list() -> None:
    pairing = Pairing()
    for volunteer in (1, 2):
        pairing.add_volunteer(volunteer, 2)
        pairing.set_available(volunteer, True)
    for conversation in ("a", "b", "c"):
        pairing.enqueue(conversation)
    pairing.accept(1, "a")
    pairing.accept(2, "b")

    previous = pairing.transfer("a", 2)

    assert previous == 1
    assert pairing.conversations_of(1) == []
    assert pairing.conversations_of(2) == ["b", "a"]
    assert pairing.volunteer_of("a") == 2
    assert pairing.queue == ["c"]


def test_transfer_waiting_conversation_raises_not_found() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, 1)
    pairing.set_available(1, True)
    pairing.enqueue("a")

    with pytest.raises(PairingError) as raised:
        pairing.transfer("a", 1)

    assert raised.value.code == "not_found"
    assert pairing.queue == ["a"]


def test_transfer_to_away_volunteer_keeps_assignment() -> None:
    pairing = Pairing()
    pairing.add_volunteer(1, 1)
    pairing.add_volunteer(2, 1)
    pairing.set_available(1, True)
    pairing.enqueue("a")
    pairing.accept(1, "a")

    with pytest.raises(PairingError) as raised:
        pairing.transfer("a", 2)

    assert raised.value.code == "not_available"
    assert pairing.volunteer_of("a") == 1
