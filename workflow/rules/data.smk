# Datasets: generate (demo) or fetch (real), then validate into clean.json + quarantine.jsonl.

from llava_more.data.demo_instruct import DEFAULT_MAX_TURNS

DEMO_PRETRAIN = [n for n, src in PARAMS.pretrain_data.items() if src.source == "demo"]
DEMO_WEB = [n for n, src in PARAMS.pretrain_data.items() if src.source == "demo-web"]
DEMO_INSTRUCT = [n for n, src in PARAMS.instruct_data.items() if src.is_demo]
REAL_PRETRAIN = [n for n, src in PARAMS.pretrain_data.items() if src.source not in ("demo", "demo-web", "recaption")]
RECAPTIONED = [n for n, src in PARAMS.pretrain_data.items() if src.source == "recaption"]
REAL_INSTRUCT = [n for n, src in PARAMS.instruct_data.items() if not src.is_demo]


def only(names):
    """A wildcard constraint for one rule's dataset names (none: matches nothing)."""
    return one_of(names) if names else "^$"


def mix_option(mix):
    return "--mix " + ",".join(f"{k}={v}" for k, v in mix.items()) if mix else ""


rule demo_pretrain_data:
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=only(DEMO_PRETRAIN),
    params:
        lineage=declared("demo_pretrain_data"),
        kind=lambda w: PARAMS.pretrain_data[w.name].get("kind"),
        size=lambda w: PARAMS.pretrain_data[w.name].get("size"),
        seed=lambda w: PARAMS.pretrain_data[w.name].get("seed"),
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} make-demo-data pretrain --kind {params.kind} --size {params.size} --seed {params.seed}"
        " --out {output:q} > {log:q} 2>&1"


# LAION-like and Recap-like demo twins: served over local HTTP and downloaded with img2dataset,
# the same path as the real web subsets.
rule demo_web_data:
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=only(DEMO_WEB),
    params:
        lineage=declared("demo_web_data"),
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} fetch-web-twin --params params.yaml --name {wildcards.name:q} --out {output:q} > {log:q} 2>&1"


rule demo_instruct_data:
    output:
        directory(paths.raw_dir(paths.instruct_dir("{name}"))),
    wildcard_constraints:
        name=only(DEMO_INSTRUCT),
    params:
        lineage=declared("demo_instruct_data"),
        size=lambda w: PARAMS.instruct_data[w.name].get("size"),
        seed=lambda w: PARAMS.instruct_data[w.name].get("seed"),
        mix=lambda w: mix_option(PARAMS.instruct_data[w.name].get("mix")),
        turns=lambda w: PARAMS.instruct_data[w.name].get("max_turns", DEFAULT_MAX_TURNS),
    log:
        "logs/data/instruct_{name}.log",
    shell:
        "{LLAVA} make-demo-data instruct --size {params.size} --seed {params.seed}"
        " {params.mix} --max-turns {params.turns} --out {output:q} > {log:q} 2>&1"


rule validate_data:
    input:
        raw=lambda w: paths.raw_dir(paths.dataset_dir(w.kind, w.name)),
    output:
        clean=paths.clean_json(paths.dataset_dir("{kind}", "{name}")),
        quarantine=paths.quarantine(paths.dataset_dir("{kind}", "{name}")),
    wildcard_constraints:
        kind="pretrain|instruct",
    params:
        lineage=declared("validate_data"),
        json=lambda w: paths.raw_json(paths.dataset_dir(w.kind, w.name)),
        images=lambda w: paths.image_root(paths.dataset_dir(w.kind, w.name)),
        max_bad=PARAMS.max_bad_fraction,
    log:
        "logs/data/validate_{kind}_{name}.log",
    shell:
        "{LLAVA} validate-data --json {params.json:q} --image-root {params.images:q}"
        " --quarantine {output.quarantine:q} --clean-out {output.clean:q} --max-bad-fraction {params.max_bad}"
        " > {log:q} 2>&1"


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
        name=only(REAL_PRETRAIN),
    params:
        lineage=declared("fetch_pretrain_data"),
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} fetch-data --params params.yaml --name {wildcards.name:q} --kind pretrain --out {output:q}"
        " > {log:q} 2>&1"


rule fetch_instruct_data:
    output:
        directory(paths.raw_dir(paths.instruct_dir("{name}"))),
    wildcard_constraints:
        name=only(REAL_INSTRUCT),
    params:
        lineage=declared("fetch_instruct_data"),
    log:
        "logs/data/instruct_{name}.log",
    shell:
        "{LLAVA} fetch-data --params params.yaml --name {wildcards.name:q} --kind instruct --out {output:q}"
        " > {log:q} 2>&1"


# A recaptioned variant of any pre-training set: a captioning model writes dense captions for its
# images (resumable: captions already written are kept when the job restarts in the same folder).
rule recaption_data:
    input:
        lambda w: paths.raw_dir(paths.pretrain_dir(PARAMS.pretrain_data[w.name].get("from"))),
    output:
        directory(paths.raw_dir(paths.pretrain_dir("{name}"))),
    wildcard_constraints:
        name=only(RECAPTIONED),
    params:
        lineage=declared("recaption_data"),
        json=lambda w: paths.raw_json(paths.pretrain_dir(PARAMS.pretrain_data[w.name].get("from"))),
        images=lambda w: paths.image_root(paths.pretrain_dir(PARAMS.pretrain_data[w.name].get("from"))),
        model=lambda w: PARAMS.pretrain_data[w.name].get("model"),
        batch=lambda w: PARAMS.pretrain_data[w.name].get("batch_size", 8),
    log:
        "logs/data/pretrain_{name}.log",
    shell:
        "{LLAVA} recaption --model {params.model:q} --json {params.json:q} --image-root {params.images:q}"
        " --out {output:q} --batch-size {params.batch} > {log:q} 2>&1"
