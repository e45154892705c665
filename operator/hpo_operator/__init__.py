"""hpo-operator: Kubernetes-native hyperparameter optimization."""
__version__ = "0.1.0"
