# Stage demo (mrdflow.demo): the simulated cohort (demo and tests): every FCS of the sample sheet, with planted truth beside it.
if SIMULATED:

    rule simulate_cohort:
        input:
            samples=SAMPLE_SHEET,
            design=resolve_path(config["simulate"]["design"]),
        output:
            fcs=[fcs_path(t) for t in TUBES],
            truth=os.path.join(DATA_DIR, "truth.tsv"),
        params:
            outdir=lambda wildcards, output: os.path.dirname(output.truth),
            seed=config["simulate"]["seed"],
            events_scale=config["simulate"]["events_scale"],
            instrument=config["simulate"]["instrument"],
            biology=config["simulate"]["biology"],
        threads: 8  # scaled down to --cores by Snakemake
        resources:
            mem_mb=4000,
            runtime=60,
        log:
            "logs/simulate_cohort.log",
        script:
            "../scripts/simulate_cohort.py"
