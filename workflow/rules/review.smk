# The FlowJo review loop (mrdflow.review; README "Review in FlowJo").
# Out: `snakemake review` (the target is in the Snakefile) writes results/review/<batch>.wsp for every review batch.
# Back in: config review.workspaces; the samples they hold are gated again with the reviewer's
# gates (rule review_sample) and their read-outs and the cohort are redone; the audit is
# results/review/changes.tsv (rule review_changes, part of the default target).


wildcard_constraints:
    batch="|".join(REVIEW_BATCHES) if REVIEW_BATCHES else "[^/]+",


rule review_workspace:
    input:
        stage1=lambda w: [sample_file("stage1", s) for s in REVIEW_BATCHES[w.batch].samples],
        gates=lambda w: [sample_file("gates", s) for s in REVIEW_BATCHES[w.batch].samples],
        fcs=lambda w: [fcs_path(t) for t in REVIEW_BATCHES[w.batch].tubes if SIMULATED or os.path.exists(fcs_path(t))],
    output:
        wsp=f"{REVIEW_DIR}/{{batch}}.wsp",
    params:
        tubes=lambda w: REVIEW_BATCHES[w.batch].tubes,
        data_dir=DATA_DIR,
        panels_dir=PANELS_DIR,
        gating_dir=GATING_DIR,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/review/{batch}.log",
    script:
        "../scripts/review_workspace.py"


rule review_sample:
    input:
        fcs=sample_fcs,
        templates=sample_templates,
        workspaces=lambda w: REVIEW.workspaces_of(w.sample),
        stage1=sample_file("stage1"),
        gating=sample_file("gating"),
        gates=sample_file("gates"),
    output:
        stage1=reviewed_file("stage1"),
        gating=reviewed_file("gating"),
        gates=reviewed_file("gates"),
        pc_events=reviewed_file("pc_events"),
        nk_events=reviewed_file("nk_events"),
        plots=directory(reviewed_file("plots")),
    params:
        reviewed=lambda w: [r.as_dict() for r in REVIEW.of(w.sample)],
        samples=SAMPLE_SHEET,
        data_dir=DATA_DIR,
        panels_dir=PANELS_DIR,
        gating_dir=GATING_DIR,
    threads: sample_threads
    resources:
        mem_mb=sample_mem_mb,
        runtime=sample_runtime,
    log:
        "logs/samples/{sample}/review_sample.log",
    script:
        "../scripts/review_sample.py"


rule review_changes:
    input:
        metrics=expand(sample_file("metrics"), sample=SAMPLES),
    output:
        changes=CHANGES_TSV,
        problems=PROBLEMS_TSV,
    params:
        problems=list(REVIEW.problems),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/review/review_changes.log",
    script:
        "../scripts/review_changes.py"
