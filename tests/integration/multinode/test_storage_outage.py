"""The object store goes away mid-stage: an outage shorter than the retry budget is ridden out (checkpoint uploads
and data reads retry with backoff); a longer one fails the run naming the endpoint, and a rerun resumes."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.multinode, pytest.mark.slow, pytest.mark.ray, pytest.mark.s3]

OUTAGE_S = 20.0


def _outage(s3_process, seconds: float) -> None:
    """Stop the S3 server (by its pid) for ``seconds`` and start it again on the same port and data dir."""
    port = s3_process.s3_port
    s3_process.stop()
    time.sleep(seconds)
    s3_process.s3_port = port
    s3_process.start()


def test_outage_within_the_retry_budget_is_ridden_out(
    multinode_cluster, mn, s3_process, eeg_shards, text_shards, s3_uri
) -> None:  # fmt: skip
    from neurolm.storage import retry_budget_s
    from neurolm.train.launch import fit_stage

    assert retry_budget_s() > OUTAGE_S * 1.5  # the default budget (60 s) covers this outage
    cfg = mn.tokenizer_cfg(eeg_shards, text_shards, s3_uri, f"outage-{int(time.time())}", "train.max_steps=8",
                           "train.checkpoint_every=2", "train.log_every=1", "run.max_failures=0")  # fmt: skip
    thread, out = mn.in_thread(lambda: fit_stage(cfg))
    mn.wait_for_checkpoint(cfg, 2, thread)
    _outage(s3_process, OUTAGE_S)  # training continues; the next checkpoint upload meets the outage
    assert thread.is_alive(), "the run ended during the outage"  # so its S3 calls met the outage
    thread.join(timeout=1800)
    assert not thread.is_alive()
    # max_failures=0: the run finished without a restart, so every I/O during the outage was retried in place.
    assert "error" not in out, out.get("error")
    final = mn.state(out["result"].checkpoint)
    assert final.step == 8 and final.resumes == 0


BUDGET_S = 4.0  # this run's retry budget: 8 attempts, 6.4 s of waits per S3 call


# Two runs of the stage and a worker-group restart: 20+ min on a 2-core machine shared with a full-priority job
# (these tests run under `nice`), above the suite's 1200 s.
@pytest.mark.timeout(3000)
def test_outage_beyond_the_retry_budget_fails_naming_the_endpoint_and_a_rerun_resumes(
    multinode_cluster, mn, s3_process, eeg_shards, text_shards, s3_uri, monkeypatch
) -> None:  # fmt: skip
    """Storage goes away after the checkpoint of step 2 and stays away: every S3 call gives up after the budget,
    the restarted worker group cannot download its checkpoint either, and the run fails with one line naming
    the endpoint. Storage comes back; the same run name resumes from the latest checkpoint and finishes."""
    from neurolm import storage
    from neurolm.train.launch import fit_stage

    monkeypatch.setenv(storage.RETRY_BUDGET_ENV, f"{BUDGET_S:g}")  # the driver's budget is the run's
    endpoint = s3_process.endpoint
    cfg = mn.tokenizer_cfg(eeg_shards, text_shards, s3_uri, f"outage-long-{int(time.time())}", "train.max_steps=8",
                           "train.checkpoint_every=2", "train.log_every=1", "run.max_failures=1")  # fmt: skip
    thread, out = mn.in_thread(lambda: fit_stage(cfg))
    mn.wait_for_checkpoint(cfg, 4, thread)  # step 2's checkpoint is registered once step 4's files appear
    port = s3_process.s3_port
    s3_process.stop()
    down_at = time.monotonic()
    try:
        thread.join(timeout=1200)
        assert not thread.is_alive(), "the run did not fail while storage was down"
    finally:
        s3_process.s3_port = port
        s3_process.start()
    down_s = time.monotonic() - down_at
    err = out.get("error")
    assert isinstance(err, storage.StorageError), repr(err)
    message = str(err)
    assert len(message.splitlines()) == 1, message
    assert endpoint in message and f"{storage.RETRY_BUDGET_ENV}={BUDGET_S:g} s" in message, message
    assert down_s > BUDGET_S

    monkeypatch.delenv(storage.RETRY_BUDGET_ENV)
    done = fit_stage(cfg)  # the rerun: same storage path and name
    final = mn.state(done.checkpoint)
    assert final.step == 8 and final.resumes >= 1
    steps = [row["step"] for row in mn.history(cfg)]
    assert steps[-1] == 8 and sorted(set(steps)) == list(range(1, 9)), steps  # nothing lost, nothing twice
