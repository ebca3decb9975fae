rule rate_accuracy:
    """Collect every operating point's scores into the tidy rate-accuracy table (CSV and Markdown, with each
    task's sample selection), the per-tensor table (each named tensor's BPFP, entropy, share of the bits, MSE and
    quantization MSE), the tensor-accuracy table (the metric with one tensor group coded alone) and the selection
    table."""
    input:
        original=expand(f"{RESULTS}/{{task}}/original/scores.json", task=TASKS),
        coded=list(dict.fromkeys(f"{RESULTS}/{t}/{c}/scores.json" for t, c, _ in coded_points())),
        selection=expand(f"{RESULTS}/{{task}}/selection/summary.json", task=TASKS),
    output:
        csv=report(
            f"{RESULTS}/tables/rate_accuracy.csv",
            caption="../report/rate_accuracy.rst",
            category="Tables",
            labels={"table": "rate-accuracy"},
        ),
        markdown=f"{RESULTS}/tables/rate_accuracy.md",
        tensors=report(
            f"{RESULTS}/tables/tensors.csv",
            caption="../report/tensors.rst",
            category="Tables",
            labels={"table": "per tensor"},
        ),
        tensor_accuracy=report(
            f"{RESULTS}/tables/tensor_accuracy.csv",
            caption="../report/tensor_accuracy.rst",
            category="Tables",
            labels={"table": "tensor accuracy"},
        ),
        selection=report(
            f"{RESULTS}/tables/selection.csv",
            caption="../report/selection.rst",
            category="Tables",
            labels={"table": "selection"},
        ),
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
    """The linear fit of the task metric on feature MSE (R^2, slope, intercept), per task and codec."""
    input:
        table=f"{RESULTS}/tables/rate_accuracy.csv",
    output:
        csv=report(
            f"{RESULTS}/tables/da_r2.csv",
            caption="../report/da_r2.rst",
            category="Tables",
            labels={"table": "D-A fits"},
        ),
        markdown=f"{RESULTS}/tables/da_r2.md",
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


rule plot_task_figures:
    """A task's rate-accuracy figure (its curves, one line per codec with the uncompressed metric as a reference
    line) and its metric against feature MSE with each codec's fitted line and R^2 (the D-A analysis).

    One job per task: they are redrawn together whenever the table changes (the run's last step), and one job
    drawing every task's took 25 s alone at the demo's end (15 tasks, 2026-12-07), the other core idle."""
    input:
        table=f"{RESULTS}/tables/rate_accuracy.csv",
        fits=f"{RESULTS}/tables/da_r2.csv",
    output:
        rate_accuracy=report(
            f"{RESULTS}/figures/{{task}}_rate_accuracy.png",
            caption="../report/rate_accuracy_figure.rst",
            category=lambda wc: figure_category(wc.task, "Rate-accuracy"),
            labels={"task": "{task}", "figure": "rate-accuracy"},
        ),
        distortion_accuracy=report(
            f"{RESULTS}/figures/{{task}}_distortion_accuracy.png",
            caption="../report/distortion_accuracy.rst",
            category=lambda wc: figure_category(wc.task, "Distortion-accuracy"),
            labels={"task": "{task}", "figure": "D-A fit"},
        ),
    log:
        "logs/figures/{task}_rate_accuracy.log",
    benchmark:
        "benchmarks/figures/{task}_rate_accuracy.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        task="{task}",
        label=lambda wc: task_class(wc.task).metric_label,
        code=script_code("plot_task_figures.py"),
    script:
        "../scripts/plot_task_figures.py"


rule plot_rate_accuracy:
    """The accuracy drop of every task against BPFP on one figure (paper Fig. 5) and each named tensor's share of
    a point's bits, for the tasks with several (which tensor carries the rate)."""
    input:
        table=f"{RESULTS}/tables/rate_accuracy.csv",
        tensors=f"{RESULTS}/tables/tensors.csv",
    output:
        drop=report(
            f"{RESULTS}/figures/rate_accuracy_drop.png",
            caption="../report/rate_accuracy_drop.rst",
            category="Rate-accuracy",
            labels={"task": "all", "figure": "accuracy drop"},
        ),
        bit_shares=report(
            f"{RESULTS}/figures/tensor_bit_shares.png",
            caption="../report/tensor_bit_shares.rst",
            category="Rate-accuracy",
            labels={"task": "all", "figure": "tensors' bit shares"},
        ),
    log:
        "logs/figures/rate_accuracy.log",
    benchmark:
        "benchmarks/figures/rate_accuracy.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        labels={task: task_class(task).metric_label for task in TASKS},
        code=script_code("plot_rate_accuracy.py"),
    script:
        "../scripts/plot_rate_accuracy.py"


rule generalizability:
    """Trained codecs' models trained on one task applied to another task's features, beside the native models."""
    input:
        original=lambda wc: [
            f"{RESULTS}/{dst}/original/scores.json" for dst in sorted({d for _, d in generalizability_pairs()})
        ],
        native=lambda wc: [
            f"{RESULTS}/{t}/{c}/scores.json"
            for t, c in coded_labels()
            if is_trained(c) and c in CODECS and t in {d for _, d in generalizability_pairs()}
        ],
        cross=lambda wc: sorted({f"{RESULTS}/{t}/{c}/scores.json" for t, c, _ in generalizability_points()}),
    output:
        csv=report(
            f"{RESULTS}/tables/generalizability.csv",
            caption="../report/generalizability.rst",
            category="Tables",
            labels={"table": "generalizability"},
        ),
        matrix=report(
            f"{RESULTS}/tables/generalizability_matrix.csv",
            caption="../report/generalizability_matrix.rst",
            category="Tables",
            labels={"table": "generalizability (Table 6)"},
        ),
        markdown=f"{RESULTS}/tables/generalizability.md",
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
