"""Evaluation: per-method errors over a preprocessed test set, tables (Markdown/JSON), FLOPs, latency, figures.

- `evaluate_run(pipeline, model, model_nold, controllers, baselines, test)` — everything for one pipeline run
- (`admn_core.train.pipeline.evaluate_from_disk(run_dir)` re-evaluates a finished run: `admn evaluate --run DIR`)
- `evaluate_rule(model, data, rule)` with `fixed_rule(mask)` / `controller_rule(config, controller, budget)`
- `line_plot`, `allocation_examples` (matplotlib PNGs), `results_markdown`, `layerdrop_markdown`
"""

from admn_core.eval.data import TensorSet, tensor_set
from admn_core.eval.metrics import controller_rule, evaluate_rule, fixed_rule
from admn_core.eval.plots import allocation_examples, line_plot
from admn_core.eval.report import combined_markdown, layerdrop_markdown, results_markdown

__all__ = ["TensorSet", "allocation_examples", "combined_markdown", "controller_rule", "evaluate_rule",
           "fixed_rule", "layerdrop_markdown", "line_plot", "results_markdown", "tensor_set"]
