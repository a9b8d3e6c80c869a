"""`report.html`: one static page (figures inline as PNG data URIs, no scripts, no external files).

Every number is in a table; the figures draw the same numbers. Text from the run (commands, task
names, skip reasons, the recipe) is escaped by Jinja2's autoescape: it is shown, never interpreted.
"""

from __future__ import annotations

from typing import Any

import jinja2

from ..runner import format_s
from . import figures

SECTIONS = ("stages", "effects", "evaluation", "training", "data", "coevolution", "exports", "reproduce")


def _fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell ("-" when there is none)."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int) or (isinstance(value, str) and value):
        return str(value)
    return "-"


def _duration(seconds: Any) -> str:
    """`runner.format_s` for a table cell ("-" when the stage has no time)."""
    return format_s(seconds) if isinstance(seconds, (int, float)) else "-"


def _sections(report: dict, kind: str) -> list[dict]:
    """The finished stages whose section is of `kind` (train, eval, ...)."""
    return [s for s in report["stages"] if s.get("section", {}).get("kind") == kind]


def effect_rows(report: dict) -> list[dict]:
    """What each training stage did to what it optimises: loss (or reward) at its start and end,
    then the held-out NLL of its last evaluation."""
    rows = []
    for stage in _sections(report, "train"):
        curves, evals = stage["section"]["curves"], stage["section"]["heldout"]
        key = "reward" if "reward" in curves else "loss"
        points = [p[1] for p in curves.get(key, [])]
        if points:
            k = max(1, len(points) // 5)  # mean of the first and last fifth: steps are noisy
            first, last = sum(points[:k]) / k, sum(points[-k:]) / k
            rows.append({"stage": stage["name"], "metric": f"train {key}", "first": first, "last": last})
        for name, value in (evals[-1] if evals else {}).items():
            if name.startswith("nll/"):
                rows.append(
                    {"stage": stage["name"], "metric": f"held-out {name}", "first": None, "last": value}
                )
    return rows


def evaluation_table(report: dict) -> tuple[list[str], list[dict]]:
    """Rows task/metric, one column per evaluation stage (what each stage bought)."""
    stages = _sections(report, "eval")
    columns = [s["name"] for s in stages]
    rows: dict[tuple[str, str], dict] = {}
    for stage in stages:
        for task, metrics in stage["section"]["tasks"].items():
            for metric, value in metrics.items():
                if metric in ("seconds", "n", "records", "missing"):
                    continue
                row = rows.setdefault((task, metric), {"task": task, "metric": metric, "values": {}})
                row["values"][stage["name"]] = value
    return columns, list(rows.values())


def mixtures(report: dict) -> dict[str, dict[str, float]]:
    """Every mixture of the run by name: Eq. 5 stages and each co-evolution stage."""
    found = {s["name"]: s["section"]["weights"] for s in _sections(report, "mixture")}
    for stage in _sections(report, "coevolve"):
        for row in stage["section"]["stages"]:
            if row["weights"]:
                found[f"{stage['name']} stage {row['stage']}"] = row["weights"]
    return found


def view(report: dict) -> dict[str, Any]:
    """Everything the template shows, figures included."""
    train = _sections(report, "train")
    eval_columns, eval_rows = evaluation_table(report)
    mix = mixtures(report)
    influence = _sections(report, "influence")
    return {
        "r": report,
        "effects": effect_rows(report),
        "eval_columns": eval_columns,
        "eval_rows": eval_rows,
        "skipped": {
            s["name"]: s["section"]["skipped"] for s in _sections(report, "eval") if s["section"]["skipped"]
        },
        "train": train,
        "loss_png": figures.training_curve(train, "loss", "training loss (nats/token)"),
        "reward_png": figures.training_curve(train, "reward", "mean reward"),
        "mixtures": mix,
        "sources": sorted({k for w in mix.values() for k in w}),
        "mix_png": figures.mixture_bars(mix),
        "influence": [(s, figures.influence_histograms(s["section"])) for s in influence],
        "coevolve": _sections(report, "coevolve"),
        "exports": _sections(report, "export"),
        "total_s": sum(s.get("wall_s") or 0.0 for s in report["stages"]),
    }


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ r.recipe }} - mobilellm-r1 run report</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;color:#1b1b1b}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f1f1f1}td.l,th.l{text-align:left}code,pre{font-size:12px;background:#f6f6f6}
pre{padding:.6em;overflow-x:auto}img{max-width:100%}h2{border-bottom:2px solid #ddd;margin-top:1.8em}
.muted{color:#666}
</style></head><body>
<h1>{{ r.recipe }}: run report</h1>
<p>{{ r.description }}</p>
<p class="muted">Written {{ r.written }} from <code>{{ r.run_dir }}</code>; mobilellm-r1 {{ r.versions.mobilellm_r1 }},
torch {{ r.versions.torch }}, Python {{ r.versions.python }}, {{ r.versions.platform }}.
Total stage time {{ dur(total_s) }}.</p>

<h2 id="stages">Stages</h2>
<table><tr><th class="l">stage</th><th class="l">what</th><th class="l">state</th><th>wall time</th><th>tokens</th><th class="l">device</th><th>attempts</th></tr>
{% for s in r.stages %}<tr><td class="l">{{ s.name }}</td><td class="l">{{ s.title }}</td><td class="l">{{ s.state }}</td>
<td>{{ dur(s.wall_s) }}</td><td>{{ s.section.tokens if s.section and s.section.tokens is defined else "-" }}</td>
<td class="l">{{ s.device or "-" }}</td><td>{{ s.attempts or "-" }}</td></tr>{% endfor %}
</table>

<h2 id="effects">What each training stage did</h2>
<p>Mean of the first and of the last fifth of the logged steps (training loss, or mean reward for
GRPO); held-out NLL is the last evaluation of the run on the held-out probing texts.</p>
<table><tr><th class="l">stage</th><th class="l">metric</th><th>start</th><th>end</th></tr>
{% for e in effects %}<tr><td class="l">{{ e.stage }}</td><td class="l">{{ e.metric }}</td><td>{{ fmt(e.first) }}</td><td>{{ fmt(e.last) }}</td></tr>{% endfor %}
</table>

<h2 id="evaluation">Evaluation per stage</h2>
{% if eval_rows %}<table><tr><th class="l">task</th><th class="l">metric</th>{% for c in eval_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in eval_rows %}<tr><td class="l">{{ row.task }}</td><td class="l">{{ row.metric }}</td>
{% for c in eval_columns %}<td>{{ fmt(row["values"].get(c)) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% else %}<p>No evaluation stage has finished.</p>{% endif %}
{% for name, reasons in skipped.items() %}<p>{{ name }} skipped:
{% for task, why in reasons.items() %}<code>{{ task }}</code> ({{ why }}){% if not loop.last %}; {% endif %}{% endfor %}</p>{% endfor %}

<h2 id="training">Training curves</h2>
{% if loss_png %}<img alt="training loss of every training stage" src="{{ loss_png }}">{% endif %}
{% if reward_png %}<img alt="GRPO mean reward per step" src="{{ reward_png }}">{% endif %}
<table><tr><th class="l">stage</th><th>steps</th><th>tokens</th><th>first loss</th><th>last loss</th><th>first reward</th><th>last reward</th><th class="l">RankMe (last eval)</th></tr>
{% for s in train %}{% set c = s.section.curves %}<tr><td class="l">{{ s.name }}</td><td>{{ s.section.steps }}</td><td>{{ s.section.tokens }}</td>
<td>{{ fmt(c.loss[0][1]) if c.loss else "-" }}</td><td>{{ fmt(c.loss[-1][1]) if c.loss else "-" }}</td>
<td>{{ fmt(c.reward[0][1]) if c.reward else "-" }}</td><td>{{ fmt(c.reward[-1][1]) if c.reward else "-" }}</td>
<td class="l">{{ fmt(s.section.heldout[-1].rankme) if s.section.heldout and s.section.heldout[-1].rankme is defined else "-" }}</td></tr>{% endfor %}
</table>
{% for s in train if s.section.prompt_filter %}{% set f = s.section.prompt_filter %}<p>{{ s.name }}: of
{{ f.prompts }} prompts sampled {{ f.samples }} times each by the initial policy, {{ f.kept }} were kept (solved by
some samples, not all); {{ f.never }} never solved, {{ f.always }} always solved.</p>{% endfor %}

<h2 id="data">Data: mixtures and influence</h2>
{% if mix_png %}<img alt="source weights of every mixture" src="{{ mix_png }}">{% endif %}
{% if mixtures %}<table><tr><th class="l">source</th>{% for m in mixtures %}<th>{{ m }}</th>{% endfor %}</tr>
{% for src in sources %}<tr><td class="l">{{ src }}</td>{% for m, w in mixtures.items() %}<td>{{ fmt(w.get(src)) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% else %}<p>No mixture stage has finished.</p>{% endif %}
{% for s, png in influence %}<h3>{{ s.title }}</h3>
{% if png %}<img alt="influence histograms per source" src="{{ png }}">{% endif %}
<table><tr><th class="l">source</th><th>samples</th><th>mean joint influence</th><th>fraction &gt; 0</th></tr>
{% for name, d in s.section.sources.items() %}<tr><td class="l">{{ name }}</td><td>{{ d.samples }}</td><td>{{ fmt(d.mean) }}</td><td>{{ fmt(d.positive_fraction, 3) }}</td></tr>{% endfor %}
</table>{% endfor %}

<h2 id="coevolution">Data-model co-evolution</h2>
{% for s in coevolve %}<table><tr><th>stage</th><th class="l">pool per source</th><th>influence &gt; 0</th><th class="l">kept per source</th><th class="l">Eq. 5 weights</th><th>tokens</th><th>final loss</th></tr>
{% for row in s.section.stages %}<tr><td>{{ row.stage }}</td>
<td class="l">{% for k, v in row.pool.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
<td>{{ fmt(row.positive_fraction, 3) }}</td>
<td class="l">{% for k, v in row.kept.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
<td class="l">{% for k, v in row.weights.items() %}{{ k }} {{ fmt(v, 3) }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
<td>{{ fmt(row.tokens) }}</td><td>{{ fmt(row.loss) }}</td></tr>{% endfor %}</table>{% else %}<p>No co-evolution stage has finished.</p>{% endfor %}

<h2 id="exports">Exported files</h2>
{% if exports %}<table><tr><th class="l">stage</th><th class="l">file</th><th class="l">format</th><th class="l">quant</th><th>MiB</th><th>decode tok/s</th><th>prefill tok/s</th></tr>
{% for s in exports %}{% set e = s.section %}<tr><td class="l">{{ s.name }}</td><td class="l">{{ e.file }}</td><td class="l">{{ e.format }}</td><td class="l">{{ e.quant }}</td>
<td>{{ fmt(e.bytes / 1048576, 3) if e.bytes else "-" }}</td><td>{{ fmt(e.speed.decode_tok_s) if e.speed else "-" }}</td><td>{{ fmt(e.speed.prefill_tok_s) if e.speed else "-" }}</td></tr>{% endfor %}
</table>{% else %}<p>No export stage has finished.</p>{% endif %}

<h2 id="reproduce">Reproduce</h2>
<p>The whole run: <code>{{ r.command }}</code>. Stage by stage, from the run directory:</p>
<pre>{% for s in r.stages %}{{ s.command }}
{% endfor %}</pre>
<p>The recipe as run:</p>
<pre>{{ r.recipe_text }}</pre>
</body></html>
"""


def render(report: dict) -> str:
    """The HTML page of a report (see module docstring)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    template = env.from_string(TEMPLATE)
    return template.render(**view(report), fmt=_fmt, dur=_duration)
