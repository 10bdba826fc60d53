# Cohort PC model (mrdflow.clustering): k-means on PC events pooled across marrow samples, on dask.


rule fit_pc_model:
    input:
        pc_events=expand(sample_file("pc_events"), sample=BM_SAMPLES),
        reference=PC_REFERENCE,
    output:
        model=PC_MODEL,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "logs/cohort/fit_pc_model.log",
    script:
        "../scripts/fit_pc_model.py"
