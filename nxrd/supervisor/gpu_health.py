"""GPU health verdicts (pure): what each poll of NVML saw -> which GPUs to quarantine.

A quarantined GPU gets no new placements, and workloads that asked for GPUs by count are
planned again onto healthy ones. Quarantine lasts until an operator releases the GPU
(`nxrctl gpu release`) or nxrd restarts: a GPU that threw a critical Xid or lost data needs
an operator (and usually a reset) before it is trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from nxrd.kernel.gpu_usage import Attribution
from nxrd.model.topology import Gpu

# Xids caused by the application, not the GPU (a bad kernel, an MMU fault in user code,
# a reset the driver asked for, a user-space graphics exception): the same list the NVIDIA
# Kubernetes device plugin skips.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})


@dataclass(frozen=True)
class Reading:
    """One poll of one GPU."""

    uuid: str
    answered: bool = True  # False: the query timed out, or NVML said the GPU is lost
    error: str | None = None  # what failed, when it did not answer
    xids: tuple[int, ...] = ()  # Xid errors reported since the previous poll
    ecc_uncorrected: int | None = None  # volatile uncorrected ECC errors; None: no ECC


@dataclass(frozen=True)
class Health:
    """What nxrd remembers about one GPU between polls."""

    misses: int = 0  # polls in a row it did not answer
    ecc_uncorrected: int | None = None
    quarantined: str | None = None  # why, once quarantined


@dataclass(frozen=True)
class Verdict:
    uuid: str
    reason: str


@dataclass(frozen=True)
class Judge:
    misses: int = 2  # polls in a row without an answer before a GPU counts as gone
    ignored_xids: frozenset[int] = field(default=APPLICATION_XIDS)

    def __call__(
        self, known: dict[str, Health], readings: list[Reading]
    ) -> tuple[dict[str, Health], list[Verdict]]:
        """New memory of every GPU, and the GPUs quarantined by these readings."""
        out, verdicts = dict(known), []
        for r in readings:
            was = known.get(r.uuid, Health())
            if was.quarantined:
                continue
            now, why = self._judge(was, r)
            if why:
                now = replace(now, quarantined=why)
                verdicts.append(Verdict(r.uuid, why))
            out[r.uuid] = now
        return out, verdicts

    def _judge(self, was: Health, r: Reading) -> tuple[Health, str | None]:
        # A GPU falling off the bus reports Xid 79 and then stops answering: the Xid says why.
        critical = sorted({x for x in r.xids if x not in self.ignored_xids})
        xid = "Xid " + ", ".join(map(str, critical)) if critical else None
        if not r.answered:
            misses = was.misses + 1
            now = replace(was, misses=misses)
            if xid:
                return now, xid
            if misses >= self.misses:
                return now, f"not answering ({r.error or 'no reply'}, {misses} polls in a row)"
            return now, None
        now = Health(ecc_uncorrected=r.ecc_uncorrected)
        if xid:
            return now, xid
        before = was.ecc_uncorrected
        if r.ecc_uncorrected is not None and before is not None and r.ecc_uncorrected > before:
            new = r.ecc_uncorrected - before
            return now, f"{new} uncorrected ECC error{'s' if new > 1 else ''}"
        return now, None


def quarantined(known: dict[str, Health]) -> dict[str, str]:
    """uuid -> why, for every quarantined GPU."""
    return {u: h.quarantined for u, h in known.items() if h.quarantined}


def from_usage(gpus: Sequence[Gpu], seen: Attribution | None, error: str | None) -> list[Reading]:
    """Health readings from the accounting poll (nxrd asks NVML once per poll for both)."""
    out = []
    for g in gpus:
        r = None if seen is None else seen.gpus.get(g.index)
        if error is not None or r is None or r.error is not None:
            why = error or (r.error if r is not None else None) or "no reading"
            xids = () if r is None else r.xids
            out.append(Reading(g.uuid, answered=False, error=why, xids=xids))
        else:
            out.append(Reading(g.uuid, xids=r.xids, ecc_uncorrected=r.ecc_uncorrected))
    return out
