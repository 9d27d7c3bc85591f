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
        lineage=declared("demo_tokenizer"),
        vocab=PARAMS.demo_tokenizer["vocab_size"],
    log:
        f"logs/{S}/tokenizer.log",
    shell:
        "{LLAVA} make-tokenizer --texts {input:q} --out {output:q} --vocab-size {params.vocab} > {log:q} 2>&1"


rule warm_vision:
    output:
        directory(paths.vision_dir(S, "{vision}")),
    params:
        lineage=declared("warm_vision"),
        steps=PARAMS.demo_vision["steps"],
        seed=PARAMS.demo_vision["seed"],
    log:
        f"logs/{S}/vision_{{vision}}.log",
    shell:
        "OMP_NUM_THREADS=1 {LLAVA} warm-vision --vision {wildcards.vision:q} --steps {params.steps}"
        " --seed {params.seed} --out {output:q} > {log:q} 2>&1"


def init_inputs(w):
    """Tiny studies: the demo tokenizer and the warmed-up encoder; real ones start from HF checkpoints."""
    if STUDY.size != "tiny":
        return {}
    return {"tokenizer": paths.tokenizer_dir(S), "vision": paths.vision_dir(S, STUDY.pairs[w.pair].vision)}


def s2_option(exp):
    """S2 with the study's explicit scales, with the encoder's defaults, or none."""
    if not exp.s2:
        return ""
    return "--s2-scales " + " ".join(str(s) for s in exp.s2_scales) if exp.s2_scales else "--s2"


rule init_model:
    input:
        unpack(init_inputs),
    output:
        directory(paths.init_dir(S, "{pair}")),
    params:
        lineage=declared("init_model"),
        llm=lambda w: STUDY.pairs[w.pair].llm,
        vision=lambda w: STUDY.pairs[w.pair].vision,
        s2=lambda w: s2_option(STUDY.pairs[w.pair]),
        system="" if STUDY.system_prompt else "--no-system-prompt",
        # The seed is in the output's path (config.seeds): derived from it, so no params trigger.
        seed=lambda w, output: seed_option(STUDY.pairs[w.pair].seed),
        sources=lambda w, input: (
            f"--tokenizer {input.tokenizer} --vision-path {input.vision}" if "tokenizer" in input.keys() else "--pretrained"
        ),
    log:
        f"logs/{S}/init_{{pair}}.log",
    shell:
        "{LLAVA} init-model --llm {params.llm:q} --vision {params.vision:q} {params.s2} {params.system}"
        " --size {STUDY.size} {params.sources} --out {output:q}{params.seed} > {log:q} 2>&1"
