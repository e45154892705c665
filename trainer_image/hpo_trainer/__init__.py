"""hpo_trainer: the trainer side of the hpo-operator contract (no Kubernetes dependency)."""
