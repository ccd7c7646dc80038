"""Replicas in and out of their front's rotation, following their lifecycle.

An event sink: events are recorded before the supervisor acts on them (a "stopping" event
before the stop signal), so a replica is out of rotation before it stops, and back once it
is ready. A front that (re)starts is told where every replica stands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nxrd.front.admin import FrontAdmin, FrontError
from nxrd.model.paths import FRONT_SOCKET, front_dir
from nxrd.model.plan import Plan
from nxrd.model.replicas import front_name, group_of, is_front
from nxrd.supervisor.events import Event
from nxrd.supervisor.states import State
from nxrd.supervisor.supervisor import Supervisor


class Rotation:
    def __init__(
        self,
        plan: Callable[[], Plan],
        sup: Supervisor,
        state_dir: Path,
        admin: Callable[[Path], FrontAdmin],
        say: Callable[[str], None],
    ) -> None:
        self.plan, self.sup, self.state_dir = plan, sup, state_dir
        self.admin, self.say = admin, say
        self.failing: set[str] = set()  # fronts whose last command failed (said once)
        self.told: dict[str, str] = {}  # replica -> the state its front was last told

    def __call__(self, e: Event) -> None:
        if is_front(e.workload):
            if e.new == State.READY:
                for name in self.replicas(group_of(e.workload)):
                    self.told.pop(name, None)  # a new HAProxy knows nothing yet
                    self.tell(group_of(e.workload), name, self.sup.records[name].state)
            return
        group = group_of(e.workload)
        if e.workload in self.replicas(group):
            self.tell(group, e.workload, State(e.new))

    def replicas(self, group: str) -> list[str]:
        """The served workloads behind group's front (none when it has no front)."""
        names = [w.name for w in self.plan().workloads if group_of(w.name) == group]
        if front_name(group) not in names:
            return []
        return [n for n in names if not is_front(n) and n in self.sup.records]

    def tell(self, group: str, name: str, state: State) -> None:
        front = front_name(group)
        rec = self.sup.records.get(front)
        if rec is None or rec.state != State.READY:
            return  # it learns every state when it is next ready
        wanted = "ready" if state == State.READY else "maint"
        if self.told.get(name) == wanted:
            return
        try:
            self.admin(front_dir(self.state_dir, front) / FRONT_SOCKET).set_state(
                group, name, wanted
            )
        except FrontError as e:
            if front not in self.failing:
                self.failing.add(front)
                self.say(f"warning: {name} not put in {wanted} state: {e}")
            return
        self.told[name] = wanted
        self.failing.discard(front)
