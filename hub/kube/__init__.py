"""The hub in cluster (`python -m hub --kube`): what it learns from the Kubernetes API.

- `watch`: list-then-watch loops (one thread each, blocking kubernetes-client calls) that
  deliver ADDED/MODIFIED/DELETED changes to the hub's event loop; 410 Gone re-lists.
- `discovery`: the workers are the DaemonSet's pods; the pool follows them.
- `resolver`: IP -> pod/service/node with history, so old entries keep their names.
- `targeter`: the tap's pod regex and namespaces -> each worker's `PUT /targets`.
- `cluster`: the API client, the watches and the parts above wired into the hub's lifespan.
"""
