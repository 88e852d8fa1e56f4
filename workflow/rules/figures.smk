# The paper's figures, the ParaView export, the scorecard against the paper's numbers.


rule figure:
    input:
        figure_inputs,
    output:
        png=report(
            f"{OUT}/figures/{{fig}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{fig}"},
        ),
        pdf=f"{OUT}/figures/{{fig}}.pdf",
    params:
        layout=figure_layout,
        runs=figure_runs,
        style=cfg.figure_style(config),
        code=code_version("plots"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/figures/{{fig}}.log",
    benchmark:
        f"{OUT}/benchmarks/figures/{{fig}}.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/figure.py"


rule vtp:
    input:
        f"{OUT}/surface/{{run}}/{{plane}}.h5",
    output:
        f"{OUT}/figures/vtp/{{run}}/{{plane}}.vtp",
    params:
        zmax=config["figures"]["zmax"],
        code=code_version("plots"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/figures/vtp/{{run}}/{{plane}}.log",
    benchmark:
        f"{OUT}/benchmarks/figures/vtp/{{run}}/{{plane}}.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/vtp.py"


rule scorecard:
    input:
        histories=expand(f"{OUT}/train/{{run}}/history.tsv", run=RUNS),
        sharpness=f"{OUT}/sharpness.tsv",
        hessians=all_hessians,
        trajectories=[f"{OUT}/trajectory/{run}/pca.h5" for run in cfg.trajectory_runs(config)],
    output:
        md=report(f"{OUT}/scorecard.md", caption="../report/scorecard.rst", category="Scorecard"),
        tsv=report(f"{OUT}/scorecard.tsv", caption="../report/scorecard.rst", category="Scorecard"),
    params:
        groups=scorecard_groups(),
        weight_decay={run: config["runs"][run]["weight_decay"] for run in RUNS},
        preset=PRESET,
        code=code_version("scorecard"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/scorecard.log",
    benchmark:
        f"{OUT}/benchmarks/scorecard.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/scorecard.py"
