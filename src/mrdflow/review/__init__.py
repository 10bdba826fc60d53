"""The FlowJo review loop (rule file ``workflow/rules/review.smk``; README "Review in FlowJo").

1. **Out** (:func:`export_batch`, rule ``review_workspace``): a review batch (config
   ``review.batches``, default one per panel: :func:`review_batches`) is written as one FlowJo 10
   workspace, ``results/review/<batch>.wsp``, every tube with its own data-driven gates, the
   compensation the pipeline applied and the panel's transforms.
2. **Back in** (:func:`index_reviews` when the workflow is parsed; :func:`review_sample`, rule
   ``review_sample``): a reviewer moves gates in FlowJo and saves; config ``review.workspaces``
   names the saved files. A tube that is a sample of one is gated again with the reviewer's gates,
   applied as drawn (FlowJo's counts are then the pipeline's). Each gate is compared with the
   data-driven one (:func:`compare_gates`): every moved or redefined gate is recorded with both
   coordinates and counts, and the flags placement raised on the tube are settled. A renamed or
   removed gate, another compensation or another transform is an error naming the workspace,
   sample and gate: that tube keeps its data-driven gates and flags, and the cohort goes on.
3. **Audit** (:func:`write_changes`, rule ``review_changes``): ``results/review/changes.tsv``,
   one row per changed gate with the read-outs before and after, the workspace's checksum and
   modification time; problems in ``results/review/problems.tsv``.

Importing this package is cheap (the Snakefile imports it); FlowKit loads where it is used.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_batches": ["ReviewBatch", "review_batches"],
        "_index": ["ReviewedTube", "ReviewIndex", "index_reviews", "ALL_SAMPLES"],
        "_compare": ["GateChange", "ReviewError", "check_compensation", "check_transforms", "compare_gates"],
        "_apply": ["review_sample"],
        "_export": ["export_batch"],
        "_changes": ["CHANGES_TSV", "PROBLEMS_TSV", "REVIEW_DIR", "changes_rows", "write_changes"],
    },
)
