"""Who a kernel event belongs to: cgroup ids, containers, pods and namespaces."""
