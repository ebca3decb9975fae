rule feature_statistics:
    """What a task's features look like (paper Table 4, Figs. 2 and 3): per tensor and layer the observed range,
    moments, percentiles and the share each truncation profile clips; a subsample of the values for the
    distribution figure; the first sample's packed corner and its DCT."""
    input:
        features=f"{RESULTS}/{{task}}/features.zarr",
    output:
        table=f"{RESULTS}/{{task}}/statistics/features.csv",
        arrays=f"{RESULTS}/{{task}}/statistics/features.npz",
    log:
        "logs/{task}/statistics.log",
    benchmark:
        "benchmarks/{task}/statistics.tsv"
    conda:
        "../../envs/codec.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        task="{task}",
        profiles=lambda wc: task_settings(wc.task)["truncation"],
        code=script_code("feature_statistics.py"),
    script:
        "../scripts/feature_statistics.py"


rule feature_statistics_table:
    """All tasks' feature statistics in one table (CSV and Markdown)."""
    input:
        tables=expand(f"{RESULTS}/{{task}}/statistics/features.csv", task=TASKS),
    output:
        csv=report(
            f"{RESULTS}/tables/feature_statistics.csv",
            caption="../report/feature_statistics.rst",
            category="Tables",
            labels={"table": "feature statistics"},
        ),
        markdown=f"{RESULTS}/tables/feature_statistics.md",
    log:
        "logs/tables/feature_statistics.log",
    benchmark:
        "benchmarks/tables/feature_statistics.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        code=script_code("feature_statistics_table.py"),
    script:
        "../scripts/feature_statistics_table.py"


rule plot_features:
    """A task's feature distributions with their CDFs, and its packed block beside the block's DCT magnitude. One
    job per task, as soon as its statistics are there: a language scenario's eleven tensors take 15 to 20 s to
    draw, and one job for every task ran 185 s at the demo's end (2026-12-07)."""
    input:
        table=f"{RESULTS}/{{task}}/statistics/features.csv",
        arrays=f"{RESULTS}/{{task}}/statistics/features.npz",
    output:
        distribution=report(
            f"{RESULTS}/figures/{{task}}_feature_distribution.png",
            caption="../report/feature_distribution.rst",
            category="Features",
            subcategory="{task}",
            labels={"task": "{task}", "figure": "distribution"},
        ),
        dct=report(
            f"{RESULTS}/figures/{{task}}_feature_dct.png",
            caption="../report/feature_dct.rst",
            category="Features",
            subcategory="{task}",
            labels={"task": "{task}", "figure": "DCT"},
        ),
    log:
        "logs/figures/{task}_features.log",
    benchmark:
        "benchmarks/figures/{task}_features.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        task="{task}",
        code=script_code("plot_features.py"),
    script:
        "../scripts/plot_features.py"


rule bd_rate:
    """BD-rate and BD-metric of every codec against the anchor codec, per task (BPFP against the task metric)."""
    input:
        table=f"{RESULTS}/tables/rate_accuracy.csv",
    output:
        csv=report(
            f"{RESULTS}/tables/bd_rate.csv",
            caption="../report/bd_rate.rst",
            category="Tables",
            labels={"table": "BD-rate"},
        ),
        markdown=f"{RESULTS}/tables/bd_rate.md",
    log:
        "logs/tables/bd_rate.log",
    benchmark:
        "benchmarks/tables/bd_rate.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        anchor=wf.run_label(config, config["report"]["anchor"]),  # <codec>@hybrid for a universal codec
        method=config["report"]["bd_method"],
        points=config["report"]["bd_points"],
        code=script_code("bd_rate.py"),
    script:
        "../scripts/bd_rate.py"


rule complexity:
    """Encoding and decoding seconds per sample and per million frame samples, per task and codec, from the
    times the code jobs recorded in the sidecars."""
    input:
        bitstreams=all_bitstream_dirs(),
    output:
        csv=report(
            f"{RESULTS}/tables/complexity.csv",
            caption="../report/complexity.rst",
            category="Tables",
            labels={"table": "complexity"},
        ),
        markdown=f"{RESULTS}/tables/complexity.md",
    log:
        "logs/tables/complexity.log",
    benchmark:
        "benchmarks/tables/complexity.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        code=script_code("complexity.py"),
    script:
        "../scripts/complexity.py"


rule provenance:
    """Where the tables come from: resolved config, package and codec versions, models and head checksums, git
    revision (dirty or not) and the machine; rewritten whenever the tables are."""
    input:
        tables=[f"{RESULTS}/tables/rate_accuracy.csv", f"{RESULTS}/tables/da_r2.csv"],
        scores=[f"{RESULTS}/{t}/{c}/scores.json" for t, c in coded_labels()],
        heads=expand(f"{RESULTS}/{{task}}/head.pt", task=TASKS),
    output:
        json=report(
            f"{RESULTS}/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"file": "provenance"},
        ),
    log:
        "logs/provenance.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config=config,
        tasks=TASKS,
        code=script_code("provenance.py"),
    script:
        "../scripts/provenance.py"
