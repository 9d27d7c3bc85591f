# A published study: every released checkpoint becomes a bundle (`llava-more import-model`), which
# the evaluate rule then scores like a trained model. A stage-2 bundle is the fine-tuned release, a
# stage-1 bundle the pretrain-only release on its LLM. Downloads go to the Hugging Face cache
# (HF_HOME); on clusters whose compute nodes have no internet, fill it from a login node first
# (profiles/slurm/README.md, "Published checkpoints").

from llava_more.config.published import checkpoint_of


rule import_published:
    output:
        directory(paths.stage_dir(S, "{stage}", "{exp}")),
    params:
        lineage=declared("import_published"),
        source=lambda w: checkpoint_of(STUDY, int(w.stage), w.exp),
        llm=lambda w: STUDY.experiment(w.exp).llm,
        vision=lambda w: STUDY.experiment(w.exp).vision,
        s2=lambda w: "yes" if STUDY.experiment(w.exp).s2 else "no",
    threads: 1
    log:
        f"logs/{S}/import_stage{{stage}}_{{exp}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {LLAVA} import-model {params.source:q} --out {output:q} --llm {params.llm}"
        " --vision {params.vision} --expect-s2 {params.s2} > {log:q} 2>&1"
