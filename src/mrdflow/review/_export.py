"""A review batch out to FlowJo (rule ``review_workspace``): ``results/review/<batch>.wsp``.

Each tube goes in with the gates the pipeline placed on it (its sample's Gating-ML, as written by
:func:`mrdflow.sample.analyse_sample`), the compensation the pipeline applied (read again from
the file's header with the panel's config: no event is read) and the panel's transforms, under
its file name, which is how FlowJo names a sample. A tube that was not gated is left out and
named in the log. Writing: :func:`mrdflow.gating.write_workspace`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from mrdflow.errors import MrdflowError
from mrdflow.review._batches import ReviewBatch
from mrdflow.sample._outputs import SAMPLE_DIR, SAMPLE_FILES

__all__ = ["export_batch"]

log = logging.getLogger(__name__)


def export_batch(batch: ReviewBatch, data_dir: str | Path, settings, out: str | Path, *,
                 results_root: str | Path = ".") -> Path:
    """Write ``batch`` as one FlowJo 10 workspace at ``out`` (FlowJo group: the batch's name).

    ``results_root``: the folder the sample folders (``results/samples/<sample>``) are under.
    A batch none of whose tubes was gated is an :class:`~mrdflow.errors.MrdflowError`.
    """
    import flowkit as fk

    from mrdflow.gating import FlowJoSample, write_workspace
    from mrdflow.sample._analysis import _setup

    data_dir = Path(data_dir)
    written, left_out = [], []
    records: dict[str, dict] = {}
    for tube in batch.tubes:
        sample_dir = Path(results_root) / SAMPLE_DIR.format(sample=tube.sample_id)
        if tube.sample_id not in records:
            records[tube.sample_id] = json.loads((sample_dir / SAMPLE_FILES.stage1).read_text())
        gates = records[tube.sample_id].get("gates_of", {}).get(tube.tube)
        if gates is None:
            left_out.append(tube.key)
            continue
        try:
            opened = _setup(tube, data_dir / tube.fcs, settings)
        except MrdflowError as e:
            log.warning("%s: not in the review workspace: %s", tube.key, e)
            left_out.append(tube.key)
            continue
        strategy = fk.parse_gating_xml(str(sample_dir / gates))
        written.append(FlowJoSample(Path(tube.fcs).name, os.path.abspath(data_dir / tube.fcs), strategy,
                                    opened.compensation))
    if left_out:
        log.warning("review batch %s: %d tube(s) not gated, left out: %s", batch.name, len(left_out),
                    ", ".join(left_out))
    if not written:
        raise MrdflowError(f"review batch {batch.name!r}: none of its {len(batch.tubes)} tubes was gated "
                           "(see each sample's stage1.json errors)")
    path = write_workspace(out, written, group=batch.name)
    log.info("review batch %s: %d tubes written to %s", batch.name, len(written), path)
    return path
