"""Airflow's local settings for the mlplatform stack (on PYTHONPATH of every Airflow component): the GPU
quota's cluster policies. The logic lives in ``mlplatform.gpu.policy``."""

from mlplatform.gpu.policy import task_instance_mutation_hook, task_policy

__all__ = ["task_instance_mutation_hook", "task_policy"]
