# Evaluation through lmms-eval. Demo suites are local lmms-eval tasks generated from the demo world.

DEMO_SUITE = STUDY.benchmark_suite != "real"
# Every demo suite reads the same generated task folder (it holds all demo tasks).
BENCH_DIR = paths.benchmarks_dir("demo")


rule demo_benchmarks:
    output:
        directory(BENCH_DIR),
    params:
        size=PARAMS.demo_benchmarks["size"],
        seed=PARAMS.demo_benchmarks["seed"],
    log:
        "logs/benchmarks_demo.log",
    shell:
        "{LLAVA} make-benchmarks --out {output} --n {params.size} --seed {params.seed} > {log} 2>&1"


# Batched greedy decoding gives the same answers as batch 1 (tested); demo answers are a few words.
EVAL_OPTIONS = "--batch-size 16 --max-new-tokens 16" if DEMO_SUITE else "--batch-size 1"


rule evaluate:
    input:
        model=paths.stage_dir(S, "{stage}", "{exp}"),
        tasks=[BENCH_DIR] if DEMO_SUITE else [],
    output:
        paths.scores(S, "{stage}", "{exp}"),
    params:
        tasks=",".join(STUDY.benchmarks),
        include=lambda w, input: f"--include-path {input.tasks}" if input.tasks else "",
        limit=f"--limit {STUDY.eval_samples}" if STUDY.eval_samples else "",
        out=lambda w, output: os.path.dirname(output[0]),
    threads: 1
    log:
        f"logs/{S}/eval_stage{{stage}}_{{exp}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {LLAVA} evaluate --model {input.model} --tasks {params.tasks}"
        " {params.include} {params.limit} {EVAL_OPTIONS} --out {params.out} > {log} 2>&1"
