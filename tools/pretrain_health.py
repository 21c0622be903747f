"""Print the per-seed pretraining health table of an experiment from its MLflow parent run: the same rows
`jobs.crosslingual` writes into its results block (experiments/pretrain_health.py), for a run recorded before the
block had them or to read a run again:

    .venv/bin/python tools/pretrain_health.py --uri sqlite:///mlflow.db --parent PARENT_RUN_ID

Each arm's pretraining stage runs (``<label>/pretrain``, a two-stage arm's ``<label>/continued``) are found
under the arm runs by their parent tags; K and whether the run has a contrastive term come from the stage run's
logged parameters (``model.num_negatives``, ``model.ctc_weight``, ``model.num_codevector_groups``,
``train.collapse_perplexity``; the defaults where unset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def rows(uri: str, parent: str) -> list[tuple[str, int, object]]:
    from unispeech_core import UniSpeechConfig
    from unispeech_platform.experiments.pretrain_health import DEFAULT_COLLAPSE, DEFAULT_GROUPS, read_health
    from unispeech_platform.tracking import PARENT_TAG, RunStore

    store = RunStore(uri)
    experiment = store.run(parent).info.experiment_id
    defaults = UniSpeechConfig()
    out = []
    for arm in store.find_runs(experiment, {PARENT_TAG: parent}):
        seed = int(arm.data.tags.get("unispeech.seed", "0"))
        name = arm.data.tags.get("unispeech.arm", arm.info.run_name)
        for stage in store.find_runs(experiment, {PARENT_TAG: arm.info.run_id}):
            kind = stage.info.run_name.rsplit("/", 1)[-1]
            if kind not in ("pretrain", "continued") or stage.info.status != "FINISHED":
                continue
            params = stage.data.params
            k = int(params.get("model.num_negatives", defaults.num_negatives))
            contrastive = float(params.get("model.ctc_weight", defaults.ctc_weight)) < 1.0
            groups = int(params.get("model.num_codevector_groups", DEFAULT_GROUPS))
            collapse = float(params.get("train.collapse_perplexity", DEFAULT_COLLAPSE))
            label = name if kind == "pretrain" else f"{name} ({kind})"
            out.append((label, seed, read_health(store, stage.info.run_id, k, contrastive=contrastive, groups=groups,
                                                 collapse_perplexity=collapse)))
    return sorted(out, key=lambda r: (r[0], r[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uri", required=True, help="MLflow tracking URI of the experiment")
    parser.add_argument("--parent", required=True, help="the experiment's parent run id (its results block names it)")
    args = parser.parse_args(argv)
    from unispeech_platform.experiments.pretrain_health import health_table

    found = rows(args.uri, args.parent)
    if not found:
        print(f"no finished pretraining stage runs under parent run {args.parent}", file=sys.stderr)
        return 3
    print(health_table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
