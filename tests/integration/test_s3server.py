from __future__ import annotations

import os

import pytest

from neurolm import storage

pytestmark = pytest.mark.s3


def test_real_server_round_trip_and_credentials(s3_uri: str, monkeypatch) -> None:
    uri = storage.join(s3_uri, "hello.txt")
    storage.write_text(uri, "hi")
    assert storage.read_text(uri) == "hi"
    assert uri in storage.list_files(s3_uri)
    storage.check_reachable(uri)
    with pytest.raises(storage.StorageError, match="bucket does not exist"):
        storage.check_reachable("s3://no-such-bucket/x")
    # The server enforces credentials: a wrong secret is refused, and the error names the object.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(storage.StorageError, match="hello2.txt"):
        storage.write_text(storage.join(s3_uri, "hello2.txt"), "x")


def test_unreachable_endpoint_fails_fast(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(storage.StorageError, match="127.0.0.1:9"):
        storage.check_reachable("s3://neurolm/x")
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"


@pytest.mark.slow
def test_rm_on_the_local_server_gives_the_disk_space_back(tmp_path, monkeypatch) -> None:
    """SeaweedFS keeps a deleted object's bytes until a volume is vacuumed; ``neurolm runs rm --yes`` vacuums the
    local server it used, so the data directory shrinks at once."""
    from neurolm.cli import main as neurolm_main
    from neurolm.runtime.s3server import LocalS3Server, disk_report

    data = tmp_path / "s3"
    with LocalS3Server(str(data), bucket="neurolm") as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        blob = os.urandom(8 << 20)
        for i in range(6):
            storage.write_bytes(f"s3://neurolm/old-run/part-{i}.bin", blob)
        storage.write_bytes("s3://neurolm/kept/part.bin", b"kept")
        before = disk_report(data)["data_dir_gb"]
        assert before >= 0.048
        with monkeypatch.context() as shell:  # the CLI finds the running server through its state file, as a
            shell.delenv("AWS_ENDPOINT_URL")  # user's shell without the AWS_* variables would
            assert neurolm_main(["runs", "rm", "s3://neurolm/old-run", "--yes", "--s3-dir", str(data)]) == 0
        after = disk_report(data)["data_dir_gb"]
        assert after < before - 0.04, (before, after)
        assert storage.list_files("s3://neurolm/old-run") == []
        assert storage.read_bytes("s3://neurolm/kept/part.bin") == b"kept"


def test_the_local_server_refuses_to_start_on_a_nearly_full_disk(tmp_path) -> None:
    from neurolm.runtime.s3server import LocalS3Server, S3ServerError

    with pytest.raises(S3ServerError, match=r"only .* GB free .*neurolm runs rm") as err:
        LocalS3Server(str(tmp_path / "s3"), min_free_bytes=1 << 60).start()
    assert "\n" not in str(err.value) and str(tmp_path / "s3") in str(err.value)


@pytest.mark.parametrize("content", ['{"pid": 999999999, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}', "{not json"])
def test_status_of_a_gone_server_clears_its_state(tmp_path, capsys, content: str) -> None:
    """`neurolm s3 status` on a state file whose server is gone, or that cannot be read: not running, state removed."""
    from neurolm.runtime import s3server

    state = tmp_path / s3server._STATE_FILE
    state.write_text(content)
    assert s3server.main(["status", "--dir", str(tmp_path)]) == 1
    assert '"running": false' in capsys.readouterr().out
    assert not state.exists()
