"""`ConsumerGroupContract`: the optional contract test class of `capabilities.ConsumerGroups`."""

from __future__ import annotations

import uuid

from eventbus_core._contract._capabilities import CapabilityContract, require
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

    def test_default_group_is_a_name(self) -> None:
        with self.bus() as bus:
            default = self.groups(bus).default_group
            assert isinstance(default, str) and default

    def test_a_group_gets_every_event_once_acked(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 4)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            first = groups.consumer(group, "member-1")
            try:
                got = self.read_all(first, 4)
                assert [d.event.request_id for d in got] == ids
                first.ack([d.token for d in got])
                assert first.read(10, timeout=0.3) == [], "acknowledged entries came back"
            finally:
                first.close()
            again = groups.consumer(group, "member-1")
            try:
                assert again.read(10, timeout=0.3) == [], "acknowledged entries came back"
            finally:
                again.close()

    def test_unacknowledged_deliveries_come_back_to_the_same_name(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 3)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            member = groups.consumer(group, "restarting")
            try:
                held = self.read_all(member, 3)
            finally:
                member.close()  # dies before acknowledging
            back = groups.consumer(group, "restarting")
            try:
                got = self.read_all(back, 3)
                assert [d.event.request_id for d in got] == ids
                assert [d.event.request_id for d in held] == ids
                back.ack([d.token for d in got])
            finally:
                back.close()

    def test_each_group_sees_every_event(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            ids = self.publish_stored(bus, 2)
            tag = uuid.uuid4().hex[:8]
            for group in (f"contract-a-{tag}", f"contract-b-{tag}"):
                source = groups.consumer(group, "only")
                try:
                    got = self.read_all(source, 2)
                    assert [d.event.request_id for d in got] == ids, group
                    source.ack([d.token for d in got])
                finally:
                    source.close()

    def test_source_capabilities(self) -> None:
        with self.bus() as bus:
            groups = self.groups(bus)
            self.publish_stored(bus, 1)
            source = groups.consumer(f"contract-{uuid.uuid4().hex[:8]}", "figures")
            try:
                got = self.read_all(source, 1)
                alive = capability(source, KeepAlive)
                if alive is not None:
                    alive.keep_alive()  # holding one delivery: must not raise
                figures = capability(source, SourceFigures)
                if figures is not None:
                    assert all(isinstance(k, str) for k in figures.figures())
                source.ack([d.token for d in got])
            finally:
                source.close()
