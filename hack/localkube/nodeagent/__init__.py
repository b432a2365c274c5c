"""The local node agent: a tiny kubelet that runs the pods bound to its node as local processes.

    python -m localkube.nodeagent --kubeconfig FILE --state-dir DIR --name local-agent

It registers a Node (InternalIP 127.0.0.1, capacity from this machine or as told), keeps it Ready
(node status heartbeat and a Lease in kube-node-lease) and, for every pod whose spec.nodeName is
its node:

* gives the pod its own loopback address 127.B.x.y (status.podIP; B is the agent's own block),
* prepares its volumes under DIR/pods/<uid>/: persistentVolumeClaim -> the bound PV's hostPath
  directory, emptyDir -> a directory, configMap/secret/downwardAPI/projected (service-account
  tokens from the TokenRequest API) -> files,
* starts each container (image ignored: there is no container engine) with `podexec.py`: a
  private mount + UTS namespace in which volumes appear at their mountPaths, /etc/hosts is the
  pod's own (pod hostnames, Service names) and the hostname is the pod's; then command+args run
  with the pod's env (ConfigMaps, Secrets, downward API, $(VAR) expansion as kubelet does) and
  the "image" env (the project's venv first on PATH),
* runs startup/readiness/liveness probes, restarts per restartPolicy with back-off, and reports
  phase, conditions and container statuses (exit codes, termination messages),
* serves `kubectl logs` (a kubelet HTTPS endpoint: /containerLogs/...) on 127.0.0.1,
* on deletion sends SIGTERM to the container process groups, SIGKILL after the grace period,
  then deletes the pod with grace 0. Processes never outlive the agent: it kills them when it
  stops, each dies with it (PR_SET_PDEATHSIG), and leftovers of a killed agent are killed when
  it starts again (a pod running then continues per its restartPolicy).
"""

# One module per concern, as virtual-kubelet and kwok split a kubelet: agent (wiring, lifecycle),
# node (registration, heartbeat, Lease), podsync (the pod watch), worker (a thread per pod) and
# its parts volumes, env, process, probes, podstatus, dns; addresses, logserver (the kubelet
# endpoint), config, cli. (This docstring is the command's --help.)

from localkube.nodeagent.addresses import IpPool
from localkube.nodeagent.agent import NodeAgent
from localkube.nodeagent.cli import main
from localkube.nodeagent.common import TERMINAL, Retry
from localkube.nodeagent.config import AgentConfig
from localkube.nodeagent.containers import Container, Probe
from localkube.nodeagent.dns import dns_records, pod_hostname, render_hosts
from localkube.nodeagent.env import expand, parse_quantity
from localkube.nodeagent.logserver import KubeletHandler
from localkube.nodeagent.volumes import safe_rmtree
from localkube.nodeagent.worker import PodWorker

__all__ = ["TERMINAL", "AgentConfig", "Container", "IpPool", "KubeletHandler", "NodeAgent",
           "PodWorker", "Probe", "Retry", "dns_records", "expand", "main", "parse_quantity",
           "pod_hostname", "render_hosts", "safe_rmtree"]
