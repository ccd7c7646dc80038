"""The node agent's answers on nxr's control API, so that `nxrctl status`, `top` and
`events` and `explain` work against it as against nxrd (pods named namespace/name)."""

from __future__ import annotations

from typing import Any

from nxrd.agent.node_agent import NodeAgent
from nxrd.api.handlers import events_body
from nxrd.api.protocol import ApiError, Request


class AgentHandlers:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def handle(self, req: Request) -> dict[str, Any]:
        if req.method == "GET" and req.path == ("workloads",):
            return {"workloads": self.agent.status()}
        if req.method == "GET" and req.path == ("events",):
            return events_body(self.agent.events, req)
        p = req.path
        if req.method == "GET" and len(p) > 2 and p[0] == "workloads" and p[-1] == "explain":
            key = "/".join(p[1:-1])  # namespace/name, its slash a path separator
            try:
                return self.agent.explain(key)
            except KeyError:
                raise ApiError("not_found", f"no nxr pod {key} on this node") from None
        where = "/".join(req.path)[:100]
        raise ApiError(
            "not_found",
            f"no such path /v1/{where} (the node agent answers status, top, events, explain)",
        )
