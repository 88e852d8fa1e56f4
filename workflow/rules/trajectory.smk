# Optimiser trajectories (appendix B): PCA of a run's checkpoints. The loss on the PCA plane is
# the surface rule's plane "pca" (surface/{run}/pca.h5), sharded like any other plane; figure B
# (figures.smk) draws the paths.


rule trajectory_pca:
    input:
        final=f"{OUT}/train/{{run}}/final.pt",
        directions=f"{OUT}/directions/{{run}}/filter.h5",
    output:
        f"{OUT}/trajectory/{{run}}/pca.h5",
    params:
        margin=config["landscape"]["trajectory_margin"],
        points=SCALE["landscape"]["points_2d"],
        code=code_version("trajectory"),
    threads: 1
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
    log:
        f"{LOGS}/trajectory/{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/trajectory/{{run}}.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/trajectory.py"

