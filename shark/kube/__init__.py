"""Cluster mode of the CLI: kubectl-shark deployed into a Kubernetes cluster (docs/CLUSTER.md).

- `resources`: the kinds kubectl-shark creates or reads, their API paths and labels;
- `render`: manifests/ filled in with tap's options (namespace, image, storage limit,
  targets, --tls), in apply order; no I/O besides reading manifests/;
- `client`: the kubernetes client from a kubeconfig, server-side apply, and API errors turned
  into the CLI's errors (shark.errors) with hints;
- `rollout`: what the pods say (pure), and the wait for hub and workers to be ready;
- `view`: the rollout per node, live on a terminal (rich) or as lines in a log;
- `forward`: the port-forward to the hub (`kubectl port-forward`), injectable;
- `runner`: tap, open, clean, status and logs, which the click commands call.
"""
