# Per-sample analysis (mrdflow.sample): QC, data-driven gates, NK / CAR-T read-outs, PC events;
# then, with the cohort PC model, aberrant PCs and the MRD call. Each panel's gating template is
# parsed once per run (FlowKit reads the Gating-ML) into JSON the sample jobs read without FlowKit.


rule compile_template:
    input:
        template_sources,
    output:
        os.path.join(COMPILED_DIR, "{panel}.json"),
    params:
        gating_dir=GATING_DIR,
    log:
        "logs/templates/{panel}.log",
    script:
        "../scripts/compile_template.py"


rule analyse_sample:
    input:
        fcs=sample_fcs,
        templates=sample_templates,
    output:
        gating=sample_file("gating"),
        gates=sample_file("gates"),
        stage1=sample_file("stage1"),
        pc_events=sample_file("pc_events"),
        nk_events=sample_file("nk_events"),
        plots=directory(sample_file("plots")),
    params:
        # the tubes' panel, role, FMO marker and beads come from the sheet (validated at parse time);
        # FCS paths are data_dir/<fcs>, a missing file is recorded in the sample's errors
        samples=SAMPLE_SHEET,
        data_dir=DATA_DIR,
        panels_dir=PANELS_DIR,
        gating_dir=GATING_DIR,  # the templates' folder
        compiled_dir=COMPILED_DIR,  # their compiled JSON (rule compile_template)
    threads: sample_threads  # row chunks of the events run on dask threads
    resources:
        mem_mb=sample_mem_mb,
        runtime=sample_runtime,
    log:
        "logs/samples/{sample}/analyse_sample.log",
    script:
        "../scripts/analyse_sample.py"


rule finish_sample:
    input:
        # with a reviewer's gates (review.smk): the reviewed stage 1, and the data-driven one for
        # the read-outs before the review
        stage1=lambda w: stage_file("stage1", w.sample),
        pc_events=lambda w: stage_file("pc_events", w.sample),
        data_stage1=lambda w: [sample_file("stage1", w.sample), sample_file("pc_events", w.sample)] if REVIEW.of(w.sample) else [],
        model=sample_model,
    output:
        metrics=sample_file("metrics"),
    params:
        reference=PC_REFERENCE,
    threads: 1
    resources:
        mem_mb=metrics_mem_mb,
        runtime=10,
    log:
        "logs/samples/{sample}/finish_sample.log",
    script:
        "../scripts/finish_sample.py"
