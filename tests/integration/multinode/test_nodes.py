"""Several Ray nodes on loopback: where a stage's workers run, and what happens when a node is lost mid-stage."""

from __future__ import annotations

import time

import pytest

from neurolm import storage

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
    the run restarts on the surviving node from that checkpoint, each step sees the samples the uninterrupted
    run's step saw (``train.record_samples``), and it ends with the uninterrupted run's weights."""
    from neurolm.train.launch import fit_stage
    from neurolm.train.loop import sample_ledger

    tag = int(time.time())
    common = ("train.max_steps=8", "train.checkpoint_every=2", "train.log_every=1", "run.max_failures=3",
              "deepspeed.zero_stage=2", "train.record_samples=true")  # fmt: skip
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
    expected, seen = sample_ledger(whole.run_dir), sample_ledger(done.run_dir)
    assert sorted(seen) == sorted(expected) == list(range(1, 9))
    for step in expected:  # each step saw the uninterrupted run's samples (a multiset over the ranks)
        assert sorted(seen[step]) == sorted(expected[step]), f"step {step}"
    worst = mn.max_abs_diff(mn.weights(whole.export_dir), mn.weights(done.export_dir))
    assert worst < 1e-5, f"weights after the node loss differ from the uninterrupted run by {worst}"


@pytest.mark.timeout(3000)
def test_instruction_tuning_survives_a_lost_node_with_the_samples_and_weights_of_an_uninterrupted_run(
    multinode_cluster, mn, eeg_shards, text_shards, s3_uri, tmp_path
) -> None:  # fmt: skip
    """Stage 3 (two tasks mixed, one task per micro-batch, the LM text loss on): the node of rank 1 is killed after
    the checkpoint of step 2; the run resumes from it and every step draws the samples an uninterrupted run draws
    (``train.record_samples``), so its final weights are the uninterrupted run's."""
    import torch

    from neurolm.config import InstructJobConfig, load_config
    from neurolm.models.io import save_pretrained
    from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
    from neurolm.train.launch import fit_stage
    from neurolm.train.loop import sample_ledger

    torch.manual_seed(0)
    init = save_pretrained(NeuroLM(NeuroLMConfig.preset("tiny")), storage.join(s3_uri, "multinode-instruct-init"))
    # A second task (a user task file) over the same recordings: the mixture alternates between two streams.
    polarity = tmp_path / "polarity.yaml"
    polarity.write_text("name: SCP1Polarity\nquestion: Is the slow cortical potential negative or positive?\n"
                        "answers: [negative, positive]\ndataset: SelfRegulationSCP1\ncorpus: ts\n")
    tasks = (
        f"[{{name: SelfRegulationSCP1, train: {eeg_shards['scp1_train']}, val: {eeg_shards['scp1_val']}}}, "
        f"{{name: {polarity}, train: {eeg_shards['scp1_train']}}}]"
    )
    tag = int(time.time())

    def cfg(name: str) -> InstructJobConfig:
        return load_config(InstructJobConfig, "configs/instruct/debug.yaml", [
            f"init={init}", f"tasks={tasks}", "mixture.block_micro_batches=4", f"data.text={text_shards}",
            "data.text_seq_len=64", "text_loss_weight=1.0", f"run.name={name}", "run.wandb=false",
            f"run.storage_path={storage.join(s3_uri, 'multinode-runs')}", "train.max_steps=8",
            "train.checkpoint_every=2", "train.log_every=1", "train.eval_every=null", "train.record_samples=true",
            "deepspeed.zero_stage=2", "run.max_failures=3", "scaling.placement_strategy=SPREAD",
        ])  # fmt: skip

    whole_cfg = cfg(f"instruct-whole-{tag}")
    whole = fit_stage(whole_cfg)
    lost_cfg = cfg(f"instruct-lost-{tag}")
    thread, out = mn.in_thread(lambda: fit_stage(lost_cfg))
    mn.wait_for_checkpoint(lost_cfg, 4, thread)  # step 2's checkpoint is registered once step 4's files appear
    assert multinode_cluster.kill_node("127.0.0.3")
    try:
        thread.join(timeout=1800)
        assert not thread.is_alive(), "the run did not finish after the node loss"
        assert "error" not in out, out.get("error")
    finally:
        multinode_cluster.add_node("127.0.0.3")
    done = out["result"]
    final = mn.state(done.checkpoint)
    assert final.step == 8 and final.resumes >= 1
    expected, seen = sample_ledger(whole.run_dir), sample_ledger(done.run_dir)
    assert sorted(expected) == sorted(seen) == list(range(1, 9))
    for step in expected:  # each step drew the uninterrupted run's samples (as a multiset over the ranks)
        assert sorted(seen[step]) == sorted(expected[step]), f"step {step}"
    worst = mn.max_abs_diff(mn.weights(whole.export_dir), mn.weights(done.export_dir))
    assert worst < 1e-5, f"weights after the node loss differ from the uninterrupted run by {worst}"
