"""A real Kubernetes control plane on loopback, for tests and the demo.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries
(built by ``hack/build-control-plane.sh``); kwok simulates GPU nodes; a small provisioner binds
PersistentVolumeClaims to directories on this machine.

    from localkube import Cluster
    with Cluster.start() as cluster:
        cluster.kubectl("get", "nodes")
"""

from localkube.cluster import Cluster, ClusterError, NodeAgentSpec, NodeSpec

__all__ = ["Cluster", "ClusterError", "NodeAgentSpec", "NodeSpec"]
