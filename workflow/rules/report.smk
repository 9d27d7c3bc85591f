# The paper's tables (and plots) for the study, from every model's scores. Studies of real-size
# models also get the paper's numbers beside ours (reference/paper_results.csv) and the delta.


def all_scores():
    out = [paths.scores(S, 2, e.id) for e in STUDY.experiments]
    out += [paths.scores(S, 1, exp_id) for exp_id in STUDY.eval_untrained]
    return out


rule report:
    input:
        all_scores(),
    output:
        tables=directory(paths.tables_dir(S)),
        plots=directory(paths.plots_dir(S)),
    params:
        scores=f"{paths.RESULTS}/{S}/eval",
        reference="--reference reference/paper_results.csv" if STUDY.size == "real" else "",
    log:
        f"logs/{S}/report.log",
    shell:
        "{LLAVA} report --params params.yaml --study {S} --scores-dir {params.scores} --out {output.tables}"
        " --plots {output.plots} {params.reference} > {log} 2>&1"
