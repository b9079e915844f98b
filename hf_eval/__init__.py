"""hf-eval: score adapters on held-out data, and the baselines HeteroFusion is compared with."""
