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


rule init_model:
    input:
        tokenizer=[paths.tokenizer_dir(S)] if STUDY.size == "tiny" else [],
    output:
        directory(paths.init_dir(S, "{pair}")),
    params:
        exp=lambda w: STUDY.pairs[w.pair],
        s2=lambda w: "--s2" if STUDY.pairs[w.pair].s2 else "",
        tokenizer=lambda w, input: f"--tokenizer {input.tokenizer}" if input.tokenizer else "--pretrained",
    log:
        f"logs/{S}/init_{{pair}}.log",
    shell:
        "{LLAVA} init-model --llm {params.exp.llm} --vision {params.exp.vision} {params.s2} --size {STUDY.size}"
        " {params.tokenizer} --out {output} > {log} 2>&1"
