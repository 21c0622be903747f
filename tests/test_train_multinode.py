"""Multi-node: a 2-node Ray cluster on this machine (ray.cluster_utils.Cluster); the two train workers are
placed on different nodes (STRICT_SPREAD) and complete a pretraining run."""

from __future__ import annotations

import pytest
from train_helpers import ci_job, make_tiny_corpus

pytestmark = pytest.mark.slow


def test_workers_spread_over_two_nodes_complete_a_run(tmp_path):
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    from unispeech_platform.train import run_training

    corpus = make_tiny_corpus(tmp_path / "corpus")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    cluster.add_node(num_cpus=4)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        job = ci_job(corpus, tmp_path, "multinode", "train.placement_strategy=STRICT_SPREAD", "train.max_steps=4")
        result = run_training(job)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.metrics["step"] == 4
    tags = MlflowClient(result.tracking_uri).get_run(result.run_id).data.tags
    assert tags["num_nodes"] == "2", tags.get("worker_nodes")
