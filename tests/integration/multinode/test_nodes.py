"""Several Ray nodes on loopback: where a stage's workers run, and what happens when a node is lost mid-stage."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.multinode, pytest.mark.slow, pytest.mark.ray, pytest.mark.s3]

WORKERS = {"127.0.0.2", "127.0.0.3"}


def test_cluster_is_three_nodes_listening_on_loopback_only(multinode_cluster, mn) -> None:
    import ray

    nodes = {n["NodeName"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    assert set(nodes) == {"127.0.0.1", *WORKERS}
    assert nodes["127.0.0.1"].get("CPU", 0) == 0  # nothing trains on the head
    assert nodes["127.0.0.2"]["node_2"] == 1 and nodes["127.0.0.3"]["node_3"] == 1
    listening = mn.listening_addresses(multinode_cluster.pids())
    assert listening, "no listening sockets found for the cluster's processes"
    exposed = {addr: pids for addr, pids in listening.items() if not addr.strip("[]").split("]")[0].startswith(
        ("127.", "::ffff:127."))}  # fmt: skip
    assert not exposed, f"sockets not on loopback: {exposed}"


def test_stage_workers_spread_over_the_worker_nodes(
    multinode_cluster, mn, eeg_shards, text_shards, s3_uri
) -> None:
    from neurolm.train.launch import fit_stage

    cfg = mn.tokenizer_cfg(eeg_shards, text_shards, s3_uri, f"spread-{int(time.time())}", "train.max_steps=2",
                           "train.checkpoint_every=2")  # fmt: skip
    before = mn.train_worker_actors()
    result = fit_stage(cfg)
    assert result.metrics["step"] == 2
    placed = [node for actor, node in mn.train_worker_actors().items() if actor not in before]
    assert sorted(placed) == sorted(WORKERS)  # one rank per worker node, none on the head


def test_lost_node_resumes_from_last_checkpoint_with_the_weights_of_an_uninterrupted_run(
    multinode_cluster, mn, eeg_shards, text_shards, s3_uri
) -> None:  # fmt: skip
    """SIGKILL every process of one worker node (its raylet and its Train worker) after the checkpoint of step 2:
    the run restarts on the surviving node from that checkpoint and ends with an uninterrupted run's weights."""
    from neurolm.train.launch import fit_stage

    tag = int(time.time())
    common = ("train.max_steps=8", "train.checkpoint_every=2", "train.log_every=1", "run.max_failures=3",
              "deepspeed.zero_stage=2")  # fmt: skip
    whole = fit_stage(mn.tokenizer_cfg(eeg_shards, text_shards, s3_uri, f"node-whole-{tag}", *common))

    cfg = mn.tokenizer_cfg(eeg_shards, text_shards, s3_uri, f"node-lost-{tag}", *common)
    thread, out = mn.in_thread(lambda: fit_stage(cfg))
    mn.wait_for_checkpoint(cfg, 4, thread)  # step 2's checkpoint is registered once step 4's files appear
    killed = multinode_cluster.kill_node("127.0.0.3")
    assert killed
    try:
        thread.join(timeout=1800)
        assert not thread.is_alive(), "the run did not finish after the node loss"
        assert "error" not in out, out.get("error")
    finally:
        multinode_cluster.add_node("127.0.0.3")  # the next tests get their cluster back
    done = out["result"]
    assert done.metrics["step"] == 8
    final = mn.state(done.checkpoint)
    assert final.step == 8 and final.resumes >= 1
    steps = [row["step"] for row in mn.history(cfg)]
    assert steps[-1] == 8 and sorted(set(steps)) == list(
        range(1, 9)
    )  # no step lost, history trimmed on resume
    worst = mn.max_abs_diff(mn.weights(whole.export_dir), mn.weights(done.export_dir))
    assert worst < 1e-5, f"weights after the node loss differ from the uninterrupted run by {worst}"
