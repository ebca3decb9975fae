use rule candidates as candidates_train with:
    output:
        candidates=f"{RESULTS}/{{task}}/train/candidates.csv",
    log:
        "logs/{task}/train/candidates.log",
    benchmark:
        "benchmarks/{task}/train/candidates.tsv"
    params:
        source=lambda wc: task_settings(wc.task)["train"]["source"],


use rule select as select_train with:
    input:
        candidates=f"{RESULTS}/{{task}}/train/candidates.csv",
    output:
        manifest=f"{RESULTS}/{{task}}/train/manifest.csv",
        report=f"{RESULTS}/{{task}}/train/selection/report.csv",
        summary=f"{RESULTS}/{{task}}/train/selection/summary.json",
    log:
        "logs/{task}/train/select.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    params:
        task=lambda wc: wc.task,
        policy="first",
        settings=lambda wc: training_selection_settings(wc.task),
        model=None,
        split=None,
        device="cpu",
        code=script_code("select.py", task=None),  # policy first: no task model runs


use rule extract as extract_train with:
    input:
        unpack(converted_model),
        manifest=f"{RESULTS}/{{task}}/train/manifest.csv",
    output:
        features=directory(f"{RESULTS}/{{task}}/train/features.zarr"),
    log:
        "logs/{task}/train/extract.log",


rule train_hyperprior:
    """Train the Hyperprior at one lambda on random crops of a task's training features (GPU when there is one);
    a held-out share of them (training.validation) steps the learning-rate schedule once per epoch."""
    input:
        unpack(training_inputs),
    output:
        model=f"{RESULTS}/models/hyperprior/{{task}}/{{point}}/model.pt",
        loss=f"{RESULTS}/models/hyperprior/{{task}}/{{point}}/loss.csv",
    log:
        "logs/models/hyperprior/{task}/{point}/train.log",
    benchmark:
        "benchmarks/models/hyperprior/{task}/{point}/train.tsv"
    conda:
        "../../envs/codec.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=lambda wc: config["codecs"]["hyperprior"]["resources"]["train"]["mem_mb"],
        runtime=lambda wc: config["codecs"]["hyperprior"]["resources"]["train"]["runtime"],
        gpu=lambda wc: config["codecs"]["hyperprior"]["resources"]["train"]["gpu"],
    params:
        task=lambda wc: wc.task,
        lam=lambda wc: float(wc.point),
        N=lambda wc: config["codecs"]["hyperprior"]["N"],
        M=lambda wc: config["codecs"]["hyperprior"]["M"],
        truncation=lambda wc: training_truncation(wc.task),
        training=lambda wc: config["codecs"]["hyperprior"]["training"][wc.task],
        device=lambda wc: config["codecs"]["hyperprior"]["device"],
        code=script_code("train_hyperprior.py", quantizer=codec_quantizer("hyperprior")),
    script:
        "../scripts/train_hyperprior.py"


rule plot_training:
    """The training curve of every model: loss, estimated rate and distortion per logged step. One job draws them
    all (a job's start-up, about 1.5 s, exceeds a curve's drawing)."""
    input:
        loss=[f"{RESULTS}/models/{c}/{t}/{p}/loss.csv" for c, t, p in trained_models()],
    output:
        png=[
            report(
                f"{RESULTS}/models/{c}/{t}/{p}/loss.png",
                caption="../report/training.rst",
                category="Training",
                labels={"model": f"{c} on {t}", "lambda": p},
            )
            for c, t, p in trained_models()
        ],
    log:
        "logs/models/plot.log",
    benchmark:
        "benchmarks/models/plot.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        titles=[f"{c} trained on {t}, lambda {p}" for c, t, p in trained_models()],
        code=script_code("plot_training.py"),
    script:
        "../scripts/plot_training.py"
