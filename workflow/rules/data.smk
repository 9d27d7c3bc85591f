# Datasets: generate (demo) or fetch (real), then validate into clean.json + quarantine.jsonl.

DEMO_PRETRAIN = [n for n, src in PARAMS.pretrain_data.items() if src.source == "demo"]
DEMO_WEB = [n for n, src in PARAMS.pretrain_data.items() if src.source == "demo-web"]
DEMO_INSTRUCT = [n for n, src in PARAMS.instruct_data.items() if src.is_demo]


def data_dir(kind, name):
    return paths.pretrain_dir(name) if kind == "pretrain" else paths.instruct_dir(name)


def mix_option(mix):
    return "--mix " + ",".join(f"{k}={v}" for k, v in mix.items()) if mix else ""


rule demo_pretrain_data:
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=one_of(DEMO_PRETRAIN) if DEMO_PRETRAIN else "^$",
    params:
        src=lambda w: PARAMS.pretrain_data[w.name],
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} make-demo-data pretrain --kind {params.src.options[kind]} --size {params.src.options[size]}"
        " --seed {params.src.options[seed]} --out {output} > {log} 2>&1"


# LAION-like and Recap-like demo twins: served over local HTTP and downloaded with img2dataset,
# the same path as the real web subsets.
rule demo_web_data:
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=one_of(DEMO_WEB) if DEMO_WEB else "^$",
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} fetch-web-twin --params params.yaml --name {wildcards.name} --out {output} > {log} 2>&1"


rule demo_instruct_data:
    output:
        directory(paths.raw_dir(paths.instruct_dir("{name}"))),
    wildcard_constraints:
        name=one_of(DEMO_INSTRUCT) if DEMO_INSTRUCT else "^$",
    params:
        src=lambda w: PARAMS.instruct_data[w.name],
        mix=lambda w: mix_option(PARAMS.instruct_data[w.name].get("mix")),
        turns=lambda w: PARAMS.instruct_data[w.name].get("max_turns", 3),
    log:
        "logs/data/instruct_{name}.log",
    shell:
        "{LLAVA} make-demo-data instruct --size {params.src.options[size]} --seed {params.src.options[seed]}"
        " {params.mix} --max-turns {params.turns} --out {output} > {log} 2>&1"


rule validate_data:
    input:
        lambda w: paths.raw_dir(data_dir(w.kind, w.name)),
    output:
        clean="data/{kind}/{name}/clean.json",
        quarantine="data/{kind}/{name}/quarantine.jsonl",
    wildcard_constraints:
        kind="pretrain|instruct",
    params:
        max_bad=PARAMS.max_bad_fraction,
    log:
        "logs/data/validate_{kind}_{name}.log",
    shell:
        "{LLAVA} validate-data --json {input}/data.json --image-root {input}/images --quarantine {output.quarantine}"
        " --clean-out {output.clean} --max-bad-fraction {params.max_bad} > {log} 2>&1"


REAL_PRETRAIN = [n for n, src in PARAMS.pretrain_data.items() if src.source not in ("demo", "demo-web", "recaption")]
RECAPTIONED = [n for n, src in PARAMS.pretrain_data.items() if src.source == "recaption"]
REAL_INSTRUCT = [n for n, src in PARAMS.instruct_data.items() if not src.is_demo]


def mix_parts(w):
    """A mix is drawn from its parts' downloaded sets."""
    src = PARAMS.pretrain_data[w.name]
    return [paths.raw_dir(paths.pretrain_dir(p)) for p in src.get("parts") or []] if src.source == "mix" else []


rule fetch_pretrain_data:
    input:
        mix_parts,
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=one_of(REAL_PRETRAIN) if REAL_PRETRAIN else "^$",
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} fetch-data --params params.yaml --name {wildcards.name} --kind pretrain --out {output} > {log} 2>&1"


rule fetch_instruct_data:
    output:
        directory(paths.raw_dir(paths.instruct_dir("{name}"))),
    wildcard_constraints:
        name=one_of(REAL_INSTRUCT) if REAL_INSTRUCT else "^$",
    log:
        "logs/data/instruct_{name}.log",
    shell:
        "{LLAVA} fetch-data --params params.yaml --name {wildcards.name} --kind instruct --out {output} > {log} 2>&1"


# A recaptioned variant of any pre-training set: a captioning model writes dense captions for its
# images (resumable: captions already written are kept when the job restarts in the same folder).
rule recaption_data:
    input:
        lambda w: paths.raw_dir(paths.pretrain_dir(PARAMS.pretrain_data[w.name].get("from"))),
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=one_of(RECAPTIONED) if RECAPTIONED else "^$",
    params:
        model=lambda w: PARAMS.pretrain_data[w.name].get("model"),
        batch=lambda w: PARAMS.pretrain_data[w.name].get("batch_size", 8),
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} recaption --model {params.model} --json {input}/data.json --image-root {input}/images"
        " --out {output} --batch-size {params.batch} > {log} 2>&1"
