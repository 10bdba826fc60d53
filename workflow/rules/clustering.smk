# Cohort PC model (mrdflow.clustering): k-means on PC events pooled across marrow samples, on dask.


rule pc_model:
    input:
        pc_events=expand("results/samples/{sample}/pc_events.npz", sample=BM_SAMPLES),
        reference=PC_REFERENCE,
    output:
        model="results/cohort/pc_model.json",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "logs/cohort/pc_model.log",
    script:
        "../scripts/pc_model.py"
