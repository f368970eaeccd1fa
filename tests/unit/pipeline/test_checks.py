from __future__ import annotations

import pytest

from mlplatform.gpu.quota import GpuQuotaError
from mlplatform.pipeline.checks import check_cluster_storage


@pytest.mark.parametrize("root", ["", "/var/lib/mlp/artifacts", "file:///data/artifacts"])
def test_the_cluster_profile_refuses_an_artifact_root_the_pod_cannot_reach(root):
    with pytest.raises(GpuQuotaError, match=r"MLP_ARTIFACT_ROOT=.*object store"):
        check_cluster_storage(root)


@pytest.mark.parametrize("root", ["s3://ml-artifacts/mlplatform", "gs://bucket/prefix"])
def test_an_object_store_root_is_accepted(root):
    check_cluster_storage(root)
