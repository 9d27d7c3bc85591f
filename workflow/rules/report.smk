# The paper's tables (and plots) for the study, from every model's scores.


def all_scores():
    out = [paths.scores(S, 2, e.id) for e in STUDY.experiments]
    if STUDY.eval_untrained:
        out += [paths.scores(S, 1, e.id) for e in STUDY.experiments]
    return out


rule report:
    input:
        all_scores(),
    output:
        directory(paths.tables_dir(S)),
    log:
        f"logs/{S}/report.log",
    shell:
        "{LLAVA} report --params params.yaml --study {S} --out {output} > {log} 2>&1"
