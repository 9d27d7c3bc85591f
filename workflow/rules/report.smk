# The paper's tables (and plots) for the study, from every model's scores. Studies of real-size
# models, and published studies, also get the paper's numbers beside ours (reference/paper_results.csv) and
# the delta; a published study also gets its calibration view (ours minus paper per benchmark).

import atexit

from llava_more.report.summary import print_finished

REFERENCE = "reference/paper_results.csv"


def all_scores():
    out = [paths.scores(S, 2, e.id) for e in STUDY.experiments]
    out += [paths.scores(S, 1, exp_id) for exp_id in STUDY.eval_untrained]
    return out


rule report:
    input:
        scores=all_scores(),
        reference=[REFERENCE] if STUDY.size == "real" or STUDY.published else [],
    output:
        tables=directory(paths.tables_dir(S)),
        plots=directory(paths.plots_dir(S)),
        findings=paths.findings(S),
        findings_json=paths.findings_json(S),
        html=paths.report_html(S),
    params:
        lineage=declared("report"),
        scores=paths.eval_dir(S),
        reference=lambda w, input: f"--reference {input.reference}" if input.reference else "",
    log:
        f"logs/{S}/report.log",
    shell:
        "{LLAVA} report --params params.yaml --study {S} --scores-dir {params.scores:q} --out {output.tables:q}"
        " --plots {output.plots:q} --findings {output.findings:q} --html {output.html:q} {params.reference}"
        " > {log:q} 2>&1"


onsuccess:
    # The last lines on the screen say where the study's results are (after Snakemake's own).
    atexit.register(print_finished, S)
