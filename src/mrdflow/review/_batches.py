"""Review batches: which tubes go into which FlowJo workspace (config ``review.batches``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mrdflow.config import Tube

__all__ = ["ReviewBatch", "review_batches"]


@dataclass(frozen=True)
class ReviewBatch:
    """One review workspace: its name (``results/review/<name>.wsp`` and the FlowJo group) and its
    tubes, in sample-sheet order."""

    name: str
    tubes: tuple[Tube, ...]

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample_ids the batch holds, once each, in sheet order."""
        return tuple(dict.fromkeys(t.sample_id for t in self.tubes))


def review_batches(tubes: Sequence[Tube], batches: Mapping[str, Mapping],
                   panels: Iterable[str]) -> dict[str, ReviewBatch]:
    """The configured batches (``review.batches``: name -> ``panels`` and optional ``samples``), or
    when none is configured one batch per panel of ``panels`` that has tubes, named after it.

    A batch naming a panel not in ``panels`` or a sample not in the sheet is a ``ValueError``
    naming the batch; a batch without tubes is left out. FlowJo names a sample by its file name,
    so two tubes of one batch with the same file name are an error too.
    """
    known_panels = list(panels)
    known_samples = {t.sample_id for t in tubes}
    if not batches:
        batches = {p: {"panels": [p]} for p in known_panels}
    out: dict[str, ReviewBatch] = {}
    for name, spec in batches.items():
        unknown = sorted(set(spec["panels"]) - set(known_panels))
        if unknown:
            raise ValueError(f"config: review.batches.{name}.panels: {unknown} are not configured panels "
                             f"(panels: {known_panels})")
        samples = spec.get("samples")
        missing = sorted(set(samples or ()) - known_samples)
        if missing:
            raise ValueError(f"config: review.batches.{name}.samples: {missing} are not in the sample sheet")
        chosen = tuple(t for t in tubes if t.panel in spec["panels"] and (samples is None or t.sample_id in samples))
        if not chosen:
            continue
        seen: dict[str, Tube] = {}
        for t in chosen:
            base = t.fcs.replace("\\", "/").rsplit("/", 1)[-1]
            if base in seen:
                raise ValueError(f"review batch {name!r}: {seen[base].fcs!r} and {t.fcs!r} have the same file name "
                                 f"{base!r}; FlowJo names samples by file name: put them in different batches")
            seen[base] = t
        out[name] = ReviewBatch(name, chosen)
    return out
