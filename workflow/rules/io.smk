# Stage io (mrdflow.io): the inventory, one row per FCS (checksum, version, cytometer, events, date, status, error).


rule inventory:
    input:
        samples=SAMPLE_SHEET,
        fcs=existing_fcs,
    output:
        inventory=INVENTORY_TSV,
    params:
        data_dir=DATA_DIR,
        panels_dir=PANELS_DIR,
        keywords=config["inventory"]["keywords"],
    threads: 2
    resources:
        mem_mb=1000,
        runtime=30,
    log:
        "logs/inventory.log",
    script:
        "../scripts/inventory.py"
