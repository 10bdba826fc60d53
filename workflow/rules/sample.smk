# Per-sample analysis (mrdflow.sample): QC, data-driven gates, NK / CAR-T read-outs, PC events;
# then, with the cohort PC model, aberrant PCs and the MRD call.


rule gate_sample:
    input:
        fcs=sample_fcs,
        templates=sample_templates,
    output:
        gating="results/samples/{sample}/gating.tsv",
        gates="results/samples/{sample}/gates.xml",
        stage1="results/samples/{sample}/stage1.json",
        pc_events="results/samples/{sample}/pc_events.npz",
        nk_events="results/samples/{sample}/nk_events.npz",
        plots=directory("results/samples/{sample}/plots"),
    params:
        # the tubes' panel, role, FMO marker and beads come from the sheet (validated at parse time);
        # FCS paths are data_dir/<fcs>, a missing file is recorded in the sample's errors
        samples=SAMPLE_SHEET,
        data_dir=DATA_DIR,
        panels_dir=PANELS_DIR,
        gating_dir=GATING_DIR,  # the templates' folder
    threads: sample_threads  # row chunks of the events run on dask threads
    resources:
        mem_mb=sample_mem_mb,
        runtime=sample_runtime,
    log:
        "logs/samples/{sample}/gate_sample.log",
    script:
        "../scripts/gate_sample.py"


rule sample_metrics:
    input:
        stage1="results/samples/{sample}/stage1.json",
        pc_events="results/samples/{sample}/pc_events.npz",
        model=sample_model,
    output:
        metrics="results/samples/{sample}/metrics.json",
    params:
        reference=PC_REFERENCE,
    threads: 1
    resources:
        mem_mb=metrics_mem_mb,
        runtime=10,
    log:
        "logs/samples/{sample}/sample_metrics.log",
    script:
        "../scripts/sample_metrics.py"
