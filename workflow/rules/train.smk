# Stage 1 (projector alignment on a pre-training set) and stage 2 (instruction tuning).
# Resumable checkpoints live in runs/<study>/work/, outside the declared outputs, so a failed or
# requeued job keeps them; only the finished model bundle is the rule's output.


def stage_input(w):
    exp = STUDY.experiment(w.exp)
    if w.stage == "1":
        return {
            "init": paths.init_dir(S, exp.pair_id),
            "data": paths.clean_json(paths.pretrain_dir(exp.pretrain)),
        }
    return {
        "init": paths.stage_dir(S, 1, w.exp),
        "data": paths.clean_json(paths.instruct_dir(STUDY.instruct)),
    }


def image_root(w):
    exp = STUDY.experiment(w.exp)
    data = paths.pretrain_dir(exp.pretrain) if w.stage == "1" else paths.instruct_dir(STUDY.instruct)
    return paths.image_root(data)


rule train:
    input:
        unpack(stage_input),
    output:
        directory(paths.stage_dir(S, "{stage}", "{exp}")),
    params:
        # The stage's recipe (protocols.<name>.stage<N>, less the fields that change no result).
        lineage=declared("train"),
        work=lambda w: paths.work_dir(S, w.stage, w.exp),
        root=image_root,
        # Multi-node on SLURM: the profile's `mpi: srun` resource starts one task per node, each of
        # which runs torchrun for its node (empty on one node and locally).
        launcher=lambda w, resources: resources.get("mpi", ""),
        protocol=STUDY.protocol,
        # The seed is in the output's path (config.seeds): derived from it, so no params trigger.
        seed=lambda w, output: seed_option(STUDY.experiment(w.exp).seed),
    threads: 1
    # Ready trainings start before ready evaluations: evaluations are short and fill the cores at the
    # end, while a training started late would run alone on the last core.
    priority: 1
    log:
        f"logs/{S}/stage{{stage}}_{{exp}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} {LLAVA} train --stage {wildcards.stage} --init {input.init:q}"
        " --data {input.data:q} --image-root {params.root:q} --out {output:q} --work-dir {params.work:q}"
        " --params params.yaml --protocol {params.protocol:q}{params.seed} > {log:q} 2>&1"
