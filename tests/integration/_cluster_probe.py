"""A job for tests/integration/test_local_cluster_security.py: one Ray task, so the cluster starts a worker."""

import ray


@ray.remote
def _answer() -> int:
    return 41


if __name__ == "__main__":
    ray.init()
    print("probe answer", ray.get(_answer.remote()) + 1)
