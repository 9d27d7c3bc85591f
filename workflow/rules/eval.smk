# Evaluation through lmms-eval. Demo suites are local lmms-eval tasks generated from the demo world.
# How a suite runs (batch size, dtype, generation cap) is set in params.yaml's benchmark_suites;
# the device is whatever the job was given (`evaluate --device auto`).

SUITE = PARAMS.benchmark_suites[STUDY.benchmark_suite]
DEMO_SUITE = STUDY.benchmark_suite != "real"
# Every demo suite reads the same generated task folder (it holds all demo tasks).
BENCH_DIR = paths.benchmarks_dir("demo")


rule demo_benchmarks:
    output:
        directory(BENCH_DIR),
    params:
        lineage=declared("demo_benchmarks"),
        size=PARAMS.demo_benchmarks["size"],
        seed=PARAMS.demo_benchmarks["seed"],
    log:
        "logs/benchmarks_demo.log",
    shell:
        "{LLAVA} make-benchmarks --out {output:q} --n {params.size} --seed {params.seed} > {log:q} 2>&1"


rule evaluate:
    input:
        model=paths.stage_dir(S, "{stage}", "{exp}"),
        tasks=[BENCH_DIR] if DEMO_SUITE else [],
    output:
        paths.scores(S, "{stage}", "{exp}"),
    params:
        lineage=declared("evaluate"),
        tasks=",".join(SUITE.tasks),
        include=lambda w, input: f"--include-path {input.tasks}" if input.tasks else "",
        limit=f"--limit {STUDY.eval_samples}" if STUDY.eval_samples else "",
        generation=f"--dtype {SUITE.dtype}" + (f" --max-new-tokens {SUITE.max_new_tokens}" if SUITE.max_new_tokens else ""),
        out=lambda w, output: os.path.dirname(output[0]),
    threads: 1
    log:
        f"logs/{S}/eval_stage{{stage}}_{{exp}}.log",
    # The batch size changes no answer: it is in the command, not in the params (an edit reruns nothing).
    shell:
        "OMP_NUM_THREADS={threads} {LLAVA} evaluate --model {input.model:q} --tasks {params.tasks}"
        " {params.include} {params.limit} --batch-size {SUITE.batch_size} {params.generation}"
        " --out {params.out:q} > {log:q} 2>&1"
