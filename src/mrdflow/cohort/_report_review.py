"""The report's FlowJo review section (:mod:`mrdflow.cohort._report`): each sample's review state,
every gate a reviewer changed (``results/review/changes.tsv``) and what could not be used
(``results/review/problems.tsv``). Written by :mod:`mrdflow.review`; read here as tables."""

from __future__ import annotations

import html

from mrdflow.cohort._report_data import ReportData
from mrdflow.cohort._report_html import Raw, _not_available, _scrub, _sorted, _status, _table, _text, _truthy

__all__ = ["_sec_flowjo_review"]

_STATE = {
    "needed": "to review: read-outs rest on unsure gates",
    "reviewed": "reviewed: gates from a reviewer's workspace",
    "failed": "review not applied: see problems",
}


def _sec_flowjo_review(inp: ReportData) -> str:
    out = ['<p>A batch is written for FlowJo with <code>snakemake review</code> '
           "(<code>results/review/&lt;batch&gt;.wsp</code>); reviewers' saved workspaces are named in config "
           "<code>review.workspaces</code>. A sample flagged for review stays flagged until a reviewer's workspace "
           "holds it.</p>"]
    sm = inp["sample_metrics"]
    out.append("<h3>Review state of each sample</h3>")
    if sm is None:
        out.append(_not_available(inp.label("sample_metrics")))
    elif "review_state" not in sm.columns:
        out.append("<p>The sample table has no review_state column (metrics written before review existed).</p>")
    else:
        sm = _sorted(sm, ["sample_id"])
        counts = sm["review_state"].fillna("not_needed").astype(str).value_counts()
        out.append("<p>" + ", ".join(f"{html.escape(k.replace('_', ' '))}: {int(v)}" for k, v in counts.items())
                   + f" (of {len(sm)} samples).</p>")
        rows = []
        for r in sm.to_dict("records"):
            state = _text(r.get("review_state"))
            if state in ("", "not_needed"):
                continue
            rows.append([r.get("sample_id"), _status(r.get("status")), _STATE.get(state, state),
                         r.get("gating_source"), _text(r.get("review_changes")).replace(";", "; ") or None,
                         _scrub(_text(r.get("review_problems"))) or None])
        if rows:
            out.append(_table(["Sample", "Status", "Review", "Gates from", "Gates changed (tube:gate)", "Problems"],
                              rows))
    out.append("<h3>Gates changed in review</h3>")
    ch = inp["review_changes"]
    if ch is None:
        out.append(_not_available(inp.label("review_changes")))
    elif ch.empty:
        out.append("<p>No gate was changed by a reviewer.</p>")
    else:
        rows = []
        for r in _sorted(ch, ["sample_id", "tube", "path"]).to_dict("records"):
            rows.append([r.get("sample_id"), r.get("tube"), r.get("gate"), r.get("change"),
                         r.get("data_coordinates"), r.get("reviewed_coordinates"),
                         f"{_text(r.get('count_data'))} → {_text(r.get('count_reviewed'))}",
                         Raw(f"{html.escape(_text(r.get('readouts_before')))}<br>→ "
                             f"{html.escape(_text(r.get('readouts_after')))}"),
                         f"{_file_name(r.get('workspace'))} (sha256 {_text(r.get('workspace_sha256'))[:12]}…, "
                         f"{_text(r.get('workspace_mtime'))})"])
        out.append(f"<p>{len(ch)} gate(s) moved or redefined by reviewers. Coordinates are on the gate scale "
                   "(the panel's transform, 0-1); events are in the data-driven and the reviewed gate; "
                   f"full detail in {html.escape(inp.label('review_changes'))}.</p>")
        out.append(_table(["Sample", "Tube", "Gate", "Change", "Data-driven", "Reviewed", "Events",
                           "Read-outs before → after", "Workspace"], rows))
    pr = inp["review_problems"]
    if pr is not None and not pr.empty:
        out.append("<h3>Review problems</h3>")
        out.append(f"<p>{len(pr)} reviewed workspace(s) or tube(s) could not be used; those tubes keep their "
                   "data-driven gates (and flags).</p>")
        out.append(_table(["Sample", "Tube", "Problem"],
                          [[r.get("sample_id") if _truthy(r.get("sample_id")) else None, r.get("tube"),
                            _scrub(_text(r.get("problem")))] for r in pr.to_dict("records")]))
    return "\n".join(out)


def _file_name(path) -> str:
    return _text(path).replace("\\", "/").rsplit("/", 1)[-1]
