"""The agent's Kubernetes side: the API client's watches, the node's pods, NodeReport
publishing, API error counting."""
