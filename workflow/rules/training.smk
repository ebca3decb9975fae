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
        task="{task}",
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


rule train:
    """Train a trained codec's model at one lambda on random crops of a task's training features (a universal
    codec's hybrid model: of its tasks' features, mixed; GPU when there is one), through the codec's training
    hook (Codec.train_point); a held-out share of them (training.validation) steps the learning-rate schedule
    once per epoch. One rule for every trained codec."""
    input:
        unpack(training_inputs),
    output:
        model=f"{RESULTS}/models/{{codec}}/{{task}}/{{point}}/model.pt",
        loss=f"{RESULTS}/models/{{codec}}/{{task}}/{{point}}/loss.csv",
    log:
        "logs/models/{codec}/{task}/{point}/train.log",
    benchmark:
        "benchmarks/models/{codec}/{task}/{point}/train.tsv"
    wildcard_constraints:
        task=f"{TASKS_PATTERN}|hybrid",
    conda:
        "../../envs/codec.yaml"
    threads: config["run"]["threads"]
    resources:
        mem_mb=lambda wc: codec_block(wc.codec)["resources"]["train"]["mem_mb"],
        runtime=lambda wc: codec_block(wc.codec)["resources"]["train"]["runtime"],
        gpu=lambda wc: codec_block(wc.codec)["resources"]["train"]["gpu"],
    params:
        codec=lambda wc: codec_kind(wc.codec),
        task="{task}",
        point="{point}",
        sizes=lambda wc: {k: codec_block(wc.codec)[k] for k in wf.codec_class(config, wc.codec).sizes},
        sources=lambda wc: training_sources(wc.codec, wc.task),
        training=lambda wc: training_settings(codec_block(wc.codec), wc.task),
        device=lambda wc: codec_block(wc.codec)["device"],
        code=lambda wc: script_code("train.py", codec=codec_kind(wc.codec), quantizer=codec_quantizer(wc.codec)),
    script:
        "../scripts/train.py"


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
