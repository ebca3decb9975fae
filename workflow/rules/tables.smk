rule rate_accuracy:
    """Collect every operating point's scores into the tidy rate-accuracy table (CSV and Markdown, with each
    task's sample selection) and the selection table."""
    input:
        original=expand(f"{RESULTS}/{{task}}/original/scores.json", task=TASKS),
        coded=[f"{RESULTS}/{t}/{c}/{p}/scores.json" for t, c, p in coded_points()],
        selection=expand(f"{RESULTS}/{{task}}/selection/summary.json", task=TASKS),
    output:
        csv=f"{RESULTS}/tables/rate_accuracy.csv",
        markdown=f"{RESULTS}/tables/rate_accuracy.md",
        selection=f"{RESULTS}/tables/selection.csv",
    log:
        "logs/tables/rate_accuracy.log",
    benchmark:
        "benchmarks/tables/rate_accuracy.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        code=script_code("rate_accuracy.py"),
    script:
        "../scripts/rate_accuracy.py"


rule da_r2:
    """R^2 of the linear fit of the task metric on feature MSE, per task and codec."""
    input:
        table=f"{RESULTS}/tables/rate_accuracy.csv",
    output:
        csv=f"{RESULTS}/tables/da_r2.csv",
    log:
        "logs/tables/da_r2.log",
    benchmark:
        "benchmarks/tables/da_r2.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        code=script_code("da_r2.py"),
    script:
        "../scripts/da_r2.py"


rule plot_rate_accuracy:
    """Rate-accuracy curves of one task, one line per codec, the uncompressed metric as a reference line."""
    input:
        table=f"{RESULTS}/tables/rate_accuracy.csv",
    output:
        png=f"{RESULTS}/figures/{{task}}_rate_accuracy.png",
    log:
        "logs/figures/{task}_rate_accuracy.log",
    benchmark:
        "benchmarks/figures/{task}_rate_accuracy.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        task=lambda wc: wc.task,
        code=script_code("plot_rate_accuracy.py"),
    script:
        "../scripts/plot_rate_accuracy.py"


rule generalizability:
    """Hyperprior models trained on one task applied to another task's features, beside the native models."""
    input:
        original=lambda wc: [
            f"{RESULTS}/{dst}/original/scores.json" for dst in sorted({d for _, d in generalizability_pairs()})
        ],
        native=lambda wc: [
            f"{RESULTS}/{t}/{c}/{p}/scores.json"
            for t, c, p in coded_points()
            if c == "hyperprior" and t in {d for _, d in generalizability_pairs()}
        ],
        cross=lambda wc: [f"{RESULTS}/{t}/{c}/{p}/scores.json" for t, c, p in generalizability_points()],
    output:
        csv=f"{RESULTS}/tables/generalizability.csv",
    log:
        "logs/tables/generalizability.log",
    benchmark:
        "benchmarks/tables/generalizability.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        pairs=generalizability_pairs(),
        code=script_code("generalizability.py"),
    script:
        "../scripts/generalizability.py"
