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
    thread.join(timeout=1800)
    assert not thread.is_alive()
    # max_failures=0: the run finished without a restart, so every I/O during the outage was retried in place.
    assert "error" not in out, out.get("error")
    final = mn.state(out["result"].checkpoint)
    assert final.step == 8 and final.resumes == 0
