"""Which checkpoint directories a resume accepts (no DeepSpeed needed: the files are what matter)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neurolm.train.checkpoint import CheckpointError, TrainState, validate_checkpoint_dir


def _checkpoint(root: Path, model_files: list[str], ranks: list[int], world: int = 2) -> Path:
    (root / "ds" / "ds").mkdir(parents=True)
    for name in model_files:
        (root / "ds" / "ds" / name).write_bytes(b"x")
    for r in ranks:
        (root / f"rank_{r}.json").write_text("{}")
    (root / "state.json").write_text(TrainState(step=7, world_size=world).to_json())
    return root


@pytest.mark.parametrize("files", [
    ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"],  # ZeRO 0-2
    ["zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"],  # ZeRO-3
])
def test_complete_checkpoints_of_every_zero_stage_are_accepted(tmp_path: Path, files: list[str]) -> None:
    assert validate_checkpoint_dir(str(_checkpoint(tmp_path, files, [0, 1]))).step == 7


def test_a_checkpoint_missing_a_rank_or_the_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"ranks \[1\]"):
        validate_checkpoint_dir(str(_checkpoint(tmp_path / "a", ["mp_rank_00_model_states.pt"], [0])))
    with pytest.raises(CheckpointError, match="model states are missing"):
        validate_checkpoint_dir(str(_checkpoint(tmp_path / "b", ["zero_pp_rank_0_mp_rank_00_optim_states.pt"], [0, 1])))
    (tmp_path / "c").mkdir()
    with pytest.raises(CheckpointError, match="no state.json"):
        validate_checkpoint_dir(str(tmp_path / "c"))


def test_a_node_local_copy_is_downloaded_once_and_never_rewritten_while_ranks_read_it(tmp_path: Path) -> None:
    """Four ranks of a node restore together, some late: one download, published whole (no rank ever sees a
    partial file), reused by every later caller; a new key (other content) is another download."""
    import threading
    import time

    from neurolm.train.checkpoint import node_local_copy, remove_local_copy

    payload = os.urandom(1 << 20)
    downloads: list[str] = []

    def download(directory: str) -> None:
        downloads.append(directory)
        with open(os.path.join(directory, "model_states.pt"), "wb") as f:
            for i in range(0, len(payload), 1 << 16):  # slowly, as from object storage
                f.write(payload[i : i + (1 << 16)])
                time.sleep(0.005)

    seen: dict[int, bytes] = {}

    def rank(r: int) -> None:
        time.sleep(0.05 * r)  # ranks start at different times: late ones arrive during or after the download
        directory = node_local_copy("s3://b/run/step_2" + "markers", download, root=str(tmp_path))
        seen[r] = Path(directory, "model_states.pt").read_bytes()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(downloads) == 1 and all(v == payload for v in seen.values()) and len(seen) == 4
    again = node_local_copy("s3://b/run/step_2" + "markers", download, root=str(tmp_path))
    assert len(downloads) == 1  # found, not downloaded again
    other = node_local_copy("s3://b/run/step_2" + "other markers", download, root=str(tmp_path))
    assert len(downloads) == 2 and other != again
    remove_local_copy(again)
    remove_local_copy(other)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_node_local_download_leaves_nothing_and_the_next_caller_downloads(tmp_path: Path) -> None:
    from neurolm.train.checkpoint import node_local_copy

    def broken(directory: str) -> None:
        Path(directory, "model_states.pt").write_bytes(b"half")
        raise OSError("object store unreachable")

    with pytest.raises(OSError, match="unreachable"):
        node_local_copy("key", broken, root=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    directory = node_local_copy("key", lambda d: Path(d, "model_states.pt").write_bytes(b"whole"), root=str(tmp_path))
    assert Path(directory, "model_states.pt").read_bytes() == b"whole"


def test_the_content_key_changes_with_the_rank_markers_only(tmp_path: Path) -> None:
    """A checkpoint rewritten with other files (other digests in its rank markers) gets another local copy."""
    import pyarrow.fs

    from neurolm.train.checkpoint import content_key

    fs = pyarrow.fs.LocalFileSystem()
    (tmp_path / "rank_0.json").write_text('{"sha256": {"ds/a.pt": "1"}}')
    (tmp_path / "state.json").write_text("{}")
    first = content_key(fs, str(tmp_path))
    (tmp_path / "state.json").write_text('{"step": 2}')
    assert content_key(fs, str(tmp_path)) == first
    (tmp_path / "rank_0.json").write_text('{"sha256": {"ds/a.pt": "2"}}')
    assert content_key(fs, str(tmp_path)) != first
