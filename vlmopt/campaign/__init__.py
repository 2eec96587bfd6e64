"""Benchmark campaigns: every variant x GPU type x MIG slice measured in parallel as Kubernetes Jobs or SkyPilot
managed jobs, each running the same `vlmopt benchmark` command a user runs locally (docs/benchmark.md#campaigns).

build.py composes the campaign folder (targets.py, cost.py, kubernetes.py, skypilot.py, command.py); submit.py
applies it through kube.py / sky.py; collect.py brings the profiles home for `vlmopt plan --profiles`.
"""
