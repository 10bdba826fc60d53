"""FlowKit's own gating answer, the reference the engine is tested against (test-only helper).

Slow and memory-hungry by design: it is what :class:`mrdflow.gating.GateEngine` replaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import flowkit as fk
import numpy as np
from flowkit import gates as fk_gates
from flowkit.exceptions import QuadrantReferenceError

from mrdflow.gating import GatePath

SpillMatrix = tuple[Sequence[str], np.ndarray]


def flowkit_membership(strategy: fk.GatingStrategy, events: np.ndarray, pnn: Sequence[str],
                       sample_id: str = "s", *, sample_comp: SpillMatrix | None = None
                       ) -> dict[GatePath, np.ndarray]:
    """Reference answer: FlowKit's own ``Sample`` + ``gate_sample`` membership per gate path.

    Slow and memory-hungry by design (it is what :class:`GateEngine` replaces); for tests.
    ``sample_comp`` is stored as the Sample's $SPILLOVER (it must cover every fluorescence
    channel, as FlowKit requires for "FCS" compensation).
    """
    sample = fk.Sample(np.asarray(events), sample_id=sample_id, channel_labels=list(pnn))
    if sample_comp is not None:
        detectors, matrix = sample_comp
        matrix = np.asarray(matrix, dtype=np.float64)
        values = ",".join(repr(float(v)) for v in matrix.ravel())
        sample.metadata["spillover"] = f"{len(detectors)},{','.join(detectors)},{values}"
    results = strategy.gate_sample(sample)
    out = {}
    for gate_id, ancestors in strategy.get_gate_ids():
        ancestors = tuple(ancestors)
        try:
            gate = strategy.get_gate(gate_id, ancestors, sample_id=sample_id)
        except QuadrantReferenceError:
            out[ancestors + (gate_id,)] = np.asarray(results.get_gate_membership(gate_id, ancestors[:-1]))
            continue
        if isinstance(gate, fk_gates.QuadrantGate):
            continue
        out[ancestors + (gate_id,)] = np.asarray(results.get_gate_membership(gate_id, ancestors))
    return out
