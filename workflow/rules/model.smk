# Initial models: the LLM and vision encoder joined by an untrained projector.
# Tiny studies train their own tokenizer on the demo corpus; real studies use each LLM's tokenizer.


def study_data_jsons():
    sets = [paths.clean_json(paths.pretrain_dir(n)) for n in STUDY.pretrain_sets]
    return sets + [paths.clean_json(paths.instruct_dir(STUDY.instruct))]


rule demo_tokenizer:
    input:
        study_data_jsons(),
    output:
        directory(paths.tokenizer_dir(S)),
    params:
        vocab=PARAMS.demo_tokenizer["vocab_size"],
    log:
        f"logs/{S}/tokenizer.log",
    shell:
        "{LLAVA} make-tokenizer --texts {input} --out {output} --vocab-size {params.vocab} > {log} 2>&1"


rule warm_vision:
    output:
        directory(paths.vision_dir(S, "{vision}")),
    params:
        steps=PARAMS.demo_vision["steps"],
        seed=PARAMS.demo_vision["seed"],
    log:
        f"logs/{S}/vision_{{vision}}.log",
    shell:
        "OMP_NUM_THREADS=1 {LLAVA} warm-vision --vision {wildcards.vision} --steps {params.steps}"
        " --seed {params.seed} --out {output} > {log} 2>&1"


def init_inputs(w):
    """Tiny studies: the demo tokenizer and the warmed-up encoder; real ones start from HF checkpoints."""
    if STUDY.size != "tiny":
        return {}
    return {"tokenizer": paths.tokenizer_dir(S), "vision": paths.vision_dir(S, STUDY.pairs[w.pair].vision)}


rule init_model:
    input:
        unpack(init_inputs),
    output:
        directory(paths.init_dir(S, "{pair}")),
    params:
        exp=lambda w: STUDY.pairs[w.pair],
        s2=lambda w: "--s2" if STUDY.pairs[w.pair].s2 else "",
        system="" if STUDY.system_prompt else "--no-system-prompt",
        sources=lambda w, input: (
            f"--tokenizer {input.tokenizer} --vision-path {input.vision}" if "tokenizer" in input.keys() else "--pretrained"
        ),
    log:
        f"logs/{S}/init_{{pair}}.log",
    shell:
        "{LLAVA} init-model --llm {params.exp.llm} --vision {params.exp.vision} {params.s2} {params.system} --size {STUDY.size}"
        " {params.sources} --out {output} > {log} 2>&1"
