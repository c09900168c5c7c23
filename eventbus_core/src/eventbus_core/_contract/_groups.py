"""`ConsumerGroupContract`: the optional contract test class of `capabilities.ConsumerGroups`."""

from __future__ import annotations

import json
import uuid

from eventbus_core._contract._capabilities import CapabilityContract, require
from eventbus_core._source import AckableSource, Delivery
from eventbus_core.capabilities import ConsumerGroups, KeepAlive, SourceFigures, capability

__all__ = ["ConsumerGroupContract"]


class ConsumerGroupContract(CapabilityContract):
    """`ConsumerGroups`: a named group's members share its events, each delivery pending until
    acknowledged; a member back under the same name gets its unacknowledged deliveries again;
    every group sees every event; a new group starts at the oldest entry the backend holds.
    Sources that declare `KeepAlive` or `SourceFigures` are checked for those too."""

    def groups(self, bus: object) -> ConsumerGroups:
        found = require(bus, ConsumerGroups)  # type: ignore[arg-type]
        assert isinstance(found, ConsumerGroups)
        return found

    def consumer(self, groups: ConsumerGroups, group: str, name: str) -> AckableSource:
        """`groups.consumer(group, name)`, within `receive_timeout` s."""
        return self.call_within(f"consumer({group!r}, {name!r})", groups.consumer, group, name)

    def ack(self, source: AckableSource, got: list[Delivery]) -> None:
        self.call_within("ack()", source.ack, [d.token for d in got])

    def close_source(self, source: AckableSource) -> None:
        self.call_within("close() of a consumer-group source", source.close)

    def read_none(self, source: AckableSource) -> list[Delivery]:
        """`read(10, timeout=0.3)`, which should find nothing, within its timeout + stop_slack."""
        bound = self.timed_limit("read(10, timeout=0.3)", 0.3, "its timeout")
        return self.bounded(bound, source.read, 10, timeout=0.3)

    def test_default_group_is_a_name(self) -> None:
        with self.bus() as bus:
            default = self.groups(bus).default_group
            assert isinstance(default, str) and default, f"default_group is {default!r}"

    def test_a_consumer_has_a_name(self) -> None:
        # `AckableSource.name`: what the dispatcher's figures and start-up line show.
        with self.bus() as bus:
            source = self.consumer(self.groups(bus), f"contract-{uuid.uuid4().hex[:8]}", "m-1")
            try:
                name = getattr(source, "name", None)
                assert isinstance(name, str) and name, (
                    f"the consumer's name is {name!r}: give it a `name` (str), as AckableSource "
                    f"declares"
                )
            finally:
                self.close_source(source)

    def test_a_group_gets_every_event_once_acked(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 4)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            first = self.consumer(groups, group, "member-1")
            try:
                got = self.read_all(first, 4)
                read = [d.event.request_id for d in got]
                assert read == ids, f"the group read {read}, expected {ids}"
                self.ack(first, got)
                back = self.read_none(first)
                assert back == [], f"acknowledged entries came back: {len(back)} of them"
            finally:
                self.close_source(first)
            again = self.consumer(groups, group, "member-1")
            try:
                back = self.read_none(again)
                assert back == [], (
                    f"acknowledged entries came back to the same name: {len(back)} of them"
                )
            finally:
                self.close_source(again)

    def test_unacknowledged_deliveries_come_back_to_the_same_name(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 3)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            member = self.consumer(groups, group, "restarting")
            try:
                held = self.read_all(member, 3)
            finally:
                self.close_source(member)  # dies before acknowledging
            back = self.consumer(groups, group, "restarting")
            try:
                got = self.read_all(back, 3)
                again = [d.event.request_id for d in got]
                assert again == ids, f"the same name got back {again}, expected {ids}"
                first = [d.event.request_id for d in held]
                assert first == ids, f"the first member read {first}, expected {ids}"
                self.ack(back, got)
            finally:
                self.close_source(back)

    def test_a_partial_ack_leaves_the_rest_pending(self) -> None:
        # An ack() that acknowledged everything the member held passed (trial 197): a crash
        # after it loses what was read and not yet processed.
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 4)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            member = self.consumer(groups, group, "partial")
            try:
                held = self.read_all(member, 4)
                self.ack(member, held[:2])
            finally:
                self.close_source(member)  # dies before acknowledging the other two
            back = self.consumer(groups, group, "partial")
            try:
                got = self.read_all(back, 2)
                again = [d.event.request_id for d in got]
                assert again == ids[2:], (
                    f"after acknowledging {ids[:2]} of {ids}, the same name got back {again}, "
                    f"expected {ids[2:]}: ack() must acknowledge only the tokens it is given"
                )
                self.ack(back, got)
                extra = self.read_none(back)
                assert extra == [], f"acknowledged entries came back: {len(extra)} of them"
            finally:
                self.close_source(back)

    def test_members_of_a_group_share_its_events(self) -> None:
        # A "group" whose every member got every event passed (trial 197): two dispatchers in
        # one group then each delivered everything.
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 3)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            first = self.consumer(groups, group, "member-a")
            second = self.consumer(groups, group, "member-b")
            try:
                got = self.read_all(first, 3)
                assert [d.event.request_id for d in got] == ids
                other = self.read_none(second)
                shown = [d.event.request_id for d in other]
                assert shown == [], (
                    f"member-b of the group was handed {shown}, which member-a holds "
                    "unacknowledged: a group's members share its events, each delivered to one "
                    "of them (until a member that died is relieved of them)"
                )
                self.ack(first, got)
            finally:
                self.close_source(first)
                self.close_source(second)

    def test_each_group_sees_every_event(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 2)
            tag = uuid.uuid4().hex[:8]
            for group in (f"contract-a-{tag}", f"contract-b-{tag}"):
                source = self.consumer(groups, group, "only")
                try:
                    got = self.read_all(source, 2)
                    read = [d.event.request_id for d in got]
                    assert read == ids, f"group {group} read {read}, expected {ids}"
                    self.ack(source, got)
                finally:
                    self.close_source(source)

    def test_source_capabilities(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            self.publish_stored(bus, 1)
            source = self.consumer(groups, f"contract-{uuid.uuid4().hex[:8]}", "figures")
            try:
                got = self.read_all(source, 1)
                alive = capability(source, KeepAlive)
                if alive is not None:
                    # Holding one delivery: must not raise.
                    self.call_within("keep_alive()", alive.keep_alive)
                figures = capability(source, SourceFigures)
                if figures is not None:
                    named = self.call_within("figures()", figures.figures)
                    assert all(isinstance(k, str) for k in named), (
                        f"figures() must be keyed by name: {list(named)!r}"
                    )
                    try:
                        json.dumps(dict(named))
                    except (TypeError, ValueError) as exc:
                        raise AssertionError(
                            f"figures() must be plain data (numbers, strings, lists, mappings), "
                            f"as stats --json and the dispatcher's log write it: {exc}"
                        ) from None
                self.ack(source, got)
            finally:
                self.close_source(source)
